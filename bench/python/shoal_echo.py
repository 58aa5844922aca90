"""shoal_echo: the echo server of bench/python_binding.py, on shoal's Python binding.

    python bench/python/shoal_echo.py --host 127.0.0.1 --port 0 --threads 1 [--workers N | --inline] [--gil-batch N]

`on_data(conn, data)` writes the bytes back. Follows the example-server convention of
bench/harness.py: prints exactly one `listening on HOST:PORT` line, exits 0 on SIGTERM.
Options not given keep shoal's defaults (workers=4, gil_batch=16).
"""

from __future__ import annotations

import argparse
import signal

import shoal


def on_data(conn: shoal.Connection, data: bytes) -> None:
    conn.write(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int)
    p.add_argument("--inline", action="store_true")
    p.add_argument("--gil-batch", type=int)
    args = p.parse_args()
    opts: dict[str, object] = {"host": args.host, "port": args.port, "threads": args.threads}
    if args.workers is not None:
        opts["workers"] = args.workers
    if args.inline:
        opts["inline"] = True
    if args.gil_batch is not None:
        opts["gil_batch"] = args.gil_batch
    srv = shoal.Server(on_data=on_data, **opts)
    signal.signal(signal.SIGTERM, lambda signum, frame: srv.stop())
    host, port = srv.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        srv.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
