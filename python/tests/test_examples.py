"""The Python examples run as their users run them: a process, a port, SIGINT or SIGTERM."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import connect, recv_exact

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


@contextmanager
def example(name: str, *args: str, stop: int = signal.SIGINT) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / name), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert m, line + proc.stderr.read() if proc.stderr else line
    try:
        yield int(m.group(1))
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err, err


@pytest.mark.parametrize("mode", [[], ["--inline"], ["--workers", "2"]])
def test_echo(mode: list[str]) -> None:
    with example("echo.py", *mode) as port, connect(port) as s:
        msg = bytes(range(256)) * 1024
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg


def test_http_hello_routes_and_sigterm() -> None:
    with example("http_hello.py", "--max-body-size", "1000", stop=signal.SIGTERM) as port:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def req(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read()

        assert req("GET", "/") == (200, b"Hello, World!")
        assert req("POST", "/echo", b"abc") == (200, b"abc")
        assert req("GET", "/big?bytes=100000") == (200, b"b" * 100000)
        assert req("GET", "/slow?ms=20") == (200, b"waited 20 ms\n")
        assert req("GET", "/big?bytes=x")[0] == 400
        assert req("GET", "/big?bytes=17000000")[0] == 413
        assert req("DELETE", "/")[0] == 405
        assert req("GET", "/nowhere")[0] == 404
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert req("POST", "/echo", b"x" * 2000)[0] == 413
        c.close()


def test_chat_between_two_clients() -> None:
    with example("chat.py") as port, connect(port) as a:
        fa = a.makefile("rb")
        assert fa.readline().startswith(b"* welcome")
        b = connect(port)
        fb = b.makefile("rb")
        assert fb.readline().startswith(b"* welcome")
        assert fa.readline().endswith(b"joined\n")
        a.sendall(b"/nick alice\n")
        line = fb.readline()
        assert line.startswith(b"* guest") and line.endswith(b" is now alice\n"), line
        b.sendall(b"hel")
        b.sendall(b"lo\n")
        line = fa.readline()
        assert line.endswith(b": hello\n"), line
        a.sendall(b"/who\n")
        assert fa.readline().startswith(b"* here: alice, guest")
        b.sendall(b"x" * 5000)
        assert fb.readline() == b"* line too long\n"
        assert fa.readline().startswith(b"* guest2 left")
        # The same line finished, in one write: refused too, not broadcast.
        with connect(port) as c:
            fc = c.makefile("rb")
            assert fc.readline().startswith(b"* welcome")
            assert fa.readline().endswith(b"joined\n")
            c.sendall(b"z" * 5000 + b"\n")
            assert fc.readline() == b"* line too long\n"
            assert fc.readline() == b""
            assert fa.readline().startswith(b"* guest3 left")
            fc.close()
        fa.close()
        fb.close()
        b.close()
