#!/usr/bin/env bash
# Installs what shoal's benchmarks (bench/http.py, bench/echo.py,
# bench/callgrind.py, bench/suite.py) need beyond the Rust toolchain, from
# Debian's packages: wrk (the HTTP load generator), Go and fasthttp (the Go
# peers, built in GOPATH mode from Debian's packaged source), nginx (the nginx
# peer, run from bench/nginx/), libuv (the libuv echo peer, bench/c/libuv_echo.c),
# valgrind (instruction counts), strace and taskset. Idempotent: when
# everything is there it installs nothing and does not touch the package lists.
#
#   bash bench/setup.sh [TOOL...]
#
# TOOLs (default: all) are among wrk, go, fasthttp, nginx, libuv, valgrind,
# strace and taskset; only those are checked and installed
# (bench/python_binding.py needs no Go). Installing nginx does not start it:
# the package's service start is refused while it installs.
# Exits 0 when everything asked for is installed, 1 when something could not be.
set -u

KNOWN="wrk go fasthttp nginx libuv valgrind strace taskset"
tools=("$@")
# shellcheck disable=SC2206
[ ${#tools[@]} -eq 0 ] && tools=($KNOWN)
for tool in "${tools[@]}"; do
    case " $KNOWN " in
        *" $tool "*) ;;
        *)
            echo "setup.sh: unknown tool $tool (known: $KNOWN)" >&2
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
UV_H=/usr/include/uv.h
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

need=()
wanted wrk && ! command -v wrk >/dev/null 2>&1 && need+=(wrk)
wanted go && ! command -v go >/dev/null 2>&1 && need+=(golang-go)
wanted fasthttp && [ ! -f "$FASTHTTP" ] && need+=(golang-github-valyala-fasthttp-dev)
wanted nginx && ! have_nginx && need+=(nginx)
wanted libuv && [ ! -f "$UV_H" ] && need+=(libuv1-dev)
wanted valgrind && ! command -v valgrind >/dev/null 2>&1 && need+=(valgrind)
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
# A package's service must not start while it installs (nginx would listen on port 80
# of every address): policy-rc.d refuses every start until the install is over.
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$POLICY" ]; then
    if printf '#!/bin/sh\n# made by bench/setup.sh for the length of one apt-get install\nexit 101\n' |
        "${sudo[@]}" tee "$POLICY" >/dev/null && "${sudo[@]}" chmod 755 "$POLICY"; then
        made_policy=1
    fi
fi
echo "setup.sh: running apt-get install -y ${need[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
rc=$?
[ $made_policy -eq 1 ] && "${sudo[@]}" rm -f "$POLICY"
if [ $rc -ne 0 ]; then
    echo "setup.sh: apt-get install failed" >&2
    exit 1
fi

status=0
for tool in "${tools[@]}"; do
    case "$tool" in fasthttp | nginx | libuv) continue ;; esac
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
if wanted nginx; then
    if have_nginx; then
        echo "setup.sh: nginx: $(command -v nginx || echo /usr/sbin/nginx)"
    else
        echo "setup.sh: nginx still missing" >&2
        status=1
    fi
fi
if wanted libuv; then
    if [ -f "$UV_H" ]; then
        echo "setup.sh: libuv: $UV_H"
    else
        echo "setup.sh: libuv1-dev still missing" >&2
        status=1
    fi
fi
exit $status
