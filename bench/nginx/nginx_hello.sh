#!/bin/sh
# nginx_hello: runs nginx as the `nginx` peer of shoal's HTTP benchmark, from
# bench/nginx/nginx.conf, in the foreground, with one worker process.
#
#   nginx_hello.sh --host 127.0.0.1 --port PORT --prefix DIR [--threads N]
#
# Renders nginx.conf into DIR (which must exist; nginx keeps its pid file and
# temp directories there) and execs nginx, so the caller's pid is nginx's
# master. PORT must be a real port: nginx does not tell which one it got for 0,
# so the caller picks a free one and waits until it accepts (bench/harness.py:
# ServerSpec.fixed_port). --threads sets worker_processes (default 1). SIGTERM
# makes nginx exit 0 (fast shutdown).
set -eu

host=127.0.0.1
port=
prefix=
workers=1
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "nginx_hello.sh: $1 needs a value" >&2; exit 2; }
    case "$1" in
        --host) host=$2 ;;
        --port) port=$2 ;;
        --prefix) prefix=$2 ;;
        --threads) workers=$2 ;;
        *) echo "nginx_hello.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
case "$port" in
    '' | 0 | *[!0-9]*) echo "nginx_hello.sh: --port must be a port number, not '$port'" >&2; exit 2 ;;
esac
[ -n "$prefix" ] && [ -d "$prefix" ] || { echo "nginx_hello.sh: --prefix must be an existing directory" >&2; exit 2; }

nginx=$(command -v nginx || true)
[ -n "$nginx" ] || { [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx; } || true
[ -n "$nginx" ] || { echo "nginx_hello.sh: nginx is not installed" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
sed -e "s|@HOST@|$host|g" -e "s|@PORT@|$port|g" -e "s|@PREFIX@|$prefix|g" -e "s|@WORKERS@|$workers|g" \
    "$here/nginx.conf" > "$prefix/nginx.conf"
# Workers run as nobody when the master is root: they must be able to use the prefix.
chmod 755 "$prefix"
exec "$nginx" -p "$prefix" -c "$prefix/nginx.conf" -e stderr
