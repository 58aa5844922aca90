#!/usr/bin/env python3
"""shoal's fault and attack suite: real example servers attacked from outside on 127.0.0.1.

Each scenario starts a server (the Rust, C or Python `http_hello` example) with small limits
and timeouts, attacks it while a legitimate client keeps sending requests, and checks three
things: the attack is contained (its connections are closed by the limit meant for it), the
legitimate client keeps being served (no failed request; its request rate and p99 latency are
reported), and afterwards the server's descriptor count and RSS return to their baseline.

    python3 faults/run.py              # every scenario (make test-faults)
    python3 faults/run.py --quick      # the fast subset make test runs
    python3 faults/run.py slowloris resets   # some scenarios by name

Every run is bounded in time and stops by itself; only 127.0.0.1 is ever contacted. Needs the
release examples (make examples, make wheel for Python) and, for the slowhttptest scenarios,
slowhttptest (faults/setup.sh installs it). Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
OUT = TARGET / "faults"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Slack allowed when comparing with the baseline after an attack: the buffer pool keeps up to
# `pool_max_free` buffers per reactor, and the allocator keeps some freed memory.
RSS_SLACK_KIB = 24 * 1024
FD_SLACK = 2

# Limits every attacked server runs with (the C and Rust examples take the same flags).
COMMON_FLAGS = [
    "--threads", "1",
    "--header-timeout-ms", "2000",
    "--body-timeout-ms", "2000",
    "--keepalive-timeout-ms", "5000",
    "--write-timeout-ms", "2000",
    "--write-min-rate", "65536",
    "--max-write-buffer", str(8 << 20),
]


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the server under attack


def server_argv(kind: str, extra: list[str]) -> list[str]:
    if kind == "rust":
        return [str(TARGET / "release" / "examples" / "http_hello"), *COMMON_FLAGS, *extra]
    if kind == "c":
        return [str(TARGET / "c" / "http_hello"), *COMMON_FLAGS, *extra]
    if kind == "python":
        py = TARGET / "venv" / "bin" / "python"
        return [str(py), str(ROOT / "examples" / "python" / "http_hello.py"), "--threads", "1",
                *extra]
    raise ValueError(kind)


class Target:
    """A server process: started on a free port, measured through /proc, always stopped."""

    def __init__(self, kind: str, extra: list[str] | None = None,
                 wrap: list[str] | None = None) -> None:
        argv = [*(wrap or []), *server_argv(kind, ["--host", HOST, "--port", "0", *(extra or [])])]
        self.kind = kind
        OUT.mkdir(parents=True, exist_ok=True)
        self.stderr_path = OUT / f"server-{kind}.stderr"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = LISTEN_RE.search(line.decode(errors="replace"))
            if m:
                self.port = int(m.group(1))
                break
        else:
            self.stop()
            raise RuntimeError(f"{kind} server did not start")
        if not hasattr(self, "port"):
            self.stop()
            raise RuntimeError(f"{kind} server exited: {self.stderr_tail()}")
        threading.Thread(target=self._drain, daemon=True).start()
        self.pid = self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# the legitimate client


class Legit:
    """Keep-alive `GET /` requests in a loop, one at a time, reconnecting when closed."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.started = 0.0
        self.elapsed = 0.0

    def run(self) -> None:
        self.started = time.monotonic()
        conn: http.client.HTTPConnection | None = None
        while not self.stop_flag.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or body != b"Hello, World!":
                    self.failures.append(f"status {r.status}")
                else:
                    self.latencies.append(time.monotonic() - t0)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                # A keep-alive connection the server closed for idleness is not a failure if
                # a fresh one then works; anything else is.
                if conn is not None and isinstance(e, (http.client.RemoteDisconnected,
                                                       ConnectionResetError, BrokenPipeError)):
                    conn.close()
                    conn = None
                    continue
                self.failures.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.002)
        if conn is not None:
            conn.close()
        self.elapsed = time.monotonic() - self.started

    def __enter__(self) -> Legit:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(10)

    def summary(self) -> str:
        n = len(self.latencies)
        if not n:
            return "legitimate client: no request succeeded"
        lat = sorted(self.latencies)
        p50 = lat[n // 2] * 1000
        p99 = lat[min(n - 1, int(n * 0.99))] * 1000
        rate = n / self.elapsed if self.elapsed else 0.0
        return (f"legitimate client: {n} requests ({rate:.0f}/s), p50 {p50:.2f} ms, "
                f"p99 {p99:.2f} ms, max {lat[-1] * 1000:.1f} ms, failures {len(self.failures)}")


# --------------------------------------------------------------------------
# results


@dataclass
class Result:
    name: str
    server: str
    checks: list[tuple[bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.checks.append((ok, what))
        log(("ok   " if ok else "FAIL ") + f"{self.name}/{self.server}: {what}")

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks)


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def baseline(t: Target) -> tuple[int, int]:
    # Warm up (a few requests), then read the descriptor count and RSS at rest.
    for _ in range(20):
        c = http.client.HTTPConnection(HOST, t.port, timeout=5)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
    time.sleep(0.2)
    return t.fds(), t.rss_kib()


def check_recovery(r: Result, t: Target, base: tuple[int, int], legit_conns: int = 1,
                   timeout: float = 15.0) -> None:
    fds0, rss0 = base
    back = wait_until(lambda: t.fds() <= fds0 + legit_conns + FD_SLACK, timeout)
    r.check(back, f"descriptors back to baseline: {t.fds()} (baseline {fds0})")
    rss = t.rss_kib()
    r.check(rss <= rss0 + RSS_SLACK_KIB,
            f"RSS back near baseline: {rss} KiB (baseline {rss0} KiB, slack {RSS_SLACK_KIB} KiB)")
    r.check(t.alive(), "server still running")


def check_legit(r: Result, legit: Legit) -> None:
    r.notes.append(legit.summary())
    r.check(not legit.failures and len(legit.latencies) > 0,
            f"legitimate client served throughout ({len(legit.latencies)} ok, "
            f"{len(legit.failures)} failed{': ' + legit.failures[0] if legit.failures else ''})")


def slowhttptest(args: list[str], name: str, limit: int) -> tuple[str, list[dict[str, str]]]:
    prefix = OUT / name
    argv = ["slowhttptest", *args, "-l", str(limit), "-g", "-o", str(prefix)]
    out = subprocess.run(argv, capture_output=True, timeout=limit + 30, text=True,
                         errors="replace")
    text = ANSI.sub("", out.stdout + out.stderr)
    rows: list[dict[str, str]] = []
    csv_path = prefix.with_suffix(".csv")
    if csv_path.exists():
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
    return text, rows


def slowhttptest_checks(r: Result, text: str, rows: list[dict[str, str]], limit: int) -> None:
    m = re.search(r"Test ended on (\d+)th second", text)
    ended = int(m.group(1)) if m else None
    r.check("No open connections left" in text and ended is not None and ended < limit,
            f"slowhttptest: every attack connection closed by the server "
            f"(ended on second {ended} of {limit})")
    down = [row["Seconds"] for row in rows if row.get("Service Available", "0") in ("0", "")]
    r.check(bool(rows) and not down,
            "slowhttptest: service available throughout" + (f" (down at {down})" if down else ""))
    peak = max((int(row.get("Connected", "0") or 0) for row in rows), default=0)
    r.notes.append(f"slowhttptest: peak {peak} attack connections open at once")


# --------------------------------------------------------------------------
# scenarios


def scenario_slowloris(kind: str, quick: bool) -> Result:
    r = Result("slowloris", kind)
    t = Target(kind)
    try:
        base = baseline(t)
        limit = 20
        with Legit(t.port) as legit:
            text, rows = slowhttptest(["-H", "-c", "200" if quick else "500", "-i", "1",
                                       "-r", "250", "-p", "3", "-x", "24",
                                       "-u", f"http://{HOST}:{t.port}/"], f"slowloris-{kind}",
                                      limit)
        slowhttptest_checks(r, text, rows, limit)
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        t.stop()
    return r


def scenario_slow_post(kind: str, quick: bool) -> Result:
    r = Result("slow-post", kind)
    t = Target(kind)
    try:
        base = baseline(t)
        limit = 20
        with Legit(t.port) as legit:
            text, rows = slowhttptest(["-B", "-c", "200", "-i", "1", "-r", "200", "-s", "65536",
                                       "-p", "3", "-x", "16",
                                       "-u", f"http://{HOST}:{t.port}/echo"],
                                      f"slow-post-{kind}", limit)
        slowhttptest_checks(r, text, rows, limit)
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        t.stop()
    return r


def scenario_slow_read(kind: str, quick: bool) -> Result:
    """Slow readers of a 1 MiB response, twice: with a fixed 64 KiB send buffer, shoal holds
    most of the response and the write timeout (with its minimum rate) closes them; with the
    kernel's autotuned buffers the kernel takes the whole response, no write is pending, and
    the keep-alive timeout finds the kernel's queue still full and resets them."""
    r = Result("slow-read", kind)
    for label, extra in (("fixed 64 KiB send buffer", ["--send-buffer", "65536"]),
                         ("autotuned send buffer", [])):
        t = Target(kind, extra)
        try:
            base = baseline(t)
            limit = 20
            # slowhttptest reads 16 bytes a second, so after the server's reset it still
            # drains the ~1 KiB its socket had received before it notices: whether the
            # server dropped the attack is read from the server's side (its descriptors).
            held: list[tuple[float, int]] = []
            with Legit(t.port) as legit:
                result: list[tuple[str, list[dict[str, str]]]] = []
                attack = threading.Thread(target=lambda: result.append(slowhttptest(
                    ["-X", "-c", "200", "-r", "200", "-w", "1", "-y", "64", "-n", "1", "-z", "16",
                     "-k", "1", "-p", "3", "-u", f"http://{HOST}:{t.port}/big?bytes=1048576"],
                    f"slow-read-{kind}", limit)))
                t0 = time.monotonic()
                attack.start()
                while attack.is_alive():
                    held.append((time.monotonic() - t0, t.fds() - base[0]))
                    time.sleep(0.25)
            text, rows = result[0] if result else ("", [])
            peak = max((n for _, n in held), default=0)
            at_peak = next((i for i, (_, n) in enumerate(held) if n == peak), 0)
            dropped = next((s for s, n in held[at_peak:] if n <= 1 + FD_SLACK), None)
            r.notes.append(f"{label}: the server held up to {peak} attack connections and had "
                           f"dropped them {dropped:.1f} s into the attack" if dropped is not None
                           else f"{label}: the server held up to {peak} attack connections")
            r.check(peak >= 100, f"{label}: the attack reached the server ({peak} connections)")
            r.check(dropped is not None and dropped < 12,
                    f"{label}: every slow reader dropped by the server within 12 s "
                    f"(write timeout 2 s, keep-alive timeout 5 s)")
            down = [row["Seconds"] for row in rows
                    if row.get("Service Available", "0") in ("0", "")]
            r.check(bool(rows) and not down, "slowhttptest: service available throughout"
                    + (f" (down at {down})" if down else ""))
            check_legit(r, legit)
            check_recovery(r, t, base)
        finally:
            t.stop()
    return r


def scenario_pipeliners(kind: str, quick: bool) -> Result:
    """Connections that pipeline many requests and never read the responses."""
    r = Result("never-reading-pipeliners", kind)
    conns, per_conn = (5, 5000) if quick else (20, 20000)
    t = Target(kind)
    socks: list[socket.socket] = []
    try:
        base = baseline(t)
        req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        peak = [base[1]]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], t.rss_kib())
                except OSError:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with Legit(t.port) as legit:
            senders = []
            for _ in range(conns):
                s = socket.create_connection((HOST, t.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                socks.append(s)

                def send(s: socket.socket = s) -> None:
                    s.settimeout(10)
                    try:
                        s.sendall(req * per_conn)
                    except OSError:
                        pass  # closed by the server while we were still sending

                th = threading.Thread(target=send, daemon=True)
                th.start()
                senders.append(th)
            closed = wait_until(lambda: t.fds() <= base[0] + 1 + FD_SLACK, 20)
            for th in senders:
                th.join(10)
        stop.set()
        sampler.join(2)
        growth = peak[0] - base[1]
        r.notes.append(f"{conns} connections x {per_conn} pipelined requests: RSS peak "
                       f"{peak[0]} KiB (+{growth} KiB over baseline)")
        bound = conns * 3 * 1024 + 16 * 1024
        r.check(growth <= bound, f"memory bounded: +{growth} KiB <= {bound} KiB "
                f"(about 3 MiB per connection: high watermark, read buffer, slack)")
        r.check(closed, "every never-reading connection closed by the write timeout")
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        for s in socks:
            s.close()
        t.stop()
    return r


def scenario_flood(kind: str, quick: bool) -> Result:
    """More connections than max_connections: the surplus waits, nothing spins."""
    r = Result("connection-flood", kind)
    limit, total = 100, (200 if quick else 400)
    t = Target(kind, ["--max-connections", str(limit)])
    socks: list[socket.socket] = []
    try:
        base = baseline(t)
        with Legit(t.port) as legit:
            for _ in range(total):
                s = socket.create_connection((HOST, t.port), timeout=10)
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                socks.append(s)
            time.sleep(0.5)
            cpu0, w0 = t.cpu_seconds(), time.monotonic()
            time.sleep(2.0)
            busy = (t.cpu_seconds() - cpu0) / (time.monotonic() - w0)
            held = t.fds() - base[0]
            # The ones within the limit were answered; the others wait in the backlog. The
            # sweep is non-blocking, so it ends long before the keep-alive timeout frees room.
            answered: set[int] = set()
            for i, s in enumerate(socks):
                s.setblocking(False)
                try:
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        answered.add(i)
                except (TimeoutError, BlockingIOError):
                    pass
            r.notes.append(f"{total} connections, max_connections {limit}: {len(answered)} "
                           f"answered at once, server CPU {busy * 100:.1f}% of a core while "
                           f"saturated")
            r.check(len(answered) <= limit,
                    f"at most max_connections served at once ({len(answered)})")
            r.check(held <= limit, f"the server holds at most max_connections sockets "
                    f"({held} over its baseline, the legitimate client's included)")
            r.check(busy < 0.10, f"no spinning at the limit ({busy * 100:.1f}% of a core)")
            # Closing the served ones lets the waiting ones in: all get answered in the end.
            for i in answered:
                socks[i].close()
            late = 0
            for i, s in enumerate(socks):
                if i in answered:
                    continue
                s.settimeout(10)
                try:
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        late += 1
                except OSError:
                    pass
                s.close()
            r.check(len(answered) + late == total,
                    f"every waiting connection served once others left ({len(answered)} + "
                    f"{late} of {total})")
        socks.clear()
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        for s in socks:
            s.close()
        t.stop()
    return r


def scenario_nofile(kind: str, quick: bool) -> Result:
    """The server out of descriptors (prlimit --nofile=64) with 200 clients."""
    r = Result("descriptor-exhaustion", kind)
    t = Target(kind, wrap=["prlimit", "--nofile=64:64"])
    socks: list[socket.socket] = []
    try:
        base = baseline(t)
        with Legit(t.port) as legit:
            for _ in range(200):
                try:
                    s = socket.create_connection((HOST, t.port), timeout=5)
                except OSError:
                    break
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                socks.append(s)
            time.sleep(0.5)
            cpu0, w0 = t.cpu_seconds(), time.monotonic()
            time.sleep(2.0)
            busy = (t.cpu_seconds() - cpu0) / (time.monotonic() - w0)
            fds = t.fds()
            r.notes.append(f"{len(socks)} clients against 64 descriptors: server holds {fds} "
                           f"descriptors, CPU {busy * 100:.1f}% of a core while exhausted")
            r.check(busy < 0.10, f"no spinning while out of descriptors ({busy * 100:.1f}%)")
            for s in socks:
                s.close()
            socks.clear()
            # Recovery: new connections are served once descriptors are free again.
            def fresh_ok() -> bool:
                try:
                    c = http.client.HTTPConnection(HOST, t.port, timeout=2)
                    c.request("GET", "/")
                    ok = c.getresponse().status == 200
                    c.close()
                    return ok
                except (OSError, http.client.HTTPException):
                    return False
            r.check(wait_until(fresh_ok, 10), "new connections served after recovery")
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        for s in socks:
            s.close()
        t.stop()
    return r


def scenario_resets(kind: str, quick: bool) -> Result:
    """Clients resetting mid-response, and half-closing ones."""
    r = Result("resets-and-half-closes", kind)
    n = 100 if quick else 500
    t = Target(kind)
    try:
        base = baseline(t)
        with Legit(t.port) as legit:
            linger0 = struct.pack("ii", 1, 0)
            for _ in range(n):
                s = socket.create_connection((HOST, t.port), timeout=5)
                s.sendall(b"GET /big?bytes=1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                got = b""
                while len(got) < 100:
                    chunk = s.recv(100 - len(got))
                    if not chunk:
                        break
                    got += chunk
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                s.close()  # a reset with most of the response unsent
            half_ok = 0
            for _ in range(n // 5):
                s = socket.create_connection((HOST, t.port), timeout=5)
                s.sendall(b"GET /big?bytes=100000 HTTP/1.1\r\nHost: t\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                s.close()
                if data.startswith(b"HTTP/1.1 200") and data.endswith(b"x" * 1000):
                    half_ok += 1
        r.check(half_ok == n // 5, f"half-closed clients got their whole response "
                f"({half_ok}/{n // 5})")
        r.notes.append(f"{n} resets after 100 bytes of a 1 MB response")
        check_legit(r, legit)
        check_recovery(r, t, base)
    finally:
        rc = t.stop()
    r.check(rc == 0, f"server exited cleanly on SIGTERM (status {rc}; no SIGPIPE)")
    return r


def scenario_failures(kind: str, quick: bool) -> Result:
    """Handler failures (panic, C error, Python exception) on 1% of requests under load."""
    r = Result("handler-failures", kind)
    total = 1000 if quick else 4000
    t = Target(kind)
    try:
        # One failure before the baseline: the first panic under RUST_BACKTRACE=1 loads the
        # symbol tables (tens of MiB, kept by the standard library for the process's life), a
        # one-time cost; what must not happen is growth with the number of failures.
        c = http.client.HTTPConnection(HOST, t.port, timeout=5)
        c.request("GET", "/fail")
        c.getresponse().read()
        c.close()
        base = baseline(t)
        ok = fail_500 = wrong = 0
        lock = threading.Lock()

        def worker(k: int) -> None:
            nonlocal ok, fail_500, wrong
            conn: http.client.HTTPConnection | None = None
            for i in range(k, total, 4):
                path = "/fail" if i % 100 == 0 else "/"
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(HOST, t.port, timeout=5)
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    closes = resp.getheader("connection", "").lower() == "close"
                    with lock:
                        if path == "/fail" and resp.status == 500 and closes:
                            fail_500 += 1
                        elif path == "/" and resp.status == 200 and body == b"Hello, World!":
                            ok += 1
                        else:
                            wrong += 1
                    if closes:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    with lock:
                        wrong += 1
                    if conn is not None:
                        conn.close()
                    conn = None
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        expected_fail = len(range(0, total, 100))
        r.check(fail_500 == expected_fail and ok == total - expected_fail and wrong == 0,
                f"exactly the failing requests got 500 and a close: {fail_500}/{expected_fail} "
                f"failures, {ok}/{total - expected_fail} successes, {wrong} wrong")
        check_recovery(r, t, base, legit_conns=0)
    finally:
        t.stop()
    return r


SCENARIOS: dict[str, tuple[Callable[[str, bool], Result], list[str], bool]] = {
    # name: (function, servers, in the quick subset)
    "slowloris": (scenario_slowloris, ["rust", "c"], False),
    "slow-post": (scenario_slow_post, ["rust"], False),
    "slow-read": (scenario_slow_read, ["rust"], False),
    "pipeliners": (scenario_pipeliners, ["rust"], True),
    "flood": (scenario_flood, ["rust"], True),
    "nofile": (scenario_nofile, ["rust", "c"], True),
    "resets": (scenario_resets, ["rust", "c"], True),
    "failures": (scenario_failures, ["rust", "c", "python"], True),
}

NEEDS = {"slowloris": "slowhttptest", "slow-post": "slowhttptest", "slow-read": "slowhttptest"}


def binaries_missing(kind: str) -> str | None:
    path = Path(server_argv(kind, [])[0 if kind != "python" else 1])
    if kind == "python" and not (TARGET / "venv" / "bin" / "python").exists():
        return "target/venv missing (make wheel)"
    if not path.exists():
        return f"{path.relative_to(ROOT)} missing (make examples)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)}")
    ap.add_argument("--quick", action="store_true", help="the fast subset, smaller attacks")
    ap.add_argument("--servers", help="comma list of rust,c,python (default: each scenario's)")
    ap.add_argument("--report", help="write a Markdown report here")
    args = ap.parse_args()
    names = args.scenarios or [n for n, (_, _, q) in SCENARIOS.items() if q or not args.quick]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]} (have {', '.join(SCENARIOS)})")
    only = set(args.servers.split(",")) if args.servers else None
    results: list[Result] = []
    skipped: list[str] = []
    started = time.monotonic()
    for name in names:
        fn, servers, _ = SCENARIOS[name]
        tool = NEEDS.get(name)
        if tool and not shutil.which(tool):
            skipped.append(f"{name}: {tool} is not installed (faults/setup.sh)")
            continue
        for kind in servers:
            if only and kind not in only:
                continue
            missing = binaries_missing(kind)
            if missing:
                skipped.append(f"{name}/{kind}: {missing}")
                continue
            log(f"{name} against the {kind} server")
            try:
                results.append(fn(kind, args.quick))
            except Exception as e:  # noqa: BLE001 - a crashed scenario is a failed one
                res = Result(name, kind)
                res.check(False, f"scenario crashed: {type(e).__name__}: {e}")
                results.append(res)
    elapsed = time.monotonic() - started
    lines = [f"# Fault suite ({'quick' if args.quick else 'full'}, {elapsed:.0f} s)", ""]
    for res in results:
        lines.append(f"## {res.name} — {res.server}: {'PASS' if res.ok else 'FAIL'}")
        lines += [f"- {'ok' if ok else '**FAIL**'}: {what}" for ok, what in res.checks]
        lines += [f"- {note}" for note in res.notes]
        lines.append("")
    if skipped:
        lines.append("## Skipped")
        lines += [f"- {s}" for s in skipped]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.report:
        Path(args.report).write_text(report)
    failed = [f"{r.name}/{r.server}" for r in results if not r.ok]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    if not results:
        log("nothing ran")
        return 1
    log(f"all {len(results)} scenario runs passed in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
