#!/bin/sh
# Debian and Ubuntu ship `python3 -m venv` in a separate package; install it when missing.
set -eu
if ! command -v apt-get >/dev/null 2>&1; then
    echo "python3 -m venv failed and apt-get is not available: install venv support" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "python3 -m venv failed; not root and no sudo: install python3-venv" >&2
        exit 1
    fi
    SUDO="sudo"
fi
ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
$SUDO apt-get update -q
$SUDO apt-get install -y -q "python${ver}-venv" || $SUDO apt-get install -y -q python3-venv
