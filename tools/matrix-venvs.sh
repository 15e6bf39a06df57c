#!/bin/sh
# Controller venvs for the supported matrix (docs/support.md): one per ansible-core, outside
# the clone, because CI starts from a fresh clone and each venv takes a minute to build.
#
#   tools/matrix-venvs.sh [2.19 2.20 2.21]   build what is missing, print "core venv-dir" lines
#
# ansible-core 2.20 and 2.21 need Python 3.12 or newer on the controller; this machine's pyenv
# has 3.12 and 3.13 (ROCKET_PYENV, default ~/.pyenv/versions). Each venv holds ansible-core at
# the pinned version and requests (plugins that fetch run on the target, but the controller's
# own tests import the collection); the tests themselves stay on the project venv and take the
# ansible binaries from ROCKET_ANSIBLE_BIN (tests/support/ansible_run.py).
#
# A venv is not relocatable (its scripts name their interpreter by absolute path), so it is
# built in place; the stamp file, written last, holds the pins it was built from, and a venv
# without a matching stamp (a half-built one, or older pins) is removed and built again.
set -eu
ROOT=${ROCKET_MATRIX_CACHE:-/var/cache/appc-rocket-test}/venv
PYENV=${ROCKET_PYENV:-$HOME/.pyenv/versions}

# core -> Python and pins. Each controller's Python is the one its ansible-core is tested on
# upstream and the newest here: 2.19 the project's own (3.11), 2.20 on 3.12, 2.21 on 3.13.
spec() {
    case "$1" in
        2.19) echo "3.11.7 ansible-core==2.19.14 requests==2.34.2" ;;
        2.20) echo "3.12.1 ansible-core==2.20.10 requests==2.34.2" ;;
        2.21) echo "3.13.0 ansible-core==2.21.5 requests==2.34.2" ;;
        *) echo "matrix-venvs: unknown ansible-core $1 (2.19, 2.20 or 2.21)" >&2; exit 2 ;;
    esac
}

[ $# -gt 0 ] || set -- 2.19 2.20 2.21
mkdir -p "$ROOT"
for core in "$@"; do
    s=$(spec "$core")
    py=${s%% *}
    pins=${s#* }
    dir=$ROOT/core-$core
    if [ "$(cat "$dir/.matrix-stamp" 2>/dev/null)" != "$s" ]; then
        interp=$PYENV/$py/bin/python
        [ -x "$interp" ] || { echo "matrix-venvs: no Python $py at $interp (ROCKET_PYENV)" >&2; exit 1; }
        rm -rf "$dir"
        "$interp" -m venv "$dir"
        # shellcheck disable=SC2086  # pins is a word list on purpose
        "$dir/bin/pip" install -q $pins
        echo "$s" > "$dir/.matrix-stamp"
    fi
    echo "$core $dir"
done
