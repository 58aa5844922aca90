"""The HTTP server through http.client and raw sockets: every kind of return value,
requests in full, deferred and streamed answers from other threads, errors in handlers,
pipelining, limits and stats."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import shoal
from conftest import connect, eventually, recv_until_closed



def user_agent(h: shoal.Headers) -> str | None:
    # mypy --strict holds this to the stub: `get` without a default is `str | None`.
    return h.get("user-agent")


def app(req: shoal.Request) -> Any:
    path = req.path
    if path == "/":
        return "Hello, World!"
    if path == "/bytes":
        return b"\x00\x01raw"
    if path == "/json":
        return {"method": req.method, "query": req.query, "version": req.version}
    if path == "/tuple2":
        return (201, "created")
    if path == "/tuple3":
        return (202, {"X-Kind": "three", "Content-Type": "text/x-test"}, b"accepted")
    if path == "/response":
        return shoal.Response("teapot", status=418, headers=[("X-A", "1"), ("X-A", "2")],
                              content_type="text/tea")
    if path == "/echo":
        return shoal.Response(req.body, headers={"X-Len": len(req.body)})
    if path == "/headers":
        h = req.headers
        return {"ua": user_agent(h), "x": h.getall("X-Multi"), "has": "x-multi" in h,
                "n": len(h), "missing": h.get("nope", "dflt"),
                "mapping": isinstance(h, Mapping), "as_dict": dict(h)}
    if path == "/gen":
        def gen() -> Iterator[bytes | str]:
            for i in range(5):
                yield f"piece{i};"
            yield b"end"
        return gen()
    if path == "/gen-raise":
        def gen_raise() -> Iterator[bytes]:
            yield b"part"
            raise ValueError("body generator fails on purpose")
        return gen_raise()
    if path == "/defer":
        r = req.defer()

        def later() -> None:
            time.sleep(0.02)
            r.send({"deferred": True})
        threading.Thread(target=later).start()
        return None
    if path == "/defer-stream":
        r = req.defer()

        def work() -> None:
            with r.stream(200, content_type="text/plain") as s:
                for i in range(3):
                    time.sleep(0.01)
                    s.write(f"chunk{i};")
        threading.Thread(target=work).start()
        return None
    if path == "/raise":
        raise ValueError("handler fails on purpose")
    if path == "/none":
        return None
    if path == "/badtype":
        return 3.5
    if path == "/badheader":
        return (200, {"X-Evil": "a\r\nSet-Cookie: x"}, b"no")
    if path == "/body-first":
        return ("hello", 200)  # Flask's order, not shoal's
    if path == "/huge-status":
        return (70000, "x")
    if path == "/peer":
        return {"peer": req.peer}
    return (404, "not found")


def get(port: int, path: str, method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


@pytest.fixture(params=[{"workers": 4}, {"inline": True}], ids=["workers", "inline"])
def srv(request: pytest.FixtureRequest, serve: Any) -> shoal.Server:
    return serve(shoal.HttpServer, app, **request.param)  # type: ignore[no-any-return]


def test_return_values(srv: shoal.Server) -> None:
    p = srv.port
    assert get(p, "/")[0] == 200
    status, h, body = get(p, "/")
    assert (status, h["content-type"], body) == (200, "text/plain; charset=utf-8",
                                                  b"Hello, World!")
    status, h, body = get(p, "/bytes")
    assert (h["content-type"], body) == ("application/octet-stream", b"\x00\x01raw")
    status, h, body = get(p, "/json?x=1")
    assert h["content-type"] == "application/json"
    assert json.loads(body) == {"method": "GET", "query": "x=1", "version": "HTTP/1.1"}
    assert get(p, "/tuple2")[::2] == (201, b"created")
    status, h, body = get(p, "/tuple3")
    assert (status, h["x-kind"], h["content-type"], body) == (202, "three", "text/x-test",
                                                              b"accepted")
    status, h, body = get(p, "/response")
    assert (status, h["content-type"], body) == (418, "text/tea", b"teapot")
    status, h, body = get(p, "/gen")
    assert (status, h["transfer-encoding"], body) == (200, "chunked",
                                                      b"piece0;piece1;piece2;piece3;piece4;end")
    status, _, body = get(p, "/missing")
    assert (status, body) == (404, b"not found")


def test_request_body_and_headers(srv: shoal.Server) -> None:
    body = bytes(range(256)) * 4096
    status, h, got = get(srv.port, "/echo", "POST", body)
    assert status == 200 and got == body and h["x-len"] == str(len(body))
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.putrequest("GET", "/headers")
    c.putheader("User-Agent", "shoal-test")
    c.putheader("X-Multi", "one")
    c.putheader("X-Multi", "two")
    c.endheaders()
    r = c.getresponse()
    got_json = json.loads(r.read())
    c.close()
    assert got_json["ua"] == "shoal-test"
    assert got_json["x"] == ["one", "two"]
    assert got_json["has"] is True
    assert got_json["missing"] == "dflt"
    assert got_json["mapping"] is True
    assert got_json["as_dict"]["User-Agent"] == "shoal-test"
    assert json.loads(get(srv.port, "/peer")[2])["peer"][0] == "127.0.0.1"


def test_deferred_answers_from_other_threads(srv: shoal.Server) -> None:
    assert get(srv.port, "/defer")[::2] == (200, b'{"deferred": true}')
    status, h, body = get(srv.port, "/defer-stream")
    assert (status, h["transfer-encoding"], body) == (200, "chunked", b"chunk0;chunk1;chunk2;")
    # Keep-alive: requests behind a deferred one wait for it, in order.
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    for path in ["/defer", "/", "/defer"]:
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200
        r.read()
    c.close()


@pytest.mark.parametrize("path,why", [("/raise", "handler fails on purpose"),
                                      ("/none", "returned None without deferring"),
                                      ("/badtype", "cannot send a float"),
                                      ("/badheader", "control byte"),
                                      ("/body-first", "its first item is a str, not an int"),
                                      ("/huge-status", "three-digit code, got 70000")])
def test_handler_errors_answer_500_log_and_close(
    srv: shoal.Server, caplog: pytest.LogCaptureFixture, path: str, why: str
) -> None:
    caplog.set_level(logging.ERROR, logger="shoal")
    with connect(srv.port) as s:
        # A second request pipelined behind the failing one is not served.
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
                  .encode())
        raw = recv_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    assert raw.count(b"HTTP/1.1") == 1
    messages = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert any(why in m for m in messages), messages
    assert get(srv.port, "/")[0] == 200
    assert eventually(lambda: srv.stats()["http"]["handler_failures"] == 1)


def test_a_status_argument_out_of_range_is_a_value_error() -> None:
    for status in [99, 1000, 70000, 2**40, -1]:
        with pytest.raises(ValueError, match="three-digit code"):
            shoal.Response("x", status=status)


def test_a_body_generator_that_raises_cuts_the_response(
    srv: shoal.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The head and part of the body are out when the generator raises: the connection is
    # cut, so the truncated body never looks complete (no last chunk).
    caplog.set_level(logging.CRITICAL, logger="shoal")
    with connect(srv.port) as s:
        s.sendall(b"GET /gen-raise HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = recv_until_closed(s)
    assert b"0\r\n\r\n" not in raw, raw
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        c.request("GET", "/gen-raise")
        r = c.getresponse()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            r.read()
    except (http.client.RemoteDisconnected, ConnectionError):
        pass  # cut before the head arrived: incomplete too
    finally:
        c.close()
    assert eventually(lambda: srv.stats()["http"]["handler_failures"] == 2)


def test_pipelined_requests_come_back_in_order(srv: shoal.Server) -> None:
    with connect(srv.port) as s:
        reqs = b"".join(f"GET /tuple3?{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
                        for i in range(50))
        s.sendall(reqs + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = recv_until_closed(s)
    assert raw.count(b"HTTP/1.1 202 Accepted") == 50
    assert raw.endswith(b"Hello, World!")


def test_limits_and_malformed_requests(serve: Any) -> None:
    srv = serve(shoal.HttpServer, app, max_body_size=1000, max_header_bytes=2048)
    status, _, _ = get(srv.port, "/echo", "POST", b"x" * 2000)
    assert status == 413
    status, _, _ = get(srv.port, "/", headers={"X-Big": "y" * 4000})
    assert status == 431
    for bad in [b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n", b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"]:
        with connect(srv.port) as s:
            s.sendall(bad)
            assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")
    st = srv.stats()["http"]
    assert sum(st["parse_errors"].values()) >= 4
    assert st["responses"]["4xx"] >= 5


def test_defer_outside_the_handler_and_twice(serve: Any) -> None:
    kept: list[shoal.Request] = []
    outcomes: list[str] = []

    def handler(req: shoal.Request) -> Any:
        kept.append(req)
        r = req.defer()
        try:
            req.defer()
        except shoal.InvalidResponse:
            outcomes.append("second defer refused")
        try:
            r.send(status=200, headers={"Bad\nName": "x"})
        except shoal.InvalidResponse:
            outcomes.append("bad header refused")
        assert not r.done
        try:
            r.send(iter([b"streamed"]), headers={"Bad\nName": "x"})
        except shoal.InvalidResponse:
            outcomes.append("bad header refused for a stream")
        assert not r.done
        r.send("ok")
        assert r.done
        try:
            r.send("again")
        except shoal.InvalidResponse:
            outcomes.append("second send refused")
        return None

    srv = serve(shoal.HttpServer, handler)
    assert get(srv.port, "/")[::2] == (200, b"ok")
    assert outcomes == ["second defer refused", "bad header refused",
                        "bad header refused for a stream", "second send refused"]
    with pytest.raises(RuntimeError, match="during the handler call"):
        kept[0].defer()
    # The request's data stays readable after the handler returned.
    assert kept[0].path == "/" and kept[0].headers["host"] == "127.0.0.1:%d" % srv.port


@pytest.mark.parametrize("mode", [{"workers": 2}, {"inline": True}])
def test_a_response_without_a_body_does_not_run_its_iterable(serve: Any,
                                                             mode: dict[str, Any]) -> None:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        for _ in range(100_000):
            pulled.append(1)
            yield b"x"

    def handler(req: shoal.Request) -> Any:
        if req.path == "/nocontent":
            return (204, body())
        if req.path == "/defer-head":
            req.defer().send(body())
            return None
        return body()

    srv = serve(shoal.HttpServer, handler, **mode)
    assert get(srv.port, "/", method="HEAD")[0] == 200
    assert get(srv.port, "/nocontent")[0] == 204
    assert get(srv.port, "/defer-head", method="HEAD")[0] == 200
    assert pulled == []
    status, _, data = get(srv.port, "/")
    assert (status, len(data), len(pulled)) == (200, 100_000, 100_000)


def test_path_and_query_of_every_target_form(serve: Any) -> None:
    srv = serve(shoal.HttpServer, lambda req: f"{req.target}|{req.path}|{req.query}")
    for target, want in [("/a/b?x=1", "/a/b?x=1|/a/b|x=1"),
                         ("/plain", "/plain|/plain|None"),
                         ("http://example.test/abs?q=1", "http://example.test/abs?q=1|/abs|q=1"),
                         ("http://example.test", "http://example.test|/|None"),
                         ("http://example.test?q=2", "http://example.test?q=2|/|q=2"),
                         ("http://example.test?x=/y", "http://example.test?x=/y|/|x=/y")]:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: example.test\r\n"
                      "Connection: close\r\n\r\n".encode())
            raw = recv_until_closed(s)
        assert raw.startswith(b"HTTP/1.1 200 "), raw
        assert raw.split(b"\r\n\r\n", 1)[1].decode() == want


def test_a_dropped_responder_answers_500_and_the_engine_log_reaches_logging(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal")

    def handler(req: shoal.Request) -> None:
        req.defer()  # dropped at once

    srv = serve(shoal.HttpServer, handler)
    assert get(srv.port, "/")[0] == 500
    # The engine's own warning (a Rust log record) arrives through the `shoal` logger.
    assert eventually(lambda: any("dropped unanswered" in r.getMessage()
                                  for r in caplog.records))
    rec = next(r for r in caplog.records if "dropped unanswered" in r.getMessage())
    assert rec.levelno == logging.WARNING and rec.name == "shoal"


def test_answering_after_the_connection_closed_raises_connection_closed(serve: Any) -> None:
    # (A client's FIN alone does not end a deferred request: HTTP clients may half-close
    # after sending. The server stopping does.)
    held: list[shoal.Responder] = []
    srv = serve(shoal.HttpServer, lambda req: held.append(req.defer()))
    with connect(srv.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert eventually(lambda: len(held) == 1)
        srv.stop()
        assert srv.wait(timeout=10)
        assert recv_until_closed(s) == b""
    with pytest.raises(shoal.ConnectionClosed):
        held[0].send("too late")
    assert held[0].done


def test_stream_writes_from_two_threads_with_python_in_bytes_do_not_deadlock() -> None:
    # Stream.write turning an object into bytes runs its __bytes__, which may let another
    # thread run; that thread's write must not block on the stream while holding the
    # interpreter. A deadlock would hold the interpreter, so it runs in a child process.
    code = textwrap.dedent("""
        import socket, threading, time
        import shoal

        class Slow:
            def __bytes__(self) -> bytes:
                for _ in range(20):
                    time.sleep(0)
                return b"x"

        def handler(req):
            stream = req.defer().stream(200)

            def writer():
                for _ in range(300):
                    stream.write(Slow())

            def run():
                threads = [threading.Thread(target=writer) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                stream.finish()

            threading.Thread(target=run).start()

        srv = shoal.HttpServer(handler, threads=1)
        srv.start()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
        buf = b""
        while not buf.endswith(b"\\r\\n0\\r\\n\\r\\n"):
            chunk = s.recv(65536)
            assert chunk, buf[-200:]
            buf += chunk
        body = buf.split(b"\\r\\n\\r\\n", 1)[1]
        print("xs", body.count(b"1\\r\\nx\\r\\n"))
        s.close()
        srv.stop()
        srv.wait()
    """)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("Stream.write from two threads deadlocked")
    assert out.returncode == 0, out.stderr
    assert "xs 600" in out.stdout, out.stdout + out.stderr


def _read_chunked_body(s: socket.socket) -> int:
    """Reads one chunked response to its end; returns the body's length."""
    buf = bytearray()
    while not buf.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {len(buf)} bytes"
        buf += chunk
    at = buf.index(b"\r\n\r\n")
    assert buf.startswith(b"HTTP/1.1 200 "), bytes(buf[:at])
    at += 4
    total = 0
    while True:
        end = buf.index(b"\r\n", at)
        n = int(buf[at:end], 16)
        if n == 0:
            return total
        total += n
        at = end + 2 + n + 2


@pytest.mark.parametrize("how", ["stream", "iterable"])
def test_a_body_larger_than_max_write_buffer_from_a_thread_reaches_a_slow_reader(
    serve: Any, how: str
) -> None:
    # 40 MiB from the application's own thread, against a 16 MiB max_write_buffer, to a
    # client that reads nothing for a second: each piece waits for room (the interpreter
    # released), so the body arrives whole instead of the connection being reset.
    piece = b"p" * (1 << 20)
    done: list[str] = []

    def produce(responder: shoal.Responder) -> None:
        try:
            if how == "stream":
                with responder.stream(200) as stream:
                    for _ in range(40):
                        stream.write(piece)
            else:
                responder.send(piece for _ in range(40))
            done.append("ok")
        except Exception as e:  # noqa: BLE001 - reported to the test
            done.append(repr(e))

    def handler(req: shoal.Request) -> None:
        threading.Thread(target=produce, args=(req.defer(),)).start()

    srv = serve(shoal.HttpServer, handler, threads=1)
    with connect(srv.port, timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.0)
        assert _read_chunked_body(s) == 40 << 20
    assert eventually(lambda: done == ["ok"]), done


def test_a_deferred_answer_past_response_timeout_gets_503_and_the_late_answer_raises(
    serve: Any,
) -> None:
    kept: list[shoal.Responder] = []

    def handler(req: shoal.Request) -> Any:
        if req.path == "/hold":
            kept.append(req.defer())
            return None
        return "served"

    with pytest.raises(shoal.ConfigError, match="response_timeout"):
        shoal.HttpServer(handler, response_timeout=0)
    srv = serve(shoal.HttpServer, handler, response_timeout=0.2)
    t0 = time.monotonic()
    with connect(srv.port) as s:
        s.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = recv_until_closed(s)
    waited = time.monotonic() - t0
    assert raw.startswith(b"HTTP/1.1 503 "), raw
    assert b"Connection: close\r\n" in raw and b"served" not in raw, raw
    assert 0.19 <= waited < 5, waited
    with pytest.raises(shoal.ConnectionClosed):
        kept[0].send("late")
    kept.clear()
    st = srv.stats()["http"]
    assert (st["response_timeouts"], st["handler_failures"]) == (1, 0), st
    assert get(srv.port, "/")[2] == b"served"
