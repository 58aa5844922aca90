"""uvloop_http: the uvloop + httptools peer of bench/python_binding.py's HTTP runs.

    python bench/python/uvloop_http.py --host 127.0.0.1 --port 0 --threads 1

An asyncio Protocol on uvloop's event loop that parses requests with httptools (llhttp) and
answers every complete request with a canned `200 Hello, World!` (text/plain); the
responses to the requests of one read go out in one write. No request object, no handler
call: the floor of a Python HTTP server on uvloop. One thread (--threads must be 1). Prints
exactly one `listening on HOST:PORT` line, exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import httptools
import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()
            return
        if self.complete:
            self.transport.write(RESPONSE * self.complete if self.complete > 1 else RESPONSE)
            self.complete = 0


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, host, port, backlog=1024)
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
