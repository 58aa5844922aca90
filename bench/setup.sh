#!/usr/bin/env bash
# Installs what bench/http.py needs beyond the Rust toolchain: wrk (the HTTP
# load generator), Go and fasthttp (the Go peers, built in GOPATH mode from
# Debian's packaged source). Idempotent: when everything is there it installs
# nothing and does not touch the package lists.
#
#   bash bench/setup.sh
#
# Exits 0 when everything is installed, 1 when something could not be.
set -u

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/github.com/valyala/fasthttp/server.go ] || need+=(golang-github-valyala-fasthttp-dev)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)

if [ ${#need[@]} -eq 0 ]; then
    echo "setup.sh: nothing to do: wrk, go, fasthttp, strace and taskset are installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "setup.sh: missing ${need[*]}, and not root and no sudo: cannot install" >&2
        exit 1
    fi
fi

echo "setup.sh: missing: ${need[*]}"
echo "setup.sh: running apt-get update"
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q; then
    echo "setup.sh: apt-get update failed" >&2
    exit 1
fi
echo "setup.sh: running apt-get install -y ${need[*]}"
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"; then
    echo "setup.sh: apt-get install failed" >&2
    exit 1
fi

status=0
for tool in wrk go strace taskset; do
    if command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: $tool: $(command -v "$tool")"
    else
        echo "setup.sh: $tool still missing" >&2
        status=1
    fi
done
if [ -f /usr/share/gocode/src/github.com/valyala/fasthttp/server.go ]; then
    echo "setup.sh: fasthttp: /usr/share/gocode/src/github.com/valyala/fasthttp"
else
    echo "setup.sh: fasthttp source still missing" >&2
    status=1
fi
exit $status
