"""Stream servers through real sockets: echo at scale, partial consumption, every callback,
timers, writes from other threads, stale connections, errors in callbacks, inline mode and
workers that block."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from typing import Any

import pytest

import shoal
from conftest import connect, eventually, recv_exact, recv_until_closed


def echo(conn: shoal.Connection, data: bytes) -> None:
    conn.write(data)


@pytest.mark.parametrize("mode", [{"workers": 4}, {"inline": True}])
def test_echo_200_connections_with_messages_up_to_1_mib(serve: Any, mode: dict[str, Any]) -> None:
    srv = serve(on_data=echo, **mode)
    sizes = [1, 100, 4096, 65536, 1 << 20]
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with connect(srv.port, timeout=30) as s:
                for size in sizes[k % len(sizes) :] + sizes[: k % len(sizes)]:
                    if size == 1 << 20 and k % 10:
                        continue  # every tenth client sends the 1 MiB message
                    msg = bytes((k + i) % 251 for i in range(256)) * (size // 256) or b"x"
                    s.sendall(msg)
                    assert recv_exact(s, len(msg)) == msg
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert eventually(lambda: srv.stats()["accepted"] == 200)


def test_on_data_returns_the_bytes_it_consumed(serve: Any) -> None:
    # Line protocol: consume whole lines only; the rest comes again with more input.
    def on_data(conn: shoal.Connection, data: bytes) -> int:
        end = data.rfind(b"\n") + 1
        if end:
            conn.write(b"".join(b"<" + line + b">" for line in data[:end].split(b"\n")[:-1]))
        return end

    srv = serve(on_data=on_data)
    with connect(srv.port) as s:
        for piece in [b"he", b"llo\nwor", b"ld\n"]:
            s.sendall(piece)
            time.sleep(0.02)
        assert recv_exact(s, len(b"<hello><world>")) == b"<hello><world>"


def test_every_callback_with_state_on_the_connection(serve: Any) -> None:
    events: list[tuple[str, Any]] = []
    closed = threading.Event()

    def on_open(conn: shoal.Connection) -> None:
        conn.count = 0
        events.append(("open", conn.peer))

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        conn.count += len(data)
        if data == b"timer":
            conn.set_timer(0.05, tag=7)
        elif data == b"cancel":
            conn.set_timer(0.05, tag=8)
            conn.cancel_timer(8)

    def on_timer(conn: shoal.Connection, tag: int) -> None:
        events.append(("timer", tag))
        conn.write(b"tick %d" % tag)

    def on_eof(conn: shoal.Connection) -> bool:
        events.append(("eof", conn.count))
        conn.write(b"bye")
        return False

    def on_close(conn: shoal.Connection, reason: str) -> None:
        events.append(("close", reason))
        closed.set()

    srv = serve(on_data=on_data, on_open=on_open, on_timer=on_timer, on_eof=on_eof,
                on_close=on_close)
    with connect(srv.port) as s:
        s.sendall(b"cancel")
        time.sleep(0.02)
        s.sendall(b"timer")
        assert recv_exact(s, 6) == b"tick 7"
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b"bye"
    assert closed.wait(5)
    kinds = [e[0] for e in events]
    assert kinds == ["open", "timer", "eof", "close"], events
    assert events[0][1][0] == "127.0.0.1"
    assert events[2] == ("eof", 11)
    assert events[3] == ("close", "peer_closed")


def test_on_eof_true_keeps_the_connection_open_for_writing(serve: Any) -> None:
    def on_eof(conn: shoal.Connection) -> bool:
        def later() -> None:
            conn.write(b"late")
            conn.close()

        threading.Timer(0.05, later).start()
        return True

    srv = serve(on_data=echo, on_eof=on_eof)
    with connect(srv.port) as s:
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b"late"


def test_an_on_eof_result_whose_truth_raises_fails_the_connection(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("truth of this value is ambiguous")

    caplog.set_level(logging.ERROR, logger="shoal")
    srv = serve(on_data=echo, on_eof=lambda conn: NoTruth())
    with connect(srv.port) as s:
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b""
    assert eventually(lambda: srv.stats()["handler_failures"] == 1)
    messages = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert any("ambiguous" in m for m in messages), messages


def test_writes_from_user_threads_and_stale_connections(serve: Any) -> None:
    conns: list[shoal.Connection] = []
    closed = threading.Event()
    srv = serve(on_data=echo, on_open=conns.append, on_close=lambda c, r: closed.set())
    s = connect(srv.port)
    assert eventually(lambda: len(conns) == 1)
    conn = conns[0]
    assert conn.open
    # From a plain Python thread, many writes, in order.
    def writer() -> None:
        for i in range(1000):
            conn.write(b"%04d" % i)

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    got = recv_exact(s, 4000)
    assert got == b"".join(b"%04d" % i for i in range(1000))
    conn.write(bytearray(b"ba"))
    conn.write(memoryview(b"mv"))
    assert recv_exact(s, 4) == b"bamv"
    with pytest.raises(TypeError):
        conn.write("text")  # type: ignore[arg-type]
    s.close()
    assert closed.wait(5)
    assert not conn.open
    with pytest.raises(shoal.ConnectionClosed):
        conn.write(b"late")
    with pytest.raises(shoal.ConnectionClosed):
        conn.close()
    with pytest.raises(shoal.ConnectionClosed):
        conn.set_timer(1.0)
    # A new connection may reuse the slot: the old object still cannot reach it.
    s2 = connect(srv.port)
    assert eventually(lambda: len(conns) == 2)
    with pytest.raises(shoal.ConnectionClosed):
        conn.write(b"stale")
    s2.sendall(b"own")
    assert recv_exact(s2, 3) == b"own"
    s2.close()


@pytest.mark.parametrize("where", ["on_open", "on_data", "on_timer", "on_eof", "on_close"])
@pytest.mark.parametrize("mode", [{"workers": 2}, {"inline": True}])
def test_an_exception_in_any_callback_is_logged_and_closes_only_its_connection(
    serve: Any, caplog: pytest.LogCaptureFixture, where: str, mode: dict[str, Any]
) -> None:
    closes: list[str] = []
    opened = itertools.count()
    victim_opened = threading.Event()

    def maybe_raise(name: str, conn: shoal.Connection) -> None:
        if name == where and conn.victim:
            raise RuntimeError(f"failing in {name}")

    def on_open(conn: shoal.Connection) -> None:
        conn.victim = next(opened) == 0  # the first connection is the victim
        if conn.victim:
            victim_opened.set()
        maybe_raise("on_open", conn)

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        if data == b"timer":
            conn.set_timer(0.01)
            return
        maybe_raise("on_data", conn)
        conn.write(data)

    def on_timer(conn: shoal.Connection, tag: int) -> None:
        maybe_raise("on_timer", conn)

    def on_eof(conn: shoal.Connection) -> bool:
        maybe_raise("on_eof", conn)
        return False

    def on_close(conn: shoal.Connection, reason: str) -> None:
        closes.append(reason)
        maybe_raise("on_close", conn)

    caplog.set_level(logging.ERROR, logger="shoal")
    srv = serve(on_data=on_data, on_open=on_open, on_timer=on_timer, on_eof=on_eof,
                on_close=on_close, **mode)
    victim = connect(srv.port)
    # (Its on_open must have run, not only its accept: the next connection may land on the
    # other reactor, whose on_open could otherwise run first and make it the victim.)
    assert victim_opened.wait(5)
    other = connect(srv.port)
    try:
        victim.sendall(b"timer")
        time.sleep(0.05)
        victim.sendall(b"data")
        victim.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # already closed by the failure
    recv_until_closed(victim)
    victim.close()
    # The other connection is unaffected.
    other.sendall(b"still here")
    assert recv_exact(other, 10) == b"still here"
    other.close()
    assert eventually(lambda: len(closes) == 2)
    if where != "on_close":
        assert closes[0] == "handler_failed", closes
        assert eventually(lambda: srv.stats()["handler_failures"] == 1)
    messages = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert f"failing in {where}" in messages, messages


def test_a_bad_return_from_on_data_fails_the_connection(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="shoal")
    srv = serve(on_data=lambda conn, data: len(data) + 1)
    with connect(srv.port) as s:
        s.sendall(b"abc")
        assert recv_until_closed(s) == b""
    assert eventually(lambda: srv.stats()["closed"]["handler_failed"] == 1)
    assert any("on_data must return" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_blocking_callbacks_run_on_all_workers_at_once(serve: Any) -> None:
    # Four callbacks must be inside on_data together for the barrier to open.
    barrier = threading.Barrier(4, timeout=10)

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        barrier.wait()
        conn.write(b"ok")

    srv = serve(on_data=on_data, workers=4)
    socks = [connect(srv.port) for _ in range(4)]
    for s in socks:
        s.sendall(b"go")
    for s in socks:
        assert recv_exact(s, 2) == b"ok"
        s.close()


def test_python_threads_keep_running_while_callbacks_are_busy(serve: Any) -> None:
    # A pure-Python thread must keep making progress while clients keep the workers busy.
    # (Each round trip then waits about two GIL switch intervals, 5 ms each, for the
    # spinning thread to yield: CPython's convoy effect, hence few round trips.)
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    srv = serve(on_data=echo, workers=2)
    t = threading.Thread(target=spin)
    t.start()
    try:
        with connect(srv.port) as s:
            before = counter[0]
            for _ in range(200):
                s.sendall(b"ping")
                assert recv_exact(s, 4) == b"ping"
            after = counter[0]
    finally:
        stop.set()
        t.join()
    assert after - before > 1000, (before, after)


def test_outbound_connect(serve: Any) -> None:
    got = threading.Event()
    received: list[bytes] = []

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        received.append(data)
        got.set()

    opened: list[shoal.Connection] = []
    srv = serve(on_data=on_data, on_open=opened.append)
    listener = socket.create_server(("127.0.0.1", 0))
    cid = srv.connect("127.0.0.1", listener.getsockname()[1])
    peer, _ = listener.accept()
    assert eventually(lambda: len(opened) == 1)
    assert opened[0].id == cid
    peer.sendall(b"from the peer")
    assert got.wait(5)
    assert received == [b"from the peer"]
    peer.close()
    listener.close()


def test_connect_refuses_a_name_that_does_not_resolve_clearly(serve: Any) -> None:
    srv = serve(on_data=echo)
    with pytest.raises(ValueError, match="cannot resolve .*: ."):
        srv.connect("bad\x00name", 80)
    assert srv.stats()["connected"] == 0


def test_write_overflow_closes_the_connection(serve: Any) -> None:
    def on_data(conn: shoal.Connection, data: bytes) -> None:
        try:
            conn.write(b"x" * (8 << 20))
        except shoal.WriteOverflow:
            overflowed.set()

    overflowed = threading.Event()
    srv = serve(on_data=on_data, max_write_buffer=1 << 20, write_high_watermark=1 << 19,
                write_low_watermark=1 << 18)
    with connect(srv.port) as s:
        s.sendall(b"go")
        assert overflowed.wait(5)
    assert eventually(lambda: srv.stats()["closed"]["write_overflow"] == 1)


def test_idle_timeout_reclaims_connections(serve: Any) -> None:
    reasons: list[str] = []
    srv = serve(on_data=echo, idle_timeout=0.1, on_close=lambda c, r: reasons.append(r))
    with connect(srv.port) as s:
        assert recv_until_closed(s) == b""
    assert eventually(lambda: reasons == ["idle_timeout"])


def test_a_handler_object_with_methods(serve: Any) -> None:
    class Upper:
        def __init__(self) -> None:
            self.closed: list[str] = []

        def on_open(self, conn: shoal.Connection) -> None:
            conn.write(b"hi\n")

        def on_data(self, conn: shoal.Connection, data: bytes) -> None:
            conn.write(data.upper())

        def on_close(self, conn: shoal.Connection, reason: str) -> None:
            self.closed.append(reason)

    h = Upper()
    srv = serve(shoal.Server, h)
    with connect(srv.port) as s:
        assert recv_exact(s, 3) == b"hi\n"
        s.sendall(b"shout")
        assert recv_exact(s, 5) == b"SHOUT"
    assert eventually(lambda: h.closed == ["peer_closed"])
    with pytest.raises(TypeError, match="both"):
        shoal.Server(h, on_data=echo)
    with pytest.raises(TypeError, match="needs on_data"):
        shoal.Server(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [{"workers": 2}, {"inline": True}])
def test_a_connection_of_another_server_written_inside_a_callback_goes_to_that_server(
    serve: Any, mode: dict[str, Any]
) -> None:
    # Two servers with one reactor each: their first connections take the same reactor and
    # slot (their ids still differ: each server counts generations from its own start).
    # Writing to B's connection inside A's callback must reach B's client, not A's.
    b_conns: list[shoal.Connection] = []
    srv_b = serve(on_data=echo, on_open=b_conns.append, threads=1, **mode)
    a_conns: list[shoal.Connection] = []

    def on_data_a(conn: shoal.Connection, data: bytes) -> None:
        b_conns[0].write(b"for-b")
        conn.write(b"done")

    srv_a = serve(on_data=on_data_a, on_open=a_conns.append, threads=1, **mode)
    with connect(srv_b.port, timeout=5) as b, connect(srv_a.port, timeout=5) as a:
        assert eventually(lambda: len(b_conns) == 1 and len(a_conns) == 1)
        assert a_conns[0].id != b_conns[0].id
        a.sendall(b"go")
        assert recv_exact(a, 4) == b"done"
        assert recv_exact(b, 5) == b"for-b"
        # Nothing else reached A's client.
        a.settimeout(0.2)
        with pytest.raises(TimeoutError):
            a.recv(1)


@pytest.mark.parametrize("mode", [{"workers": 2}, {"inline": True}])
def test_on_close_runs_once_for_an_outbound_connect_that_fails(
    serve: Any, mode: dict[str, Any]
) -> None:
    # A port nothing listens on: bound, then closed.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    opened: list[shoal.Connection] = []
    closes: list[tuple[shoal.Connection, str]] = []
    srv = serve(on_data=echo, on_open=opened.append,
                on_close=lambda conn, reason: closes.append((conn, reason)), **mode)
    cid = srv.connect("127.0.0.1", port)
    assert eventually(lambda: len(closes) >= 1)
    time.sleep(0.1)
    assert len(closes) == 1, closes
    conn, reason = closes[0]
    assert reason == "connect_failed"
    assert isinstance(conn, shoal.Connection)
    assert conn.id == cid
    assert not conn.open
    assert opened == []
    with pytest.raises(shoal.ConnectionClosed):
        conn.write(b"x")


@pytest.mark.parametrize("value", [3, [104, 105], None, 2.5])
def test_a_write_of_something_not_bytes_like_raises_type_error(
    serve: Any, caplog: pytest.LogCaptureFixture, value: Any
) -> None:
    # bytes(3) would be three NUL bytes and bytes([104, 105]) b"hi": neither reaches the
    # client; the callback gets a TypeError (logged, the connection failed).
    caplog.set_level(logging.ERROR, logger="shoal")
    srv = serve(on_data=lambda conn, data: conn.write(value))
    with connect(srv.port) as s:
        s.sendall(b"x")
        assert recv_until_closed(s) == b""
    assert eventually(lambda: srv.stats()["closed"]["handler_failed"] == 1)
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(e, TypeError) and "bytes-like" in str(e) for e in errors), errors


@pytest.mark.parametrize("mode", [{"workers": 2}, {"inline": True}])
def test_threads_waiting_for_room_stream_past_max_write_buffer_to_a_slow_reader(
    serve: Any, mode: dict[str, Any]
) -> None:
    # 40 MiB from two threads against a 16 MiB max_write_buffer, to a client that reads
    # nothing for half a second; each thread waits for room before each 1 MiB piece.
    piece = 1 << 20
    opened: list[shoal.Connection] = []
    refused: list[str] = []

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        try:
            conn.wait_writable(0)
        except shoal.ShoalError as e:
            refused.append(type(e).__name__)  # inside a callback it would wait for itself

    srv = serve(on_open=opened.append, on_data=on_data, max_write_buffer=16 << 20, **mode)
    errors: list[BaseException] = []

    def produce(conn: shoal.Connection, fill: bytes) -> None:
        try:
            for _ in range(20):
                assert conn.wait_writable(timeout=10) is True
                conn.write(fill * piece)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    with connect(srv.port, timeout=20) as s:
        assert eventually(lambda: len(opened) == 1)
        conn = opened[0]
        s.sendall(b"x")
        assert eventually(lambda: refused == ["ShoalError"])
        threads = [threading.Thread(target=produce, args=(conn, f)) for f in (b"a", b"b")]
        for t in threads:
            t.start()
        time.sleep(0.5)
        got = recv_exact(s, 40 * piece)
        for t in threads:
            t.join(timeout=20)
        assert not errors, errors
        # Each piece arrived whole.
        for i in range(40):
            block = got[i * piece:(i + 1) * piece]
            assert block.count(block[:1]) == piece, f"piece {i} is mixed"
        assert got.count(b"a") == 20 * piece
    # The client left: a wait ends with ConnectionClosed.

    def closed() -> bool:
        try:
            conn.wait_writable(timeout=0.2)
            return False
        except shoal.ConnectionClosed:
            return True

    assert eventually(closed, timeout=5)
    assert srv.stats()["closed"]["write_overflow"] == 0
