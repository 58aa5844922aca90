"""http_hello: the HTTP example, with the routes of the C and Rust ones.

    python examples/python/http_hello.py --port 8080

GET / answers "Hello, World!", POST /echo echoes the body, GET /big?bytes=N sends N bytes,
GET /json answers JSON, GET /slow?ms=N answers after N ms from another thread (deferred),
GET /fail raises on purpose (logged; shoal answers 500 and closes only that connection).
"""

from __future__ import annotations

import threading
import urllib.parse

import _cli

import shoal

ROUTES = {"/": "GET, HEAD", "/echo": "POST", "/big": "GET, HEAD", "/json": "GET, HEAD",
          "/slow": "GET, HEAD", "/fail": "GET"}


# The largest /big: the default max_write_buffer (16 MiB) less room for the head.
MAX_BIG = (16 << 20) - (64 << 10)


def query_int(req: shoal.Request, name: str, default: int) -> int:
    values = urllib.parse.parse_qs(req.query or "").get(name)
    try:
        return int(values[0]) if values else default
    except ValueError:
        return -1


def handle(req: shoal.Request) -> shoal.Response | str | bytes | dict[str, object] | None:
    allowed = ROUTES.get(req.path)
    if allowed is None:
        return shoal.Response("not found\n", status=404)
    if req.method not in allowed.split(", "):
        return shoal.Response("method not allowed\n", status=405, headers={"Allow": allowed})
    if req.path == "/":
        return "Hello, World!"
    if req.path == "/echo":
        return req.body
    if req.path == "/big":
        n = query_int(req, "bytes", 1 << 20)
        if not 0 <= n <= MAX_BIG:
            # One response is queued whole: past max_write_buffer (16 MiB by default) the
            # connection would be aborted.
            return shoal.Response(f"bytes must be 0..={MAX_BIG}\n", status=413 if n > 0 else 400)
        return b"b" * n
    if req.path == "/fail":
        raise RuntimeError("GET /fail fails on purpose")
    if req.path == "/json":
        return {"method": req.method, "path": req.path, "peer": req.peer}
    ms = query_int(req, "ms", 100)
    if not 0 <= ms <= 60_000:
        return shoal.Response("ms must be 0..=60000\n", status=400)
    responder = req.defer()
    threading.Timer(ms / 1000, lambda: responder.send(f"waited {ms} ms\n")).start()
    return None


def main() -> None:
    p = _cli.parser("HTTP hello server", 8080)
    p.add_argument("--max-body-size", type=int, default=None)
    args = p.parse_args()
    opts = _cli.options(args)
    if args.max_body_size is not None:
        opts["max_body_size"] = args.max_body_size
    _cli.serve(shoal.HttpServer(handle, **opts), "http_hello")


if __name__ == "__main__":
    main()
