#!/usr/bin/env python3
"""HTTP benchmark harness: shoal's HTTP server (from Rust and from C) against a raw-epoll C reference, hyper, may_minihttp, fasthttp, Go net/http and nginx.

    python3 bench/http.py [--quick] [--reps R] [--duration S] [--warmup S]
                          [--servers shoal,shoal-c,shoal-pool,epoll,hyper,may_minihttp,fasthttp,nethttp,nginx]
                          [--conns 64,512] [--pipeline 1,16]
                          [--sweep 1,10,100,1000,10000] [--sweep-servers shoal,epoll,nginx]
                          [--idle-conns 10000] [--driver wrk|loadgen|auto]
                          [--out FILE] [--json FILE]
                          [--no-build] [--no-strace] [--no-idle] [--no-setup]

Every server answers `GET /` with `200 Hello, World!` (text/plain). For each
workload (connections x pipeline depth; 64 and 512 connections, one request
at a time and 16 pipelined) and each repetition, the servers run interleaved,
the order rotated by one place per repetition (A B C, B C A, ...), each started fresh and
pinned to one core (`taskset -c 0`), with wrk pinned to the other
(`taskset -c 1 wrk -t1 -c<conns> -d<S>s --latency`, plus
`-s bench/wrk/pipeline.lua -- <depth>` when pipelining). The connection-count
sweep (--sweep) runs the unpipelined workload at each connection count for
--sweep-servers, the same way.

The measured window: each run first drives a separate warm-up wrk for
--warmup seconds (its own connections, its numbers discarded), then the
measured wrk for --duration seconds. wrk's stdout is made line-buffered with
`stdbuf -oL`, so its `Running ...` line (printed right before its clock
starts) and its `Thread Stats` line (printed right after its threads stop)
arrive as they happen: the server's utime+stime is read from /proc/PID/stat
at both, which gives requests per server CPU-second besides requests per
second. Then, per server and pipeline depth: syscalls per request under
`strace -f -c` while `loadgen http` sends a fixed number of requests (wrk can
only run for a fixed time); and per server, the resident memory (VmRSS of its
process tree) that --idle-conns idle keep-alive connections add, opened by
`loadgen idle --probe http` from 127.0.0.1-127.0.0.4 (one `GET /` on each).

`--driver loadgen` (and `auto` when wrk is not installed) drives each point
with `loadgen http` and a fixed number of requests instead of wrk: the server
CPU window is then the whole loadgen run (connects included), which is good
enough for a smoke run, not for publishing.

Missing tools (wrk, Go, fasthttp's source, nginx, strace) are installed by
`bash bench/setup.sh` (apt-get) unless --no-setup; a server that cannot be
installed or built is reported as `missing: <reason>`, never skipped.

A Markdown report goes to stdout (and to --out FILE); progress goes to stderr.
Standard library only (and nothing that imports the standard library's `http`
package: this file, run as a script, would shadow it). Every child process
has a timeout and is killed on the way out; every server listens on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import (
    BUSY_THRESHOLD,
    CLK_TCK,
    DEBIAN_GOPATH,
    HOST,
    NOISE_THRESHOLD,
    ROOT,
    SETUP_SCRIPT,
    SETUP_TIMEOUT,
    TARGET,
    LineReader,
    MemoryResult,
    Server,
    ServerSpec,
    Tools,
    build_if_stale,
    c_compiler,
    cpu_model,
    fmt_int,
    go_env,
    kill_all_live,
    kill_quietly,
    log,
    measure_with_retries,
    rotated,
    nginx_binary,
    on_sigterm,
    parse_strace_summary,
    proc_cpu_seconds,
    proc_cpu_split,
    run_build,
    run_idle_memory,
    spawn,
    spread,
    system_busy_seconds,
    tail,
    write_json,
)
from harness import run_setup as _run_setup

SERVER_ORDER = ["shoal", "shoal-c", "shoal-pool", "epoll", "hyper", "may_minihttp", "fasthttp", "nethttp", "nginx"]
PEERS = ["hyper", "may_minihttp", "fasthttp", "nethttp", "nginx"]  # "best peer" is the best of these
REFERENCE = "epoll"
CONNS = [64, 512]
DEPTHS = [1, 16]
SWEEP_SERVERS = ["shoal", "epoll", "nginx"]
WRK_SCRIPT = ROOT / "bench" / "wrk" / "pipeline.lua"
FASTHTTP_SRC = DEBIAN_GOPATH / "src" / "github.com" / "valyala" / "fasthttp"
NGINX_WRAPPER = ROOT / "bench" / "nginx" / "nginx_hello.sh"
LOADGEN_REQUESTS = 20_000  # requests per unpipelined point with --driver loadgen (x depth when pipelining)

DESCRIPTIONS = {
    "shoal": "`target/release/examples/http_hello` (`cargo build --release -p shoal-core --example http_hello`), one reactor",
    "shoal-c": "`target/c/http_hello` (`make examples`): examples/c/http_hello.c, the same server written against libshoal's C interface (`include/shoal.h`), one reactor",
    "shoal-pool": "the same binary with `--workers 1`: one reactor and one worker thread, both on the server's CPU",
    "epoll": "`bench/c/epoll_http.c` (`cc -O2`): one thread, raw edge-triggered epoll, fixed response, one write per batch; the practical limit of one core",
    "hyper": "`bench/peers/src/hyper_hello.rs`: hyper 1.x http1 on a tokio current-thread runtime, `pipeline_flush(true)`",
    "may_minihttp": "`bench/peers/src/may_minihttp_hello.rs`: may_minihttp on the may coroutine runtime, one worker thread",
    "fasthttp": "`bench/go/fasthttp_hello.go`: fasthttp (Debian's packaged source, GOPATH mode), GOMAXPROCS=1",
    "nethttp": "`bench/go/nethttp_hello.go`: Go's net/http, GOMAXPROCS=1",
    "nginx": "`bench/nginx/nginx.conf` (run by `bench/nginx/nginx_hello.sh`): Debian's nginx, `return 200 \"Hello, World!\"`, "
    "one worker process (its master is counted too), no access log",
}


# --------------------------------------------------------------------------
# setup and building


def tools_missing(servers: list[str], want_strace: bool, want_wrk: bool = True) -> list[str]:
    """The bench/setup.sh tools these servers and measurements need that are not installed."""
    need = []
    if want_wrk and shutil.which("wrk") is None:
        need.append("wrk")
    if any(s in ("fasthttp", "nethttp") for s in servers) and shutil.which("go") is None:
        need.append("go")
    if "fasthttp" in servers and not (FASTHTTP_SRC / "server.go").exists():
        need.append("fasthttp")
    if "nginx" in servers and nginx_binary() is None:
        need.append("nginx")
    if want_strace and shutil.which("strace") is None:
        need.append("strace")
    return need


def run_setup(need: list[str]) -> str | None:
    """Runs bench/setup.sh for the tools in `need`; returns why it failed, or None."""
    return _run_setup(need, need)


def build_c_or_go(spec: ServerSpec, src: Path, cmd: list[str], env: dict[str, str] | None, args) -> None:
    """Builds spec.binary from src when it is older than src (or absent)."""
    build_if_stale(spec, src, cmd, env, args.no_build)


def prepare(servers: list[str], args, want_loadgen: bool, setup_problem: str | None, problems: list[str]):
    specs: dict[str, ServerSpec] = {}
    jobs = args.jobs
    loadgen = None
    if want_loadgen:
        if args.loadgen:
            loadgen = Path(args.loadgen).resolve()
        else:
            loadgen = TARGET / "release" / "loadgen"
            if not args.no_build:
                ok, why = run_build(["cargo", "build", "--release", "-p", "shoal-loadgen"], ROOT, jobs)
                if not ok:
                    if loadgen.exists():
                        problems.append(f"loadgen build failed, using the existing {loadgen.relative_to(ROOT)}: {why}")
                    else:
                        problems.append(f"loadgen cannot be built, no syscall counts or idle memory: {why}")
                        loadgen = None
        if loadgen is not None and not loadgen.exists():
            problems.append(f"loadgen missing, no syscall counts or idle memory: {loadgen}")
            loadgen = None

    after_setup = f" ({setup_problem})" if setup_problem else ""
    built_shoal: tuple[bool, str] | None = None
    built_c: tuple[bool, str] | None = None
    for name in servers:
        if name in ("shoal", "shoal-pool"):
            spec = ServerSpec(name, TARGET / "release" / "examples" / "http_hello")
            if name == "shoal-pool":
                spec.args = [*spec.args, "--workers", "1"]
            if not args.no_build:
                if built_shoal is None:
                    built_shoal = run_build(
                        ["cargo", "build", "--release", "-p", "shoal-core", "--example", "http_hello"], ROOT, jobs
                    )
                if not built_shoal[0]:
                    spec.missing = built_shoal[1]
        elif name == "shoal-c":
            spec = ServerSpec(name, TARGET / "c" / "http_hello")
            if not args.no_build:
                if built_c is None:
                    # libshoal.so and every examples/c/*.c (and the Rust examples, up to date).
                    env = {"CARGO_BUILD_JOBS": str(jobs)} if jobs else None
                    built_c = run_build(["make", "examples"], ROOT, None, env)
                if not built_c[0]:
                    spec.missing = built_c[1]
        elif name == "epoll":
            spec = ServerSpec(name, TARGET / "bench" / "epoll_http")
            src = ROOT / "bench" / "c" / "epoll_http.c"
            cc = c_compiler()
            build_c_or_go(spec, src, [cc, "-O2", "-Wall", "-Wextra", "-o", str(spec.binary), str(src)], None, args)
        elif name in ("hyper", "may_minihttp"):
            peers = ROOT / "bench" / "peers"
            binary = f"{name}_hello"
            spec = ServerSpec(name, peers / "target" / "release" / binary)
            if not args.no_build:
                ok, why = run_build(["cargo", "build", "--release", "--bin", binary], peers, jobs)
                if not ok:
                    spec.missing = why
        elif name == "nginx":
            spec = ServerSpec(
                name, NGINX_WRAPPER, fixed_port=True,
                args=["--host", HOST, "--port", "{port}", "--prefix", "{scratch}", "--threads", "1"],
            )  # fmt: skip
            if nginx_binary() is None:
                spec.missing = f"nginx is not installed (Debian package nginx){after_setup}"
        elif name in ("fasthttp", "nethttp"):
            spec = ServerSpec(name, TARGET / "bench" / f"{name}_hello")
            src = ROOT / "bench" / "go" / f"{name}_hello.go"
            if args.no_build and spec.binary.exists():
                pass  # use it as it is
            elif shutil.which("go") is None:
                spec.missing = f"go is not installed{after_setup}"
            elif name == "fasthttp" and not (FASTHTTP_SRC / "server.go").exists():
                spec.missing = f"fasthttp's source is not installed (golang-github-valyala-fasthttp-dev){after_setup}"
            else:
                gopath = DEBIAN_GOPATH if name == "fasthttp" else None
                cmd = ["go", "build", *(["-p", str(jobs)] if jobs else []), "-o", str(spec.binary), str(src)]
                build_c_or_go(spec, src, cmd, go_env(gopath), args)
        else:
            raise AssertionError(name)
        if spec.missing is None and not spec.binary.exists():
            spec.missing = f"{spec.binary.relative_to(ROOT)} does not exist"
        specs[name] = spec
    return loadgen, specs


# --------------------------------------------------------------------------
# measurements


@dataclass
class Point:
    server: str
    conns: int
    depth: int
    rep: int
    ok: bool = False
    rps: float = 0.0
    requests: int = 0
    per_cpu: float = 0.0  # requests per server CPU-second
    server_util: float = 0.0  # share of one core the server used in the window
    wrk_util: float = float("nan")
    other_util: float = 0.0  # CPU (in cores) used by everything else meanwhile
    user_ns: float = 0.0  # server user time per request
    sys_ns: float = 0.0  # server system time per request
    p50: float = float("nan")  # wrk --latency, µs (depth 1 only)
    p90: float = float("nan")
    p99: float = float("nan")
    mean_rt: float = 0.0  # mean batch round trip by Little's law, µs
    sock_errors: dict[str, int] = field(default_factory=dict)
    non2xx: int = 0
    problem: str | None = None
    kind: str = "main"  # "main" (the workload grid) or "sweep" (the connection-count sweep)
    driver: str = "wrk"

    @property
    def errors(self) -> int:
        return sum(self.sock_errors.values())


UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(lines: list[str]) -> dict:
    """The numbers of a wrk 4 report."""
    out: dict = {"pct": {}, "sock": {}, "non2xx": 0}
    in_dist = False
    for line in lines:
        s = line.strip()
        if s.startswith("Latency Distribution"):
            in_dist = True
            continue
        m = re.match(r"^(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)$", s)
        if in_dist and m:
            out["pct"][float(m.group(1))] = float(m.group(2)) * UNIT_US[m.group(3)]
            continue
        in_dist = False
        m = re.match(r"^(\d+) requests in ([\d.]+)(us|ms|s|m|h), ", s)
        if m:
            out["requests"] = int(m.group(1))
            out["seconds"] = float(m.group(2)) * UNIT_S[m.group(3)]
        m = re.match(r"^Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)$", s)
        if m:
            out["sock"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if int(v)}
        m = re.match(r"^Non-2xx or 3xx responses: (\d+)$", s)
        if m:
            out["non2xx"] = int(m.group(1))
        m = re.match(r"^Requests/sec:\s+([\d.]+)$", s)
        if m:
            out["rps"] = float(m.group(1))
    return out


def wrk_argv(tools: Tools, wrk: str, conns: int, depth: int, seconds: int, port: int, *, latency: bool) -> list[str]:
    argv = tools.pin(tools.loadgen_cpu)
    if shutil.which("stdbuf"):
        argv += ["stdbuf", "-oL"]  # lines as they are printed: the window's edges
    argv += [wrk, "-t1", f"-c{conns}", f"-d{seconds}s"]
    if latency:
        argv.append("--latency")
    if depth > 1:
        argv += ["-s", str(WRK_SCRIPT)]
    argv.append(f"http://{HOST}:{port}/")
    if depth > 1:
        argv += ["--", str(depth)]
    return argv


def run_wrk_warmup(tools: Tools, wrk: str, conns: int, depth: int, seconds: int, port: int) -> None:
    err = tools.scratch("wrk-warmup.stderr")
    proc = spawn(wrk_argv(tools, wrk, conns, depth, seconds, port, latency=False), stderr_path=err)
    try:
        LineReader(proc.stdout).drain_in_background()
        rc = proc.wait(timeout=seconds + 30)
        if rc != 0:
            raise RuntimeError(f"warm-up wrk status {rc}: {tail(err)}")
    finally:
        kill_quietly(proc)


def run_http_point(spec: ServerSpec, tools: Tools, wrk: str, conns: int, depth: int, rep: int, duration: int, warmup: int) -> Point:
    pt = Point(spec.name, conns, depth, rep)
    srv = lg = None
    try:
        srv = Server(spec, tools)
        if warmup > 0:
            run_wrk_warmup(tools, wrk, conns, depth, warmup, srv.port)
        lg_err = tools.scratch("wrk.stderr")
        t_spawn = (time.monotonic(), proc_cpu_split(srv.pid), 0.0, system_busy_seconds())
        lg = spawn(wrk_argv(tools, wrk, conns, depth, duration, srv.port, latency=True), stderr_path=lg_err)
        reader = LineReader(lg.stdout)
        deadline = time.monotonic() + duration + 60
        marks: dict[str, tuple[float, tuple[float, float], float, float]] = {"spawn": t_spawn}
        lines: list[str] = []
        while True:
            line = reader.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            edge = "start" if line.startswith("Running ") else "end" if "Thread Stats" in line else None
            if edge and edge not in marks:
                # Sample first, parse later: the window edge is now.
                server_cpu = proc_cpu_split(srv.pid)
                try:
                    wrk_cpu = proc_cpu_seconds(lg.pid)
                except (OSError, ValueError, IndexError):
                    wrk_cpu = float("nan")
                marks[edge] = (time.monotonic(), server_cpu, wrk_cpu, system_busy_seconds())
            lines.append(line)
        rc = lg.wait(timeout=10)
        res = parse_wrk(lines)
        if "requests" not in res or "end" not in marks:
            raise RuntimeError(f"wrk gave no result (status {rc}): {tail(lg_err)}")
        first = marks["start"] if "start" in marks and shutil.which("stdbuf") else marks["spawn"]
        (t0, (u0, k0), l0, b0), (t1, (u1, k1), l1, b1) = first, marks["end"]
        s0, s1 = u0 + k0, u1 + k1
        wall = t1 - t0
        wrk_cpu = (l1 - l0) if first is not marks["spawn"] else float("nan")
        pt.requests = res["requests"]
        pt.rps = res.get("rps") or (pt.requests / res["seconds"] if res.get("seconds") else 0.0)
        pt.server_util = (s1 - s0) / wall if wall > 0 else 0.0
        pt.wrk_util = wrk_cpu / wall if wall > 0 else float("nan")
        others = (b1 - b0) - (s1 - s0) - (wrk_cpu if wrk_cpu == wrk_cpu else 0.0)
        pt.other_util = max(0.0, others / wall) if wall > 0 else 0.0
        pt.per_cpu = pt.requests / (s1 - s0) if s1 > s0 else float("nan")
        if pt.requests:
            pt.user_ns = (u1 - u0) * 1e9 / pt.requests
            pt.sys_ns = (k1 - k0) * 1e9 / pt.requests
        if depth == 1:
            pt.p50, pt.p90, pt.p99 = (res["pct"].get(q, float("nan")) for q in (50.0, 90.0, 99.0))
        pt.mean_rt = conns * depth / pt.rps * 1e6 if pt.rps > 0 else float("nan")
        pt.sock_errors = res["sock"]
        pt.non2xx = res["non2xx"]
        pt.ok = rc == 0 and pt.requests > 0
        if not pt.ok:
            pt.problem = f"wrk status {rc}: {tail(lg_err)}"
        kill_quietly(lg)
        problem = srv.stop()
        if problem:
            pt.problem = problem if pt.problem is None else f"{pt.problem}; {problem}"
        srv = None
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        pt.ok = False
        pt.problem = f"{type(e).__name__}: {e}"
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()
    return pt


def run_http_point_loadgen(spec: ServerSpec, tools: Tools, conns: int, depth: int, rep: int, requests: int) -> Point:
    """One point driven by `loadgen http` (a fixed number of requests) instead of wrk: the
    server CPU window is the whole loadgen run, connects included."""
    pt = Point(spec.name, conns, depth, rep, driver="loadgen")
    srv = lg = None
    try:
        srv = Server(spec, tools)
        argv = tools.pin(tools.loadgen_cpu) + [
            str(tools.loadgen), "http", "--host", HOST, "--port", str(srv.port),
            "--conns", str(conns), "--requests", str(requests), "--pipeline", str(depth), "--timeout", "120",
        ]  # fmt: skip
        lg_err = tools.scratch("loadgen.stderr")
        t0, (u0, k0), b0 = time.monotonic(), proc_cpu_split(srv.pid), system_busy_seconds()
        lg = spawn(argv, stderr_path=lg_err)
        reader = LineReader(lg.stdout)
        deadline = time.monotonic() + 150
        result = None
        while (line := reader.readline(max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith("{"):
                result = json.loads(line)
        # Reap loadgen here, with its rusage: its own CPU time, to tell the others' apart.
        t1, (u1, k1), b1 = time.monotonic(), proc_cpu_split(srv.pid), system_busy_seconds()
        _, status, usage = os.wait4(lg.pid, 0)
        lg.returncode = rc = os.waitstatus_to_exitcode(status)
        lg_cpu = usage.ru_utime + usage.ru_stime
        kill_quietly(lg)
        if result is None:
            raise RuntimeError(f"loadgen gave no result (status {rc}): {tail(lg_err)}")
        wall = t1 - t0
        s0, s1 = u0 + k0, u1 + k1
        pt.requests = int(result["responses"])
        pt.rps = float(result["rps"])
        pt.server_util = (s1 - s0) / wall if wall > 0 else 0.0
        pt.wrk_util = lg_cpu / wall if wall > 0 else float("nan")
        pt.other_util = max(0.0, ((b1 - b0) - (s1 - s0) - lg_cpu) / wall) if wall > 0 else 0.0
        pt.per_cpu = pt.requests / (s1 - s0) if s1 > s0 else float("nan")
        if pt.requests:
            pt.user_ns = (u1 - u0) * 1e9 / pt.requests
            pt.sys_ns = (k1 - k0) * 1e9 / pt.requests
        if depth == 1:
            pt.p50, pt.p90, pt.p99 = (float(result[k]) for k in ("p50_us", "p90_us", "p99_us"))
        pt.mean_rt = conns * depth / pt.rps * 1e6 if pt.rps > 0 else float("nan")
        if result.get("errors"):
            pt.sock_errors = {"connection": int(result["errors"])}
        pt.non2xx = int(result.get("non2xx", 0))
        pt.ok = rc == 0 and pt.requests > 0
        if not pt.ok:
            pt.problem = f"loadgen status {rc}: {tail(lg_err)}"
        problem = srv.stop()
        if problem:
            pt.problem = problem if pt.problem is None else f"{pt.problem}; {problem}"
        srv = None
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        pt.ok = False
        pt.problem = f"{type(e).__name__}: {e}"
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()
    return pt


@dataclass
class SyscallResult:
    server: str
    depth: int
    ok: bool = False
    total: int = 0
    requests: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)
    problem: str | None = None


def run_syscalls(spec: ServerSpec, tools: Tools, requests: int, conns: int, depth: int) -> SyscallResult:
    res = SyscallResult(spec.name, depth)
    out = tools.scratch(f"strace-{spec.name}-{depth}.txt")
    srv = lg = None
    try:
        srv = Server(spec, tools, strace_out=out)
        argv = tools.pin(tools.loadgen_cpu) + [
            str(tools.loadgen), "http", "--host", HOST, "--port", str(srv.port),
            "--conns", str(conns), "--requests", str(requests), "--pipeline", str(depth), "--timeout", "240",
        ]  # fmt: skip
        lg_err = tools.scratch("loadgen.stderr")
        lg = spawn(argv, stderr_path=lg_err)
        reader = LineReader(lg.stdout)
        deadline = time.monotonic() + 300
        result = None
        while (line := reader.readline(max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith("{"):
                result = json.loads(line)
        rc = lg.wait(timeout=10)
        kill_quietly(lg)
        problem = srv.stop()  # strace writes its summary when the server exits
        srv = None
        if result is None or rc != 0:
            raise RuntimeError(f"loadgen status {rc}: {tail(lg_err)}")
        res.requests = int(result["responses"])
        res.total, res.top = parse_strace_summary(out)
        res.ok = res.requests > 0 and res.total > 0
        notes = [problem] if problem else []
        if result.get("non2xx"):
            notes.append(f"{result['non2xx']} non-2xx responses")
        if result.get("errors"):
            notes.append(f"{result['errors']} connection errors")
        res.problem = "; ".join(notes) or None
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        res.problem = f"{type(e).__name__}: {e}"
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()
    return res


# --------------------------------------------------------------------------
# report


def workload_name(conns: int, depth: int) -> str:
    return f"{conns} conns, " + ("no pipelining" if depth == 1 else f"pipeline {depth}")


def us(v: float) -> str:
    return f"{v:,.0f}" if v == v else "–"


def ratio(v: float, ref: float | None) -> str:
    return f"{v / ref:.2f}×" if ref else "n/a"


def median_per_cpu(points: list[Point], name: str, conns: int, depth: int, kind: str = "main") -> float | None:
    good = [p.per_cpu for p in points if p.server == name and p.conns == conns and p.depth == depth and p.ok and p.kind == kind]
    return statistics.median(good) if good else None


def best_peer(points: list[Point], servers: list[str], conns: int, depth: int) -> tuple[str, float] | None:
    meds = [(n, median_per_cpu(points, n, conns, depth)) for n in servers if n in PEERS]
    meds = [(n, m) for n, m in meds if m]
    return max(meds, key=lambda nm: nm[1]) if meds else None


def error_note(sock: dict[str, int]) -> str:
    return "socket errors: " + ", ".join(f"{k} {v:,}" for k, v in sock.items())


def latency_cells(good: list[Point]) -> str:
    med = statistics.median
    return f"{us(med(p.p50 for p in good))} | {us(med(p.p90 for p in good))} | {us(med(p.p99 for p in good))}"


def sweep_section(w, servers: list[str], specs, points: list[Point], sweep: list[int]) -> None:
    """The connection-count sweep: per CPU-s, req/s and latency at each connection count."""
    w("## Connection-count sweep, no pipelining")
    w("")
    w(
        f"The unpipelined workload at {', '.join(f'{c:,}' for c in sweep)} connections (wrk `-t1`; every connection "
        f"is opened by wrk from 127.0.0.1 before its clock starts). Cells: median per CPU-s (ratio to {REFERENCE})."
    )
    w("")
    w("| server | " + " | ".join(f"{c:,} conns" for c in sweep) + " |")
    w("|---|" + "---:|" * len(sweep))
    for name in servers:
        if specs[name].missing:
            w(f"| {name} | " + " | ".join("missing" for _ in sweep) + " |")
            continue
        cells = []
        for c in sweep:
            m = median_per_cpu(points, name, c, 1, "sweep")
            ref = median_per_cpu(points, REFERENCE, c, 1, "sweep")
            cells.append("failed" if m is None else f"{fmt_int(m)} ({ratio(m, ref)})")
        w(f"| {name} | " + " | ".join(cells) + " |")
    w("")
    w("| server | conns | req/s | per CPU-s | server CPU | wrk CPU | p50 µs | p90 µs | p99 µs | errors | notes |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in sweep:
        for name in servers:
            if specs[name].missing:
                continue
            pts = [p for p in points if p.server == name and p.conns == c and p.kind == "sweep"]
            good = [p for p in pts if p.ok]
            if not good:
                why = "; ".join(sorted({p.problem or "failed" for p in pts})) or "not run"
                w(f"| {name} | {c:,} | failed | | | | | | | | {why} |")
                continue
            med = statistics.median
            notes = []
            bound = sum(1 for p in good if p.server_util < BUSY_THRESHOLD)
            if bound:
                notes.append(f"LG-bound ({bound}/{len(good)})")
            noisy = sum(1 for p in good if p.other_util >= NOISE_THRESHOLD)
            if noisy:
                notes.append(f"noisy ({noisy}/{len(good)})")
            w(
                f"| {name} | {c:,} | {fmt_int(med(p.rps for p in good))} | {fmt_int(med(p.per_cpu for p in good))} "
                f"| {med(p.server_util for p in good):.0%} | {fmt_pct(med(p.wrk_util for p in good))} | {latency_cells(good)} "
                f"| {sum(p.errors + p.non2xx for p in good):,} | {', '.join(notes)} |"
            )
    w("")


def memory_section(w, servers: list[str], specs, memres, settings) -> None:
    w("## Idle connection memory")
    w("")
    if memres is None:
        w(settings.get("idle_skipped", "skipped"))
        w("")
        return
    w(
        f"VmRSS of the server's process tree before, and 1 s after, `loadgen idle --probe http --conns "
        f"{settings['idle_conns']:,} --sources 4` opened its connections (from 127.0.0.1–127.0.0.4, one `GET /` "
        "answered on each, then idle)."
    )
    w("")
    w("| server | RSS before (KiB) | RSS after (KiB) | connections | bytes / connection | notes |")
    w("|---|---:|---:|---:|---:|---|")
    for name in servers:
        if specs[name].missing:
            w(f"| {name} | missing | | | | {specs[name].missing} |")
            continue
        r = memres.get(name)
        if r is None or not r.ok:
            w(f"| {name} | failed | | | | {r.problem if r else 'not run'} |")
            continue
        w(f"| {name} | {r.before_kib:,} | {r.after_kib:,} | {r.conns:,} | {fmt_int(r.per_conn)} | {r.problem or ''} |")
    w("")


def report(args, cmdline: str, servers: list[str], specs, points: list[Point], workloads, sysres, problems, settings,
           sweep_servers=(), memres=None) -> str:  # fmt: skip
    out: list[str] = []
    w = out.append
    all_points = points
    points = [p for p in all_points if p.kind == "main"]
    w("# shoal HTTP benchmark")
    w("")
    w(f"`{cmdline}`")
    w("")
    w(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}")
    w(f"- kernel: {os.uname().release}")
    w(f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    w(f"- load average at start: {settings['loadavg']}")
    w(f"- wrk: {settings['wrk_version']}; Go: {settings['go_version']}; nginx: {settings.get('nginx_version', 'n/a')}")
    if settings.get("driver") == "loadgen":
        w(
            f"- driver: `loadgen http` with a fixed number of requests per point ({settings['loadgen_requests']:,} × "
            "depth), NOT wrk: the server CPU window is the whole loadgen run; a smoke run, not figures to publish"
        )
    w(
        f"- {settings['reps']} rep(s); each run: a fresh server, a {settings['warmup']} s warm-up wrk (discarded), "
        f"then a {settings['duration']} s measured wrk; server on CPU {settings['server_cpu']}, wrk on CPU {settings['loadgen_cpu']}"
        + ("" if settings["taskset"] else " (taskset missing: NOT pinned)")
    )
    w("")
    w("Servers (all answer `GET /` with `200 Hello, World!`, text/plain, keep-alive, one core):")
    w("")
    for name in servers:
        w(f"- `{name}`: {DESCRIPTIONS[name]}")
    w("")
    w("How to read the tables:")
    w("")
    w("- `req/s` and `per CPU-s` are medians over reps; `spread` is min–max.")
    w(
        f"- `per CPU-s` = requests per second of server CPU (utime+stime from /proc/PID/stat, sampled when wrk prints "
        f"`Running` and `Thread Stats`, i.e. around its measured window); `vs {REFERENCE}` and `vs best peer` are ratios "
        f"of the medians of per CPU-s (best peer: the best of {', '.join(PEERS)} in that workload)."
    )
    w(f"- `user` / `sys ns/req` split the server's CPU per request (tick resolution, 1/{CLK_TCK} s).")
    w(
        "- `p50`/`p90`/`p99` are wrk's `--latency` percentiles (µs; wrk's coordinated-omission-corrected histogram), "
        "shown for unpipelined runs only: with pipelining wrk's correction corrupts its percentiles (see "
        "bench/wrk/pipeline.lua). `mean rt` = connections × depth / req/s: the mean round trip of one request "
        "(one batch when pipelining) by Little's law, for every run."
    )
    w(
        f"- `LG-bound`: the server used less than {BUSY_THRESHOLD:.0%} of its core, so it waited on wrk; then req/s "
        "says more about wrk than about the server, and per CPU-s is the figure to compare."
    )
    w(
        f"- `others` = CPU (in cores) everything else used during the window (from /proc/stat). A run where it reached "
        f"{NOISE_THRESHOLD:.2f} was re-run up to {args.retries} time(s), keeping the quietest; `noisy` if still disturbed."
    )
    w("- `errors`: wrk's socket errors (connect/read/write/timeout) plus its `Non-2xx or 3xx` count (status ≥ 400).")
    w("")

    w("## Summary: requests per server CPU-second")
    w("")
    w("Median per CPU-s, and in brackets the ratio to " + REFERENCE + ".")
    w("")
    w("| server | " + " | ".join(workload_name(c, d) for c, d in workloads) + " |")
    w("|---|" + "---:|" * len(workloads))
    for name in servers:
        if specs[name].missing:
            w(f"| {name} | " + " | ".join("missing" for _ in workloads) + " |")
            continue
        cells = []
        for conns, depth in workloads:
            med = median_per_cpu(points, name, conns, depth)
            ref = median_per_cpu(points, REFERENCE, conns, depth)
            cells.append("failed" if med is None else f"{fmt_int(med)} ({ratio(med, ref)})")
        w(f"| {name} | " + " | ".join(cells) + " |")
    w("")
    missing = [n for n in servers if specs[n].missing]
    for name in missing:
        w(f"- `{name}` missing: {specs[name].missing}")
    if missing:
        w("")

    for conns, depth in workloads:
        w(f"## {workload_name(conns, depth)}")
        w("")
        ref = median_per_cpu(points, REFERENCE, conns, depth)
        best = best_peer(points, servers, conns, depth)
        if best:
            w(f"Best peer: {best[0]} ({fmt_int(best[1])} requests per CPU-s).")
            w("")
        w(
            f"| server | req/s | spread | per CPU-s | spread | vs {REFERENCE} | vs best peer | user ns/req | sys ns/req "
            "| server CPU | wrk CPU | others | p50 µs | p90 µs | p99 µs | mean rt µs | errors | notes |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for name in servers:
            spec = specs[name]
            if spec.missing:
                w(f"| {name} | missing | | | | | | | | | | | | | | | | {spec.missing} |")
                continue
            pts = [p for p in points if p.server == name and p.conns == conns and p.depth == depth]
            good = [p for p in pts if p.ok]
            if not good:
                why = "; ".join(sorted({p.problem or "failed" for p in pts})) or "not run"
                w(f"| {name} | failed | | | | | | | | | | | | | | | | {why} |")
                continue
            rps = [p.rps for p in good]
            per = [p.per_cpu for p in good]
            med_per = statistics.median(per)
            notes = []
            bound = sum(1 for p in good if p.server_util < BUSY_THRESHOLD)
            if bound:
                notes.append(f"LG-bound ({bound}/{len(good)})")
            noisy = sum(1 for p in good if p.other_util >= NOISE_THRESHOLD)
            if noisy:
                notes.append(f"noisy ({noisy}/{len(good)})")
            sock: dict[str, int] = {}
            for p in good:
                for k, v in p.sock_errors.items():
                    sock[k] = sock.get(k, 0) + v
            non2xx = sum(p.non2xx for p in good)
            if sock:
                notes.append(error_note(sock))
            if non2xx:
                notes.append(f"{non2xx:,} non-2xx/3xx")
            bad = len(pts) - len(good)
            if bad:
                notes.append(f"{bad} failed rep(s)")
            med = statistics.median
            w(
                f"| {name} | {fmt_int(med(rps))} | {spread(rps)} | {fmt_int(med_per)} | {spread(per)} | {ratio(med_per, ref)} "
                f"| {ratio(med_per, best[1] if best else None)} "
                f"| {med(p.user_ns for p in good):,.0f} | {med(p.sys_ns for p in good):,.0f} "
                f"| {med(p.server_util for p in good):.0%} | {fmt_pct(med(p.wrk_util for p in good))} "
                f"| {med(p.other_util for p in good):.2f} | {us(med(p.p50 for p in good))} | {us(med(p.p90 for p in good))} "
                f"| {us(med(p.p99 for p in good))} | {us(med(p.mean_rt for p in good))} "
                f"| {sum(p.errors + p.non2xx for p in good):,} | {', '.join(notes)} |"
            )
        w("")

    if settings.get("sweep"):
        sweep_section(w, list(sweep_servers), specs, all_points, settings["sweep"])
    if settings.get("idle_conns"):
        memory_section(w, servers, specs, memres, settings)

    w("## Syscalls per request")
    w("")
    if sysres is None:
        w(settings.get("strace_skipped", "skipped"))
    else:
        w(
            f"`strace -f -c` on the server while `loadgen http --conns {settings['strace_conns']} --requests "
            f"{settings['strace_requests']} --pipeline D` sends exactly that many `GET /` requests, D per write "
            "(waiting for D responses before the next write); the totals include start-up, accepts and shutdown."
        )
        w("")
        w("| server | pipeline | syscalls | requests | syscalls / request | top syscalls (per request) | notes |")
        w("|---|---:|---:|---:|---:|---|---|")
        for depth in settings["depths"]:
            for name in servers:
                if specs[name].missing:
                    w(f"| {name} | {depth} | missing | | | | |")
                    continue
                r = sysres.get((name, depth))
                if r is None or not r.ok:
                    w(f"| {name} | {depth} | failed | | | | {r.problem if r else 'not run'} |")
                    continue
                top = ", ".join(f"{n} {c / r.requests:.3f}" for n, c in r.top[:4])
                w(f"| {name} | {depth} | {r.total:,} | {r.requests:,} | {r.total / r.requests:.3f} | {top} | {r.problem or ''} |")
    w("")

    w("## Every run")
    w("")
    w("| conns | depth | rep | server | req/s | per CPU-s | user ns/req | sys ns/req | server CPU | wrk CPU | others | p50 µs | p99 µs | mean rt µs | errors | notes |")
    w("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for p in all_points:
        if p.ok:
            notes = ["LG-bound"] if p.server_util < BUSY_THRESHOLD else []
            if p.other_util >= NOISE_THRESHOLD:
                notes.append("noisy")
            if p.sock_errors:
                notes.append(error_note(p.sock_errors))
            if p.non2xx:
                notes.append(f"{p.non2xx:,} non-2xx/3xx")
            if p.problem:
                notes.append(p.problem)
            w(
                f"| {p.conns} | {p.depth} | {p.rep} | {p.server} | {fmt_int(p.rps)} | {fmt_int(p.per_cpu)} | {p.user_ns:,.0f} "
                f"| {p.sys_ns:,.0f} | {p.server_util:.0%} | {fmt_pct(p.wrk_util)} | {p.other_util:.2f} | {us(p.p50)} "
                f"| {us(p.p99)} | {us(p.mean_rt)} | {p.errors + p.non2xx:,} | {', '.join(notes)} |"
            )
        else:
            w(f"| {p.conns} | {p.depth} | {p.rep} | {p.server} | failed | | | | | | | | | | | {p.problem} |")
    w("")

    all_problems = list(problems)
    for p in all_points:
        if p.problem:
            all_problems.append(f"{p.server}, {workload_name(p.conns, p.depth)}, rep {p.rep}: {p.problem}")
    for r in (sysres or {}).values():
        if r.problem:
            all_problems.append(f"{r.server} (syscalls, pipeline {r.depth}): {r.problem}")
    for r in (memres or {}).values():
        if r.problem:
            all_problems.append(f"{r.server} (idle memory): {r.problem}")
    if all_problems:
        w("## Problems")
        w("")
        for msg in all_problems:
            w(f"- {msg}")
        w("")
    return "\n".join(out)


def fmt_pct(v: float) -> str:
    return f"{v:.0%}" if v == v else "n/a"


def version_of(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (res.stdout + res.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def int_list(text: str, what: str, ap: argparse.ArgumentParser) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ap.error(f"{what} takes a comma list of integers")
    if not values or any(v < 1 for v in values):
        ap.error(f"{what} takes a comma list of integers of at least 1")
    return values


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s measured after a 1 s warm-up, fewer strace requests, 2,000 idle conns")
    ap.add_argument("--reps", type=int, help="repetitions per server and workload (default 3)")
    ap.add_argument("--duration", type=int, help="measured seconds per run, whole seconds for wrk (default 10)")
    ap.add_argument("--warmup", type=int, help="seconds of the warm-up wrk before each measured one (default 2)")
    ap.add_argument("--servers", default=",".join(SERVER_ORDER), help="comma list of " + ",".join(SERVER_ORDER))
    ap.add_argument("--conns", default=",".join(map(str, CONNS)), help="comma list of connection counts (default 64,512; 0: none)")
    ap.add_argument("--pipeline", default=",".join(map(str, DEPTHS)), help="comma list of pipeline depths (default 1,16)")
    ap.add_argument("--sweep", default="", help="connection counts of the unpipelined sweep, e.g. 1,10,100,1000,10000 (default: none)")
    ap.add_argument("--sweep-servers", default=",".join(SWEEP_SERVERS), help="servers of the sweep (default shoal,epoll,nginx)")
    ap.add_argument("--sweep-reps", type=int, help="repetitions of each sweep point (default: --reps)")
    ap.add_argument("--idle-conns", type=int, help="idle connections of the memory measurement (default 10000; --quick 2000)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-memory measurement")
    ap.add_argument("--driver", choices=["wrk", "loadgen", "auto"], default="wrk",
                    help="load generator of the measured points: wrk (default), loadgen (fixed request count), "
                    "auto (wrk when installed, without installing it; else loadgen)")  # fmt: skip
    ap.add_argument("--loadgen-requests", type=int, default=LOADGEN_REQUESTS,
                    help=f"requests per point with --driver loadgen, times the pipeline depth (default {LOADGEN_REQUESTS})")  # fmt: skip
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--json", help="also write the results as JSON to this file (for bench/suite.py)")
    ap.add_argument("--strace-requests", type=int, help="requests of each strace run (default 100000; --quick 20000)")
    ap.add_argument("--strace-conns", type=int, default=64, help="connections of the strace runs (default 64)")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall counts")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh for missing tools")
    ap.add_argument("--jobs", type=int, help="cargo -j / go build -p for the builds")
    ap.add_argument("--loadgen", help="use this loadgen binary instead of building target/release/loadgen")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a run that others disturbed (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle machine before each run (default 30)")
    ap.add_argument("--server-cpu", default="0", help="CPU the server is pinned to (default 0)")
    ap.add_argument("--loadgen-cpu", default="1", help="CPU wrk and loadgen are pinned to (default 1)")
    args = ap.parse_args()

    cmdline = shlex.join(["python3", *sys.argv])
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    sweep_reps = args.sweep_reps if args.sweep_reps is not None else reps
    duration = args.duration if args.duration is not None else (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    strace_requests = args.strace_requests or (20_000 if args.quick else 100_000)
    idle_conns = 0 if args.no_idle else (args.idle_conns if args.idle_conns is not None else (2_000 if args.quick else 10_000))
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    sweep_servers = [s.strip() for s in args.sweep_servers.split(",") if s.strip()]
    unknown = [s for s in servers + sweep_servers if s not in SERVER_ORDER]
    if unknown or not servers or reps < 1 or sweep_reps < 1 or duration < 1 or warmup < 0 or strace_requests < 1:
        ap.error(f"bad --servers/--sweep-servers/--reps/--duration/--warmup/--strace-requests (servers are {','.join(SERVER_ORDER)})")
    if idle_conns < 0 or args.loadgen_requests < 1:
        ap.error("bad --idle-conns/--loadgen-requests")
    servers = [s for s in SERVER_ORDER if s in servers]
    conns_list = [] if args.conns.strip() == "0" else int_list(args.conns, "--conns", ap)
    depths = int_list(args.pipeline, "--pipeline", ap)
    sweep = int_list(args.sweep, "--sweep", ap) if args.sweep.strip() else []
    sweep_servers = [s for s in SERVER_ORDER if s in sweep_servers] if sweep else []
    workloads = [(c, d) for c in conns_list for d in depths]
    prepared = [s for s in SERVER_ORDER if s in servers or s in sweep_servers]

    signal.signal(signal.SIGTERM, on_sigterm)
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="shoal-http-bench-"))
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        want_strace = not args.no_strace
        driver = args.driver
        if driver == "auto":
            driver = "wrk" if shutil.which("wrk") else "loadgen"
            if driver == "loadgen":
                problems.append("wrk is not installed: points driven by `loadgen http` (--driver auto)")
        setup_problem = None
        need = tools_missing(prepared, want_strace, want_wrk=driver == "wrk")
        if need:
            if args.no_setup:
                setup_problem = f"not installed, and --no-setup: {', '.join(need)}"
            else:
                setup_problem = run_setup(need)
            if setup_problem:
                problems.append(setup_problem)
        wrk = shutil.which("wrk")
        if driver == "wrk" and wrk is None:
            log(f"wrk is not installed: {setup_problem or 'run bash bench/setup.sh'}")
            return 2
        taskset = shutil.which("taskset") is not None
        if not taskset:
            problems.append("taskset not found: servers and wrk are not pinned")
        if driver == "wrk" and shutil.which("stdbuf") is None:
            problems.append("stdbuf not found: the CPU window spans the whole wrk process, and wrk's CPU is not measured")
        strace_skipped = None
        if args.no_strace:
            strace_skipped = "skipped (--no-strace)"
        elif shutil.which("strace") is None:
            strace_skipped = f"skipped: strace is not installed ({setup_problem})"
            want_strace = False
        want_loadgen = want_strace or idle_conns > 0 or driver == "loadgen"
        loadgen, specs = prepare(prepared, args, want_loadgen, setup_problem, problems)
        if driver == "loadgen" and loadgen is None:
            for msg in problems:
                log(msg)
            log("no loadgen to drive the points (--driver loadgen)")
            return 2
        if want_strace and loadgen is None:
            strace_skipped = "skipped: no loadgen (see Problems)"
            want_strace = False
        tools = Tools(loadgen or Path("/nonexistent/loadgen"), args.server_cpu, args.loadgen_cpu, taskset, tmp)
        runnable = [s for s in servers if not specs[s].missing]
        for s in prepared:
            if specs[s].missing:
                log(f"{s}: missing: {specs[s].missing}")

        def measure(name: str, conns: int, depth: int, rep: int, nreps: int, kind: str) -> Point:
            def one(attempt: int) -> Point:
                what = "sweep, " if kind == "sweep" else ""
                log(f"http {what}{workload_name(conns, depth)}, rep {rep}/{nreps}: {name}" + (f" (retry {attempt})" if attempt else ""))
                if driver == "wrk":
                    pt = run_http_point(specs[name], tools, wrk, conns, depth, rep, duration, warmup)
                else:
                    pt = run_http_point_loadgen(specs[name], tools, conns, depth, rep, args.loadgen_requests * depth)
                pt.kind = kind
                if pt.ok:
                    log(
                        f"  {pt.rps:,.0f} req/s, {pt.per_cpu:,.0f} req/CPU-s, server {pt.server_util:.0%}, "
                        f"{driver} {fmt_pct(pt.wrk_util)}, others {pt.other_util:.2f} cores, mean rt {us(pt.mean_rt)} us"
                        + (f", p99 {us(pt.p99)} us" if depth == 1 else "")
                        + (f", {pt.errors + pt.non2xx} errors" if pt.errors + pt.non2xx else "")
                        + (f" ({pt.problem})" if pt.problem else "")
                    )
                else:
                    log(f"  FAILED: {pt.problem}")
                return pt

            return measure_with_retries(
                one, ok=lambda p: p.ok, others=lambda p: p.other_util, retries=args.retries, quiet_wait=args.quiet_wait
            )

        points: list[Point] = []
        for conns, depth in workloads:
            for rep in range(1, reps + 1):
                for name in rotated(runnable, rep):
                    points.append(measure(name, conns, depth, rep, reps, "main"))
        sweep_runnable = [s for s in sweep_servers if not specs[s].missing]
        for conns in sweep:
            for rep in range(1, sweep_reps + 1):
                for name in rotated(sweep_runnable, rep):
                    points.append(measure(name, conns, 1, rep, sweep_reps, "sweep"))

        settings = {
            "loadavg": " ".join(loadavg), "reps": reps, "duration": duration, "warmup": warmup,
            "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu, "taskset": taskset,
            "strace_requests": strace_requests, "strace_conns": args.strace_conns, "depths": depths,
            "wrk_version": version_of(["wrk", "--version"]).split(" [")[0],
            "go_version": version_of(["go", "version"]),
            "nginx_version": version_of([nginx_binary() or "nginx", "-v"]),
            "driver": driver, "loadgen_requests": args.loadgen_requests,
            "sweep": sweep, "sweep_reps": sweep_reps, "idle_conns": idle_conns,
        }  # fmt: skip
        sysres = None
        if strace_skipped:
            settings["strace_skipped"] = strace_skipped
        else:
            sysres = {}
            for depth in depths:
                for name in runnable:
                    log(f"syscalls: {name} under strace, {strace_requests} requests, pipeline {depth}")
                    r = run_syscalls(specs[name], tools, strace_requests, args.strace_conns, depth)
                    log(f"  {r.total / r.requests:.3f} syscalls/request" if r.ok else f"  FAILED: {r.problem}")
                    sysres[(name, depth)] = r
        memres = None
        if idle_conns and loadgen is None:
            settings["idle_skipped"] = "skipped: no loadgen (see Problems)"
        elif idle_conns:
            memres = {}
            for name in runnable:
                log(f"idle memory: {name}, {idle_conns} connections")
                r = run_idle_memory(specs[name], tools, idle_conns, "http")
                log(f"  {r.per_conn:,.0f} bytes/connection" if r.ok else f"  FAILED: {r.problem}")
                memres[name] = r

        text = report(args, cmdline, servers, specs, points, workloads, sysres, problems, settings, sweep_servers, memres)
        print(text, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
        if args.json:
            write_json(args.json, {
                "kind": "http", "cmdline": cmdline, "settings": settings, "servers": servers,
                "sweep_servers": sweep_servers, "reference": REFERENCE, "peers": PEERS,
                "descriptions": {n: DESCRIPTIONS[n] for n in prepared},
                "missing": {n: specs[n].missing for n in prepared if specs[n].missing},
                "workloads": workloads, "points": [asdict(p) for p in points],
                "syscalls": [
                    {"server": r.server, "depth": r.depth, "ok": r.ok, "total": r.total, "requests": r.requests,
                     "top": r.top[:6], "problem": r.problem}
                    for r in (sysres or {}).values()
                ],
                "memory": [
                    {"server": r.server, "ok": r.ok, "before_kib": r.before_kib, "after_kib": r.after_kib,
                     "conns": r.conns, "per_conn": r.per_conn, "problem": r.problem}
                    for r in (memres or {}).values()
                ],
                "problems": problems,
            })  # fmt: skip
        failed = any(not p.ok for p in points)
        failed |= any(not r.ok for r in (sysres or {}).values())
        failed |= any(not r.ok for r in (memres or {}).values())
        return 1 if failed else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        kill_all_live()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
