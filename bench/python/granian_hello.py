"""granian_hello: the granian peer of bench/python_binding.py's HTTP runs.

    python bench/python/granian_hello.py --host 127.0.0.1 --port 0 --threads 1

An RSGI app (`app` below) answering every request with `200 Hello, World!` (text/plain),
served by granian with one worker process, --threads runtime threads, HTTP/1 only, the
uvloop event loop, access log off. granian's main process supervises the worker (the
benchmark counts the CPU of both; the main one sleeps). granian cannot report a port it
picked itself, so --port 0 takes a free port first. Prints exactly one
`listening on HOST:PORT` line once the port accepts connections, and exits 0 on SIGTERM
(granian stops its worker gracefully).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


async def app(scope: Any, proto: Any) -> None:
    proto.response_str(200, [("content-type", "text/plain")], "Hello, World!")


def announce_when_listening(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except OSError:
            time.sleep(0.02)
            continue
        print(f"listening on {host}:{port}", flush=True)
        return
    print(f"granian_hello: nothing listens on {host}:{port} after {timeout:g}s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="granian runtime threads of the worker")
    ap.add_argument("--loop", default="uvloop", help="granian's event loop: uvloop (default), asyncio, rloop")
    ap.add_argument("--task-impl", default="asyncio", help="asyncio (default) or rust (Python < 3.12)")
    ap.add_argument("--http", default="1", help="1 (default), auto")
    args = ap.parse_args()

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, TaskImpl
    from granian.log import LogLevels

    port = args.port
    if port == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((args.host, 0))
            port = s.getsockname()[1]
    threading.Thread(target=announce_when_listening, args=(args.host, port, 15.0), daemon=True).start()
    Granian(
        "granian_hello:app",
        address=args.host,
        port=port,
        interface=Interfaces.RSGI,
        workers=1,
        runtime_threads=args.threads,
        loop=Loops(args.loop),
        task_impl=TaskImpl(args.task_impl),
        http=HTTPModes(args.http),
        websockets=False,
        log_level=LogLevels.warning,
        log_access=False,
        working_dir=Path(__file__).resolve().parent,
    ).serve()


if __name__ == "__main__":
    main()
