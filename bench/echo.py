#!/usr/bin/env python3
"""Echo benchmark harness: shoal (from Rust and from C) against a raw-epoll C reference, tokio, libuv and Go.

    python3 bench/echo.py [--quick] [--reps R] [--duration S] [--warmup S]
                          [--servers shoal,shoal-c,shoal-pool,epoll,tokio,libuv,go]
                          [--out FILE] [--json FILE]

For each workload (64-byte messages over 64 and 512 connections) and each
repetition, the servers run interleaved, the order rotated by one place per
repetition (shoal epoll tokio, epoll tokio shoal, ...),
each started fresh and pinned to one core (`taskset -c 0`), with
`target/release/loadgen` pinned to the other (`taskset -c 1`). The server's
utime+stime is read from /proc/PID/stat when loadgen prints `measure start`
and `measure end`, which gives round trips per server CPU-second besides
round trips per second. Then, per server: syscalls per round trip under
`strace -c -f` for a fixed `loadgen echo --count`, and the resident memory
that 10 000 idle connections add (opened from 127.0.0.1-127.0.0.4).

Peers: tokio (bench/peers, a task per connection), libuv (bench/c/libuv_echo.c
against Debian's libuv1-dev) and Go (bench/go/echo.go, a goroutine per
connection, GOPATH mode). Missing tools (libuv's headers, Go) are installed by
`bash bench/setup.sh` unless --no-setup; a peer that cannot be installed or
built is reported as `missing: <reason>`.

A Markdown report goes to stdout (and to --out FILE); progress goes to stderr.
Standard library only; the plumbing shared with bench/http.py is in
bench/harness.py. Every child process has a timeout and is killed on the
way out; every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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
    MemoryResult,
    build_if_stale,
    c_compiler,
    go_env,
    run_idle_memory,
    run_setup,
    CLK_TCK,
    HOST,
    NOISE_THRESHOLD,
    ROOT,
    TARGET,
    LineReader,
    Server,
    ServerSpec,
    Tools,
    cpu_model,
    fmt_int,
    kill_all_live,
    kill_quietly,
    log,
    measure_with_retries,
    rotated,
    on_sigterm,
    parse_strace_summary,
    proc_cpu_seconds,
    proc_cpu_split,
    run_build,
    spawn,
    spread,
    system_busy_seconds,
    tail,
    write_json,
)

WORKLOADS = [(64, 64), (512, 64)]  # (connections, message bytes)
SERVER_ORDER = ["shoal", "shoal-c", "shoal-pool", "epoll", "tokio", "libuv", "go"]
PEERS = ["tokio", "libuv", "go"]
REFERENCE = "epoll"
UV_H = Path("/usr/include/uv.h")
DESCRIPTIONS = {
    "shoal": "`target/release/examples/echo` (examples/rust/echo.rs), one reactor",
    "shoal-c": "`target/c/echo` (`make examples`): examples/c/echo.c against libshoal's C interface, one reactor",
    "shoal-pool": "the Rust example with `--workers 1`: one reactor and one worker thread on the server's CPU",
    "epoll": "`bench/c/epoll_echo.c` (`cc -O2`): one thread, raw edge-triggered epoll; the syscall floor",
    "tokio": "`bench/peers/src/tokio_echo.rs`: tokio current-thread runtime, a task per connection",
    "libuv": "`bench/c/libuv_echo.c` (`cc -O2 -luv`, Debian's libuv1-dev): one uv_loop, uv_try_write",
    "go": "`bench/go/echo.go`: a goroutine per connection, GOMAXPROCS=1",
}


# --------------------------------------------------------------------------
# building


def tools_missing(servers: list[str]) -> list[str]:
    """The bench/setup.sh tools these servers need that are not installed."""
    need = []
    if "libuv" in servers and not UV_H.exists():
        need.append("libuv")
    if "go" in servers and shutil.which("go") is None:
        need.append("go")
    return need


def prepare(servers: list[str], args, problems: list[str], setup_problem: str | None = None) -> tuple[Path | None, dict[str, ServerSpec]]:
    specs: dict[str, ServerSpec] = {}
    jobs = args.jobs
    after_setup = f" ({setup_problem})" if setup_problem else ""
    built_c: tuple[bool, str] | None = None
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
                    problems.append(f"loadgen cannot be built: {why}")
                    return None, specs
    if not loadgen.exists():
        problems.append(f"loadgen missing: {loadgen}")
        return None, specs

    for name in servers:
        if name in ("shoal", "shoal-pool"):
            spec = ServerSpec(name, TARGET / "release" / "examples" / "echo")
            if name == "shoal-pool":
                # One reactor and one worker thread, both on the server's CPU.
                spec.args = [*spec.args, "--workers", "1"]
            if not args.no_build:
                ok, why = run_build(["cargo", "build", "--release", "-p", "shoal-core", "--example", "echo"], ROOT, jobs)
                if not ok:
                    spec.missing = why
        elif name == "shoal-c":
            spec = ServerSpec(name, TARGET / "c" / "echo")
            if not args.no_build:
                if built_c is None:
                    # libshoal.so and every examples/c/*.c (and the Rust examples, up to date).
                    env = {"CARGO_BUILD_JOBS": str(jobs)} if jobs else None
                    built_c = run_build(["make", "examples"], ROOT, None, env)
                if not built_c[0]:
                    spec.missing = built_c[1]
        elif name == "epoll":
            spec = ServerSpec(name, TARGET / "bench" / "epoll_echo")
            src = ROOT / "bench" / "c" / "epoll_echo.c"
            cmd = [c_compiler(), "-O2", "-Wall", "-Wextra", "-o", str(spec.binary), str(src)]
            build_if_stale(spec, src, cmd, None, args.no_build)
        elif name == "libuv":
            spec = ServerSpec(name, TARGET / "bench" / "libuv_echo")
            src = ROOT / "bench" / "c" / "libuv_echo.c"
            if not (args.no_build and spec.binary.exists()) and not UV_H.exists():
                spec.missing = f"libuv's headers are not installed (Debian package libuv1-dev){after_setup}"
            else:
                cmd = [c_compiler(), "-O2", "-Wall", "-Wextra", "-o", str(spec.binary), str(src), "-luv"]
                build_if_stale(spec, src, cmd, None, args.no_build)
        elif name == "go":
            spec = ServerSpec(name, TARGET / "bench" / "go_echo")
            src = ROOT / "bench" / "go" / "echo.go"
            if not (args.no_build and spec.binary.exists()) and shutil.which("go") is None:
                spec.missing = f"go is not installed (Debian package golang-go){after_setup}"
            else:
                cmd = ["go", "build", *(["-p", str(jobs)] if jobs else []), "-o", str(spec.binary), str(src)]
                build_if_stale(spec, src, cmd, go_env(None), args.no_build)
        elif name == "tokio":
            peers = ROOT / "bench" / "peers"
            spec = ServerSpec(name, peers / "target" / "release" / "tokio_echo")
            if not args.no_build:
                ok, why = run_build(["cargo", "build", "--release", "--bin", "tokio_echo"], peers, jobs)
                if not ok:
                    spec.missing = why
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
    rep: int
    ok: bool = False
    rps: float = 0.0
    round_trips: int = 0
    per_cpu: float = 0.0  # round trips per server CPU-second
    server_util: float = 0.0  # share of one core the server used in the window
    loadgen_util: float = 0.0
    other_util: float = 0.0  # CPU (in cores) used by everything else meanwhile
    user_ns: float = 0.0  # server user time per round trip
    sys_ns: float = 0.0  # server system time per round trip
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    errors: int = 0
    problem: str | None = None


def run_echo_point(spec: ServerSpec, tools: Tools, conns: int, size: int, rep: int, duration: float, warmup: float) -> Point:
    pt = Point(spec.name, conns, rep)
    srv = lg = None
    try:
        srv = Server(spec, tools)
        argv = tools.pin(tools.loadgen_cpu) + [
            str(tools.loadgen), "echo", "--host", HOST, "--port", str(srv.port),
            "--conns", str(conns), "--size", str(size),
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
        ]  # fmt: skip
        lg_err = tools.scratch("loadgen.stderr")
        lg = spawn(argv, stderr_path=lg_err)
        reader = LineReader(lg.stdout)
        deadline = time.monotonic() + warmup + duration + 60
        marks: dict[str, tuple[float, tuple[float, float], float, float]] = {}
        result = None
        while True:
            line = reader.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            if line in ("measure start", "measure end"):
                # Sample first, parse later: the window edges are now.
                server_cpu = proc_cpu_split(srv.pid)
                loadgen_cpu = proc_cpu_seconds(lg.pid)
                marks[line] = (time.monotonic(), server_cpu, loadgen_cpu, system_busy_seconds())
            elif line.startswith("{"):
                result = json.loads(line)
        rc = lg.wait(timeout=10)
        if result is None or "measure start" not in marks or "measure end" not in marks:
            raise RuntimeError(f"loadgen gave no result (status {rc}): {tail(lg_err)}")
        (t0, (u0, k0), l0, b0), (t1, (u1, k1), l1, b1) = marks["measure start"], marks["measure end"]
        s0, s1 = u0 + k0, u1 + k1
        wall = t1 - t0
        pt.other_util = max(0.0, ((b1 - b0) - (s1 - s0) - (l1 - l0)) / wall) if wall > 0 else 0.0
        pt.round_trips = int(result["round_trips"])
        pt.rps = float(result["rps"])
        pt.server_util = (s1 - s0) / wall if wall > 0 else 0.0
        pt.loadgen_util = (l1 - l0) / wall if wall > 0 else 0.0
        pt.per_cpu = pt.round_trips / (s1 - s0) if s1 > s0 else float("nan")
        if pt.round_trips:
            pt.user_ns = (u1 - u0) * 1e9 / pt.round_trips
            pt.sys_ns = (k1 - k0) * 1e9 / pt.round_trips
        pt.p50, pt.p90, pt.p99 = (float(result[k]) for k in ("p50_us", "p90_us", "p99_us"))
        pt.errors = int(result["errors"])
        pt.ok = rc == 0 and pt.round_trips > 0
        if not pt.ok:
            pt.problem = f"loadgen status {rc}: {tail(lg_err)}"
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


@dataclass
class SyscallResult:
    server: str
    ok: bool = False
    total: int = 0
    round_trips: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)
    problem: str | None = None


def run_syscalls(spec: ServerSpec, tools: Tools, count: int, conns: int) -> SyscallResult:
    res = SyscallResult(spec.name)
    out = tools.scratch(f"strace-{spec.name}.txt")
    srv = lg = None
    try:
        srv = Server(spec, tools, strace_out=out)
        argv = tools.pin(tools.loadgen_cpu) + [
            str(tools.loadgen), "echo", "--host", HOST, "--port", str(srv.port),
            "--conns", str(conns), "--size", "64", "--count", str(count),
            "--warmup", "0", "--duration", "240",
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
        res.round_trips = int(result["round_trips"])
        res.total, res.top = parse_strace_summary(out)
        res.ok = res.round_trips > 0 and res.total > 0
        res.problem = problem
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        res.problem = f"{type(e).__name__}: {e}"
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()
    return res


def run_memory(spec: ServerSpec, tools: Tools, conns: int) -> MemoryResult:
    """Idle-connection memory of an echo server (see harness.run_idle_memory)."""
    return run_idle_memory(spec, tools, conns, "echo")


# --------------------------------------------------------------------------
# report


def report(args, cmdline: str, servers: list[str], specs, points: list[Point], sysres, memres, problems, settings) -> str:
    out: list[str] = []
    w = out.append
    w("# shoal echo benchmark")
    w("")
    w(f"`{cmdline}`")
    w("")
    w(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}")
    w(f"- kernel: {os.uname().release}")
    w(f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    w(f"- load average at start: {settings['loadavg']}")
    w(
        f"- {settings['reps']} rep(s), {settings['duration']:g} s measured after {settings['warmup']:g} s warm-up; "
        f"server on CPU {settings['server_cpu']}, loadgen on CPU {settings['loadgen_cpu']}"
        + ("" if settings["taskset"] else " (taskset missing: NOT pinned)")
    )
    w("")
    w("Servers (one core each):")
    w("")
    for name in servers:
        w(f"- `{name}`: {DESCRIPTIONS[name]}")
    w("")
    w("How to read the tables:")
    w("")
    w("- `round trips/s` and `per CPU-s` are medians over reps; `spread` is min–max.")
    w(f"- `per CPU-s` = round trips per second of server CPU (utime+stime); `vs {REFERENCE}` = ratio of the medians of per CPU-s.")
    w(
        f"- `user` / `sys ns/rt` split the server's CPU per round trip (tick resolution, 1/{CLK_TCK} s). On loopback "
        "the kernel part dominates and is the noisy one; the user part is what the server's own code costs."
    )
    w(f"- `LG-bound`: the server used less than {BUSY_THRESHOLD:.0%} of its core, so it waited on the load generator.")
    w(
        f"- `others` = CPU (in cores) everything else used during the window (from /proc/stat). A run where it reached "
        f"{NOISE_THRESHOLD:.2f} was re-run up to {args.retries} time(s), keeping the quietest; `noisy` if still disturbed."
    )
    w("")

    for conns, size in WORKLOADS:
        w(f"## Echo: {size}-byte messages, {conns} connections")
        w("")
        w(f"| server | round trips/s | spread | per CPU-s | spread | vs {REFERENCE} | user ns/rt | sys ns/rt | server CPU | loadgen CPU | others | p50 µs | p90 µs | p99 µs | notes |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        ref = None
        ref_pts = [p for p in points if p.server == REFERENCE and p.conns == conns and p.ok]
        if ref_pts:
            ref = statistics.median(p.per_cpu for p in ref_pts)
        for name in servers:
            spec = specs[name]
            if spec.missing:
                w(f"| {name} | missing | | | | | | | | | | | | | {spec.missing} |")
                continue
            pts = [p for p in points if p.server == name and p.conns == conns]
            good = [p for p in pts if p.ok]
            if not good:
                why = "; ".join(sorted({p.problem or "failed" for p in pts})) or "not run"
                w(f"| {name} | failed | | | | | | | | | | | | | {why} |")
                continue
            rps = [p.rps for p in good]
            per = [p.per_cpu for p in good]
            med_per = statistics.median(per)
            ratio = f"{med_per / ref:.2f}×" if ref else "n/a"
            notes = []
            bound = sum(1 for p in good if p.server_util < BUSY_THRESHOLD)
            if bound:
                notes.append(f"LG-bound ({bound}/{len(good)})")
            noisy = sum(1 for p in good if p.other_util >= NOISE_THRESHOLD)
            if noisy:
                notes.append(f"noisy ({noisy}/{len(good)})")
            errs = sum(p.errors for p in good)
            if errs:
                notes.append(f"{errs} conn errors")
            bad = len(pts) - len(good)
            if bad:
                notes.append(f"{bad} failed rep(s)")
            w(
                f"| {name} | {fmt_int(statistics.median(rps))} | {spread(rps)} | {fmt_int(med_per)} | {spread(per)} | {ratio} "
                f"| {statistics.median(p.user_ns for p in good):,.0f} | {statistics.median(p.sys_ns for p in good):,.0f} "
                f"| {statistics.median(p.server_util for p in good):.0%} | {statistics.median(p.loadgen_util for p in good):.0%} "
                f"| {statistics.median(p.other_util for p in good):.2f} | {statistics.median(p.p50 for p in good):.0f} | {statistics.median(p.p90 for p in good):.0f} | {statistics.median(p.p99 for p in good):.0f} | {', '.join(notes)} |"
            )
        w("")

    w("## Syscalls per round trip")
    w("")
    if sysres is None:
        w(settings.get("strace_skipped", "skipped"))
    else:
        w(
            f"`strace -f -c` on the server while `loadgen echo --conns {settings['strace_conns']} --size 64 "
            f"--count {settings['strace_count']}` runs; the totals include start-up, accepts and shutdown."
        )
        w("")
        w("| server | syscalls | round trips | syscalls / round trip | top syscalls (per round trip) |")
        w("|---|---:|---:|---:|---|")
        for name in servers:
            if specs[name].missing:
                w(f"| {name} | missing | | | |")
                continue
            r = sysres.get(name)
            if r is None or not r.ok:
                w(f"| {name} | failed | | | {r.problem if r else 'not run'} |")
                continue
            top = ", ".join(f"{n} {c / r.round_trips:.2f}" for n, c in r.top[:4])
            w(f"| {name} | {r.total:,} | {r.round_trips:,} | {r.total / r.round_trips:.2f} | {top} |")
    w("")

    w("## Idle connection memory")
    w("")
    if memres is None:
        w("skipped")
    else:
        w(
            f"VmRSS of the server's process tree before and 1 s after `loadgen idle --conns {settings['idle_conns']} "
            "--sources 4` (from 127.0.0.1–127.0.0.4, one 64-byte echo on each)."
        )
        w("")
        w("| server | RSS before (KiB) | RSS after (KiB) | connections | bytes / connection |")
        w("|---|---:|---:|---:|---:|")
        for name in servers:
            if specs[name].missing:
                w(f"| {name} | missing | | | |")
                continue
            r = memres.get(name)
            if r is None or not r.ok:
                w(f"| {name} | failed | | | {r.problem if r else 'not run'} |")
                continue
            w(f"| {name} | {r.before_kib:,} | {r.after_kib:,} | {r.conns:,} | {fmt_int(r.per_conn)} |")
    w("")

    w("## Every echo run")
    w("")
    w("| conns | rep | server | round trips/s | per CPU-s | user ns/rt | sys ns/rt | server CPU | loadgen CPU | others | p50 µs | p99 µs | errors | notes |")
    w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for p in points:
        if p.ok:
            note = "LG-bound" if p.server_util < BUSY_THRESHOLD else ""
            if p.other_util >= NOISE_THRESHOLD:
                note = f"{note} noisy".strip()
            if p.problem:
                note = f"{note} {p.problem}".strip()
            w(
                f"| {p.conns} | {p.rep} | {p.server} | {fmt_int(p.rps)} | {fmt_int(p.per_cpu)} | {p.user_ns:,.0f} | {p.sys_ns:,.0f} | {p.server_util:.0%} "
                f"| {p.loadgen_util:.0%} | {p.other_util:.2f} | {p.p50:.0f} | {p.p99:.0f} | {p.errors} | {note} |"
            )
        else:
            w(f"| {p.conns} | {p.rep} | {p.server} | failed | | | | | | | | | | {p.problem} |")
    w("")

    all_problems = list(problems)
    for p in points:
        if p.problem:
            all_problems.append(f"{p.server}, {p.conns} conns, rep {p.rep}: {p.problem}")
    for res in list((sysres or {}).values()) + list((memres or {}).values()):
        if res.problem:
            all_problems.append(f"{res.server} ({type(res).__name__.replace('Result', '').lower()}): {res.problem}")
    if all_problems:
        w("## Problems")
        w("")
        for msg in all_problems:
            w(f"- {msg}")
        w("")
    return "\n".join(out)


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s measure, 1 s warm-up")
    ap.add_argument("--reps", type=int, help="repetitions per server and workload (default 3)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (default 2)")
    ap.add_argument("--servers", default=",".join(SERVER_ORDER), help="comma list of " + ",".join(SERVER_ORDER))
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--json", help="also write the results as JSON to this file (for bench/suite.py)")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh for missing tools")
    ap.add_argument("--conns", help="comma list of connection counts (default 64,512)")
    ap.add_argument("--strace-count", type=int, default=200_000, help="round trips of the strace run")
    ap.add_argument("--idle-conns", type=int, default=10_000, help="connections of the idle-memory run")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall count")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-memory measurement")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    ap.add_argument("--jobs", type=int, help="cargo -j for the builds")
    ap.add_argument("--loadgen", help="use this loadgen binary instead of building target/release/loadgen")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of an echo run that others disturbed (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle machine before each run (default 30)")
    ap.add_argument("--server-cpu", default="0", help="CPU the server is pinned to (default 0)")
    ap.add_argument("--loadgen-cpu", default="1", help="CPU loadgen is pinned to (default 1)")
    args = ap.parse_args()

    cmdline = shlex.join(["python3", *sys.argv])
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVER_ORDER]
    if unknown or not servers or reps < 1 or duration <= 0 or warmup < 0:
        ap.error(f"bad --servers/--reps/--duration/--warmup (servers are {','.join(SERVER_ORDER)})")
    servers = [s for s in SERVER_ORDER if s in servers]
    if args.conns:
        global WORKLOADS
        try:
            WORKLOADS = [(int(c), 64) for c in args.conns.split(",") if c.strip()]
        except ValueError:
            ap.error("--conns takes a comma list of integers")

    signal.signal(signal.SIGTERM, on_sigterm)
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="shoal-echo-bench-"))
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        taskset = shutil.which("taskset") is not None
        if not taskset:
            problems.append("taskset not found: server and loadgen are not pinned")
        setup_problem = None
        need = tools_missing(servers)
        if need:
            if args.no_setup:
                setup_problem = f"not installed, and --no-setup: {', '.join(need)}"
            else:
                setup_problem = run_setup(need, need)
            if setup_problem:
                problems.append(setup_problem)
        loadgen, specs = prepare(servers, args, problems, setup_problem)
        if loadgen is None:
            for msg in problems:
                log(msg)
            return 2
        tools = Tools(loadgen, args.server_cpu, args.loadgen_cpu, taskset, tmp)
        runnable = [s for s in servers if not specs[s].missing]
        for s in servers:
            if specs[s].missing:
                log(f"{s}: missing: {specs[s].missing}")

        points: list[Point] = []
        for conns, size in WORKLOADS:
            for rep in range(1, reps + 1):
                for name in rotated(runnable, rep):

                    def one(attempt: int, name=name, conns=conns, size=size, rep=rep) -> Point:
                        log(f"echo {conns} conns x {size} B, rep {rep}/{reps}: {name}" + (f" (retry {attempt})" if attempt else ""))
                        pt = run_echo_point(specs[name], tools, conns, size, rep, duration, warmup)
                        if pt.ok:
                            log(
                                f"  {pt.rps:,.0f} rt/s, {pt.per_cpu:,.0f} rt/CPU-s, server {pt.server_util:.0%}, "
                                f"loadgen {pt.loadgen_util:.0%}, others {pt.other_util:.2f} cores, p99 {pt.p99:.0f} us"
                                + (f" ({pt.problem})" if pt.problem else "")
                            )
                        else:
                            log(f"  FAILED: {pt.problem}")
                        return pt

                    points.append(
                        measure_with_retries(
                            one, ok=lambda p: p.ok, others=lambda p: p.other_util,
                            retries=args.retries, quiet_wait=args.quiet_wait,
                        )  # fmt: skip
                    )

        settings = {
            "loadavg": " ".join(loadavg), "reps": reps, "duration": duration, "warmup": warmup,
            "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu, "taskset": taskset,
            "strace_count": args.strace_count, "strace_conns": 64, "idle_conns": args.idle_conns,
        }  # fmt: skip
        sysres = None
        if args.no_strace:
            settings["strace_skipped"] = "skipped (--no-strace)"
        elif shutil.which("strace") is None:
            settings["strace_skipped"] = "skipped: strace is not installed"
        else:
            sysres = {}
            for name in runnable:
                log(f"syscalls: {name} under strace, {args.strace_count} round trips")
                r = run_syscalls(specs[name], tools, args.strace_count, 64)
                log(f"  {r.total / r.round_trips:.2f} syscalls/round trip" if r.ok else f"  FAILED: {r.problem}")
                sysres[name] = r
        memres = None
        if not args.no_idle:
            memres = {}
            for name in runnable:
                log(f"idle memory: {name}, {args.idle_conns} connections")
                r = run_memory(specs[name], tools, args.idle_conns)
                log(f"  {r.per_conn:,.0f} bytes/connection" if r.ok else f"  FAILED: {r.problem}")
                memres[name] = r

        text = report(args, cmdline, servers, specs, points, sysres, memres, problems, settings)
        print(text, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
        if args.json:
            write_json(args.json, {
                "kind": "echo", "cmdline": cmdline, "settings": settings, "servers": servers,
                "reference": REFERENCE, "peers": PEERS, "descriptions": {n: DESCRIPTIONS[n] for n in servers},
                "missing": {n: specs[n].missing for n in servers if specs[n].missing},
                "workloads": [list(w) for w in WORKLOADS], "points": [asdict(p) for p in points],
                "syscalls": [
                    {"server": r.server, "ok": r.ok, "total": r.total, "round_trips": r.round_trips,
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
