#!/bin/sh
# Installs what the fault suite's attack scenarios need: slowhttptest (Debian package).
set -eu
command -v slowhttptest >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "faults/setup.sh: slowhttptest missing and apt-get unavailable" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q slowhttptest
