#!/bin/sh
# Install the Debian packages the tests and the demo use, when missing (root only).
# Each one is there for a reason:
#   tar gzip bzip2 xz-utils  reference tools the import benchmark compares against
#   libcap2-bin              setcap/getcap: test images with file capabilities
#   busybox-static           a static userland for test images (pods run it)
#   util-linux iproute2      unshare/nsenter for the namespace floor, ip for leak checks
#   gnupg                    verifies image signatures (cas_image, cas_trust) and makes test keys
#   openssl                  a throwaway CA for the HTTPS fetch tests
#   gcc libc6-dev            a static escape probe and a syscall probe built by the isolation
#                            tests; libc6-dev brings linux-libc-dev, the kernel headers
#                            tools/gen_syscalls.py reads
#   nftables                 nft: NAT and port forwards of pods on private networks
#   openssh-server openssh-client  sshd per fleet host and the ssh client Ansible uses (tests/integration/test_fleet.py)
#   docker-registry skopeo apache2-utils  a real registry for the registry tests, skopeo to push
#                            test images into it, htpasswd -B for its bcrypt basic-auth file
set -eu
PKGS="tar gzip bzip2 xz-utils libcap2-bin busybox-static util-linux iproute2 gnupg openssl gcc libc6-dev nftables openssh-server openssh-client docker-registry skopeo apache2-utils"
# buildah: the documented way to build an image (docs/registries.md), tested once by
# tests/integration/test_registry_push.py (build, import, push, run)
PKGS="$PKGS buildah"
# containernetworking-plugins iptables: the CNI plugins (in /usr/lib/cni) that CNI networks
# run, and the iptables their NAT and port forwards use (tests/integration/test_net_cni.py)
PKGS="$PKGS containernetworking-plugins iptables"
# mmdebstrap systemd-container: tools/test-hosts.sh builds the Debian root file systems of the
# booted test hosts with mmdebstrap; tests/support/booted.py boots them with systemd-nspawn
PKGS="$PKGS mmdebstrap systemd-container"
# strace: tests/integration/test_gc_many.py counts the stage1 gc processes a pod_set run execs
PKGS="$PKGS strace"
set --  # the missing packages
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || set -- "$@" "$p"
done
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $* (run as root to install them)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The _apt sandbox user cannot resolve names on these machines: run as root; retry, then
# say what is missing.
for attempt in 1 2 3 4 5; do
    apt-get -o APT::Sandbox::User=root update -qq || true
    if apt-get -o APT::Sandbox::User=root install -y -qq --no-install-recommends "$@"; then
        exit 0
    fi
    sleep $((attempt * 5))
done
echo "could not install Debian packages: $*" >&2
exit 1
