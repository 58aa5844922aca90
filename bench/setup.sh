#!/usr/bin/env bash
# Installs what bench/http.py needs beyond the Rust toolchain: wrk (the HTTP
# load generator), Go and fasthttp (the Go peers, built in GOPATH mode from
# Debian's packaged source). Idempotent: when everything is there it installs
# nothing and does not touch the package lists.
#
#   bash bench/setup.sh [TOOL...]
#
# TOOLs (default: all) are among wrk, go, fasthttp, strace and taskset; only
# those are checked and installed (bench/python_binding.py needs no Go).
# Exits 0 when everything asked for is installed, 1 when something could not be.
set -u

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(wrk go fasthttp strace taskset)
for tool in "${tools[@]}"; do
    case "$tool" in
        wrk | go | fasthttp | strace | taskset) ;;
        *)
            echo "setup.sh: unknown tool $tool (known: wrk go fasthttp strace taskset)" >&2
            exit 2
            ;;
    esac
done
wanted() {
    local t
    for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}
FASTHTTP=/usr/share/gocode/src/github.com/valyala/fasthttp/server.go

need=()
wanted wrk && ! command -v wrk >/dev/null 2>&1 && need+=(wrk)
wanted go && ! command -v go >/dev/null 2>&1 && need+=(golang-go)
wanted fasthttp && [ ! -f "$FASTHTTP" ] && need+=(golang-github-valyala-fasthttp-dev)
wanted strace && ! command -v strace >/dev/null 2>&1 && need+=(strace)
wanted taskset && ! command -v taskset >/dev/null 2>&1 && need+=(util-linux)

if [ ${#need[@]} -eq 0 ]; then
    echo "setup.sh: nothing to do: ${tools[*]} installed"
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
for tool in "${tools[@]}"; do
    [ "$tool" = fasthttp ] && continue
    if command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: $tool: $(command -v "$tool")"
    else
        echo "setup.sh: $tool still missing" >&2
        status=1
    fi
done
if wanted fasthttp; then
    if [ -f "$FASTHTTP" ]; then
        echo "setup.sh: fasthttp: $(dirname "$FASTHTTP")"
    else
        echo "setup.sh: fasthttp source still missing" >&2
        status=1
    fi
fi
exit $status
