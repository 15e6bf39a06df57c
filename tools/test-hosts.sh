#!/bin/sh
# Build the root file systems of the booted Debian test hosts (tests/support/booted.py), when
# missing, into /var/cache/appc-rocket-test/<release>-<key>/rootfs. The cache lives outside the
# clone because CI starts from a fresh clone; the key is a hash of this script's package list and
# options, so a changed list builds a new tree and never reuses a stale one. Each tree is built
# in a temporary directory beside its final place and renamed when complete: an interrupted
# build leaves no half-built cache (its leftover is removed by the next run).
#
#   tools/test-hosts.sh [RELEASE...]     default: 12;  `all` = 11 12 13
#   tools/test-hosts.sh --path RELEASE   print the cached tree's path (exit 1 when not built)
#
# The hosts cannot reach a package registry, so everything the runtime role would install is
# baked in here (the role runs with rocket_runtime_install_packages: false there).
set -eu

CACHE="${APPC_ROCKET_TEST_CACHE:-/var/cache/appc-rocket-test}"
MIRROR="${APPC_ROCKET_TEST_MIRROR:-http://deb.debian.org/debian}"
# systemd systemd-sysv dbus  a real PID 1 with a system bus (systemctl, journald, reboot)
# openssh-server             Ansible and the tests reach the host over SSH
# python3 python3-requests nftables iproute2 gnupg   what roles/runtime installs (its list)
# python3-apt                what Ansible's apt module needs: it would install it from the registry
# kmod                       modprobe, which the role runs when overlay is not listed
# procps                     ps, which the tests read process state with
# ca-certificates            python3-requests' trust store, as on a real host
PACKAGES="systemd systemd-sysv dbus openssh-server python3 python3-requests nftables iproute2 gnupg python3-apt kmod procps ca-certificates"
VARIANT=minbase
# bump when the customize hooks below change what a tree holds
FORMAT=1

codename() {
    case "$1" in
        11) echo bullseye ;;
        12) echo bookworm ;;
        13) echo trixie ;;
        *) echo "unknown Debian release '$1' (supported: 11 12 13)" >&2; exit 2 ;;
    esac
}

key() {
    printf '%s\n' "$1" "$(codename "$1")" "$VARIANT" "$FORMAT" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12
}

path() {
    echo "$CACHE/$1-$(key "$1")/rootfs"
}

build() {
    rel="$1"
    final="$CACHE/$rel-$(key "$rel")"
    if [ -f "$final/rootfs/etc/os-release" ]; then
        echo "Debian $rel: cached in $final"
        return 0
    fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap missing (make deps installs it)" >&2; exit 1; }
    mkdir -p "$CACHE"
    # a leftover of an interrupted build of any key for this release
    rm -rf "$CACHE/.building-$rel-"*
    work="$(mktemp -d "$CACHE/.building-$rel-XXXXXX")"
    trap 'rm -rf "$work"' EXIT INT TERM
    start=$(date +%s)
    echo "Debian $rel: building into $final (mmdebstrap, about 1-3 minutes)"
    pkgs=$(echo "$PACKAGES" | tr ' ' ',')
    # ssh is enabled; units that wait for or reach the network outside are masked (the host
    # has no route out); host keys and machine-id are made per host at first boot.
    mmdebstrap --quiet --variant="$VARIANT" --include="$pkgs" \
        --customize-hook='chroot "$1" systemctl enable ssh.service' \
        --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true' \
        --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
        --customize-hook='echo "appc-rocket-test" > "$1"/etc/hostname' \
        --customize-hook=': > "$1"/etc/machine-id' \
        "$(codename "$rel")" "$work/rootfs" "$MIRROR"
    echo "$rel $(key "$rel") $PACKAGES" > "$work/KEY"
    mv "$work" "$final"
    trap - EXIT INT TERM
    echo "Debian $rel: built in $(( $(date +%s) - start )) s, $(du -sm "$final" | cut -f1) MB"
}

if [ "${1:-}" = "--path" ]; then
    p="$(path "${2:-12}")"
    echo "$p"
    [ -f "$p/etc/os-release" ]
    exit $?
fi
[ $# -eq 0 ] && set -- 12
[ "$*" = all ] && set -- 11 12 13
if [ "$(id -u)" != 0 ]; then
    echo "not root: booted test hosts of Debian $* not built (run tools/test-hosts.sh as root)" >&2
    exit 0
fi
for rel in "$@"; do
    build "$rel"
done
