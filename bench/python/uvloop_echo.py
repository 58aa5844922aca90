"""uvloop_echo: the uvloop peer of bench/python_binding.py's echo runs.

    python bench/python/uvloop_echo.py --host 127.0.0.1 --port 0 --threads 1

An asyncio Protocol on uvloop's event loop: `data_received` writes the bytes back. One
thread (--threads must be 1). Prints exactly one `listening on HOST:PORT` line, exits 0 on
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=1024)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening on {h}:{p}", flush=True)
    await done.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.threads != 1:
        ap.error("uvloop runs one thread: --threads must be 1")
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
