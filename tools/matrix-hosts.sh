#!/bin/sh
# The managed-host Python cells of the matrix (docs/support.md): for each Python given
# (default 3.9 3.11 3.13, the Pythons of Debian 11, 12 and 13), `ansible-test units` and the
# `compile` and `import` sanity tests, on a copy of the working tree laid out as a collection.
#
#   tools/matrix-hosts.sh [3.9 3.11 3.13]     from the checkout, with the project venv made
#
# On Pythons older than ansible-test's controller ones (3.9 for ansible-core 2.19), units runs
# only tests/unit/plugins/module_utils: test_on_host_pythons.py there gathers the target-side
# unit tests for it. The interpreters come from pyenv (ROCKET_PYENV, default ~/.pyenv/versions)
# through a directory of pythonX.Y links put first on PATH, which is what ansible-test looks
# for; pyenv's shims would need PYENV_VERSION to list them all.
set -eu
cd "$(dirname "$0")/.."
here=$(pwd)
PYENV=${ROCKET_PYENV:-$HOME/.pyenv/versions}
[ $# -gt 0 ] || set -- 3.9 3.11 3.13

top=$(mktemp -d /tmp/appc-rocket-matrix-hosts.XXXXXX)
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/bin" "$top/ansible_collections/appc/rocket"
for py in "$@"; do
    found=
    for d in "$PYENV/$py".*; do  # the newest patch release (a glob sorts 3.9.18 after 3.9.2: compare)
        [ -x "$d/bin/python$py" ] || continue
        if [ -z "$found" ] || [ "$(printf '%s\n%s\n' "$found" "$d" | sort -V | tail -1)" = "$d" ]; then found=$d; fi
    done
    [ -n "$found" ] || { echo "matrix-hosts: no Python $py under $PYENV (ROCKET_PYENV)" >&2; exit 1; }
    ln -s "$found/bin/python$py" "$top/bin/python$py"
done

# ansible-test's get-pip download host is unreachable here: the bootstrap (as make units does).
mkdir -p "$HOME/.ansible/test/cache"
for v in 24_2 25_0 25_1; do cp tools/get_pip_bootstrap.py "$HOME/.ansible/test/cache/get_pip_$v.py"; done
git ls-files -z --cached --others --exclude-standard | \
  tar -c --null --ignore-failed-read -T - | tar -x -C "$top/ansible_collections/appc/rocket"
cd "$top/ansible_collections/appc/rocket"
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm matrix
PATH=$top/bin:$here/.venv/bin:$PATH
export PATH
for py in "$@"; do
    echo "== host Python $py: ansible-test units, sanity compile and import"
    ansible-test units --python "$py" --venv
    ansible-test sanity --test compile --test import --python "$py" --venv
done
