"""Shared helpers: servers that are always stopped, and blocking socket helpers with
deadlines so a broken server fails a test instead of hanging it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shoal


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_closed(s: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


@pytest.fixture
def serve() -> Iterator[Callable[..., shoal.Server]]:
    """Starts servers (Server or HttpServer) and stops and joins them after the test."""
    started: list[shoal.Server] = []

    def start(cls: type[shoal.Server] = shoal.Server, *args: Any, **kw: Any) -> shoal.Server:
        kw.setdefault("threads", 2)
        srv = cls(*args, **kw)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
    for srv in started:
        assert srv.wait(timeout=15), "server did not stop"
