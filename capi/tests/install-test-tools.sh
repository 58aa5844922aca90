#!/bin/sh
# The C tests need valgrind (the leak check) and pkg-config (the install test); each skips
# without its tool, so `make test` installs what is missing (Debian and Ubuntu: apt-get).
set -eu
missing=""
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
[ -z "$missing" ] && exit 0
# Where they cannot be installed, the tests that need them say so and skip: a warning here,
# not a failure of the whole run.
skip() {
    echo "WARNING: missing:$missing ($1); the C tests that need them will skip" >&2
    exit 0
}
command -v apt-get >/dev/null 2>&1 || skip "no apt-get"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || skip "not root and no sudo"
    SUDO="sudo -n"
fi
echo "installing:$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q || skip "apt-get update failed"
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing ||
    skip "apt-get install failed"
