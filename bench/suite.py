#!/usr/bin/env python3
"""shoal's whole benchmark suite in one run: `make bench` (and `make bench-quick`).

    python3 bench/suite.py [--quick] [--budget-minutes M] [--reps R] [--duration S]
                           [--no-setup] [--no-results] [--no-charts] [--parts LIST]

Full run (`make bench`): installs what the peers need (`bash bench/setup.sh`: wrk, Go,
fasthttp, nginx, libuv, valgrind, strace), builds shoal, the load generator and the peers,
then runs, one after the other, each harness of bench/ with settings sized to finish in
--budget-minutes (default 25; the parts plan about 19 minutes, and a fresh machine spends
another minute or two installing peers and making the bench venv) on this 2-core machine:

- http      bench/http.py: shoal (Rust and C handlers), the epoll reference, hyper,
            may_minihttp, fasthttp, Go net/http, nginx; wrk at 64 and 512 connections,
            unpipelined and 16 deep; the connection-count sweep (1 to 10,000 connections)
            for shoal, epoll, nginx and fasthttp; idle memory over 10,000 connections;
            syscalls per request (strace)
- echo      bench/echo.py: shoal (Rust and C), epoll, tokio, libuv, Go; 64-byte ping-pong
            at 64 and 512 connections; idle memory; syscalls per round trip
- python    bench/python_binding.py: shoal's Python handler (workers and inline) against
            granian, uvloop and epoll; HTTP and echo at 64 connections; idle memory
- callgrind bench/callgrind.py: instructions per request (shoal Rust, C and Python
            handlers, epoll, hyper), unpipelined and 16 deep

Each harness writes its full Markdown report to bench/out/suite-PART.md (not committed)
and its results as JSON to target/bench/suite/PART.json. From those the suite rewrites the
generated part of bench/RESULTS.md, between the markers `<!-- bench:begin -->` and
`<!-- bench:end -->` (the hand-written sections above them stay as they are), and
bench/charts.py draws bench/charts/*.png with matplotlib from target/bench-venv (which the
python part makes from bench/python/requirements.txt).

Quick run (`make bench-quick`, a smoke check of the harnesses, under 2 minutes): shoal and
the C epoll reference only, no external peer, no package installs (nothing that needs the
network or root), one short point per workload: HTTP unpipelined and pipelined (wrk when it
is installed, else the project's loadgen), one sweep point, idle memory, syscall counts when
strace is installed, echo, the Python handler when target/venv has shoal (`make wheel`),
instruction counts when valgrind is installed. It writes target/bench/quick/report.md and
never touches bench/RESULTS.md or the charts. It exits non-zero only when a harness broke:
it crashed, wrote no results, or could not measure shoal or epoll at all; never on a
figure.

Standard library only (matplotlib runs in the chart step, in the bench venv). Every child
has a timeout; every server listens on 127.0.0.1 only.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TARGET = ROOT / "target"
RESULTS_MD = BENCH / "RESULTS.md"
CHARTS = BENCH / "charts"
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
BENCH_VENV_PY = TARGET / "bench-venv" / "bin" / "python"
DEV_VENV_PY = TARGET / "venv" / "bin" / "python"
BUSY = 0.90  # server share of its core below which a point was load-generator bound
NOISY = 0.10

PARTS = ["http", "echo", "python", "callgrind"]
HTTP_SERVERS = ["shoal", "shoal-c", "epoll", "hyper", "may_minihttp", "fasthttp", "nethttp", "nginx"]
SWEEP_SERVERS = ["shoal", "epoll", "nginx", "fasthttp"]
SWEEP = [1, 10, 100, 1000, 10000]
ECHO_SERVERS = ["shoal", "shoal-c", "epoll", "tokio", "libuv", "go"]
PY_HTTP_SERVERS = ["shoal-py", "shoal-py-inline", "granian", "uvloop", "epoll"]
PY_ECHO_SERVERS = ["shoal-py", "shoal-py-inline", "uvloop", "epoll"]
CALLGRIND_SERVERS = ["shoal", "shoal-c", "shoal-py", "shoal-py-inline", "epoll", "hyper"]
CALLGRIND_ECHO_SERVERS = ["shoal", "shoal-c", "epoll", "tokio", "libuv"]

START = time.monotonic()


def log(msg: str) -> None:
    print(f"[suite.py {time.strftime('%H:%M:%S')} +{time.monotonic() - START:4.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# running the parts


def run_child(argv: list[str], timeout: float, what: str, env: dict[str, str] | None = None) -> tuple[int | None, float]:
    """Runs a child (its stderr passes through, its stdout is dropped) with a timeout: SIGTERM
    first (the harnesses stop their servers on it), SIGKILL 30 s later. Returns (exit status
    or None on timeout, seconds)."""
    log(f"{what}: {shlex.join(argv)}")
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
    except OSError as e:
        log(f"{what}: {e}")
        return 127, 0.0
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        log(f"{what}: still running after {timeout:.0f} s: stopping it")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        rc = None
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    took = time.monotonic() - t0
    log(f"{what}: {'timed out' if rc is None else f'exit status {rc}'} after {took:.0f} s")
    return rc, took


def python_can_import(py: Path, module: str) -> bool:
    if not py.exists():
        return False
    try:
        res = subprocess.run([str(py), "-c", f"import {module}"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def plan(args) -> list[tuple[str, list[str], float]]:
    """(part, argv, planned seconds) of each part to run."""
    py = sys.executable
    out_dir = args.json_dir
    reps, dur, warm = str(args.reps), str(args.duration), str(args.warmup)
    common = ["--retries", str(args.retries), "--quiet-wait", str(args.quiet_wait)]
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    parts: list[tuple[str, list[str], float]] = []
    if args.quick:
        no_setup = ["--no-setup"]
        have_strace = shutil.which("strace") is not None
        have_wrk = shutil.which("wrk") is not None
        if "http" in args.parts:
            parts.append(("http", [
                py, "bench/http.py", "--servers", "shoal,epoll", "--conns", "64", "--pipeline", "1,16",
                "--reps", "1", "--duration", "1", "--warmup", "0", "--driver", "auto", "--loadgen-requests", "5000",
                "--sweep", "256", "--sweep-servers", "shoal,epoll", "--idle-conns", "1000",
                *(["--strace-requests", "2000"] if have_strace else ["--no-strace"]),
                *no_setup, *common, *jobs,
                "--out", str(args.md_dir / "http.md"), "--json", str(out_dir / "http.json"),
            ], 60))  # fmt: skip
        if "echo" in args.parts:
            parts.append(("echo", [
                py, "bench/echo.py", "--servers", "shoal,epoll", "--conns", "64", "--reps", "1",
                "--duration", "1", "--warmup", "0.5", "--idle-conns", "1000",
                *(["--strace-count", "5000"] if have_strace else ["--no-strace"]),
                *no_setup, *common, *jobs,
                "--out", str(args.md_dir / "echo.md"), "--json", str(out_dir / "echo.json"),
            ], 40))  # fmt: skip
        if "python" in args.parts and python_can_import(DEV_VENV_PY, "shoal"):
            pparts = "http,echo,memory" if have_wrk else "echo,memory"
            parts.append(("python", [
                py, "bench/python_binding.py", "--venv", str(TARGET / "venv"), "--no-venv-setup", "--no-build",
                "--parts", pparts, "--http-servers", "shoal-py,epoll", "--echo-servers", "shoal-py,epoll",
                "--conns", "64", "--pipeline", "1", "--reps", "1", "--duration", "1", "--warmup", "0",
                "--idle-conns", "500", *no_setup, *common,
                "--out", str(args.md_dir / "python.md"), "--json", str(out_dir / "python.json"),
            ], 40))  # fmt: skip
        if "callgrind" in args.parts and shutil.which("valgrind"):
            parts.append(("callgrind", [
                py, "bench/callgrind.py", "--servers", "shoal,epoll", "--pipeline", "1", "--requests", "1000",
                "--conns", "4", "--echo-servers", "shoal,epoll", "--echo-count", "1000", "--no-setup", *jobs,
                "--out", str(args.md_dir / "callgrind.md"), "--json", str(out_dir / "callgrind.json"),
            ], 40))  # fmt: skip
        return parts

    setup = ["--no-setup"] if args.no_setup else []
    if "http" in args.parts:
        parts.append(("http", [
            py, "bench/http.py", "--servers", ",".join(HTTP_SERVERS), "--conns", "64,512", "--pipeline", "1,16",
            "--reps", reps, "--duration", dur, "--warmup", warm,
            "--sweep", ",".join(map(str, SWEEP)), "--sweep-servers", ",".join(SWEEP_SERVERS), "--sweep-reps", "1",
            "--idle-conns", "10000", "--strace-requests", "20000", *setup, *common, *jobs,
            "--out", str(args.md_dir / "suite-http.md"), "--json", str(out_dir / "http.json"),
        ], 480))  # fmt: skip
    if "echo" in args.parts:
        parts.append(("echo", [
            py, "bench/echo.py", "--servers", ",".join(ECHO_SERVERS), "--reps", reps, "--duration", dur,
            "--warmup", warm, "--idle-conns", "10000", "--strace-count", "50000", *setup, *common, *jobs,
            "--out", str(args.md_dir / "suite-echo.md"), "--json", str(out_dir / "echo.json"),
        ], 200))  # fmt: skip
    if "python" in args.parts:
        parts.append(("python", [
            py, "bench/python_binding.py", "--parts", "http,echo,memory",
            "--http-servers", ",".join(PY_HTTP_SERVERS), "--echo-servers", ",".join(PY_ECHO_SERVERS),
            "--conns", "64", "--pipeline", "1,16", "--reps", reps, "--duration", dur, "--warmup", warm,
            "--idle-conns", "10000", *setup, *common, *jobs,
            "--out", str(args.md_dir / "suite-python.md"), "--json", str(out_dir / "python.json"),
        ], 240))  # fmt: skip
    if "callgrind" in args.parts:
        parts.append(("callgrind", [
            py, "bench/callgrind.py", "--servers", ",".join(CALLGRIND_SERVERS), "--pipeline", "1,16",
            "--requests", "20000", "--py-requests", "4000", "--echo-servers", ",".join(CALLGRIND_ECHO_SERVERS),
            "--echo-count", "50000", *setup, *jobs,
            "--out", str(args.md_dir / "suite-callgrind.md"), "--json", str(out_dir / "callgrind.json"),
        ], 180))  # fmt: skip
    return parts


def build_all(args) -> list[str]:
    """Builds shoal, loadgen and the Rust peers up front (the harnesses then find them up to
    date); returns the problems."""
    problems = []
    nice = ["nice", "-n", os.environ.get("SHOAL_BENCH_NICE", "10")] if shutil.which("nice") else []
    jobs = ["-j", str(args.jobs)] if args.jobs else []
    env = {"CARGO_BUILD_JOBS": str(args.jobs)} if args.jobs else None
    steps = [
        ("build shoal", [*nice, "cargo", "build", "--release", "-p", "shoal-core", "--examples", "-p", "shoal-loadgen", *jobs], ROOT),
        ("build libshoal and the C examples", [*nice, "make", "examples"], ROOT),
    ]
    if not args.quick and ({"http", "echo", "callgrind"} & set(args.parts)):
        steps.append(("build the Rust peers", [*nice, "cargo", "build", "--release", *jobs], BENCH / "peers"))
    for what, argv, cwd in steps:
        log(f"{what}: {shlex.join(argv)}" + (f" (in {cwd.relative_to(ROOT)})" if cwd != ROOT else ""))
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800,
                env={**os.environ, **env} if env else None,
            )  # fmt: skip
            ok = res.returncode == 0
            why = " / ".join([ln for ln in res.stderr.splitlines() if ln.strip()][-3:])
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, str(e)
        log(f"{what}: {'ok' if ok else 'FAILED'} ({time.monotonic() - t0:.0f} s)")
        if not ok:
            problems.append(f"{what} failed: {why}")
    return problems


# --------------------------------------------------------------------------
# reading the results


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:,.0f}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return "–"
    return f"{min(values):,.0f}–{max(values):,.0f}"


class Table:
    """Points of one workload grouped by server: medians, spreads, notes."""

    def __init__(self, points: list[dict], lg_key: str) -> None:
        self.points = points
        self.lg_key = lg_key

    def of(self, server: str) -> list[dict]:
        return [p for p in self.points if p["server"] == server]

    def good(self, server: str) -> list[dict]:
        return [p for p in self.of(server) if p["ok"]]

    def per_cpu(self, server: str) -> float | None:
        return med(p["per_cpu"] for p in self.good(server))

    def notes(self, server: str) -> str:
        good = self.good(server)
        notes = []
        bound = sum(1 for p in good if p["server_util"] < BUSY)
        if bound:
            notes.append(f"LG-bound {bound}/{len(good)}")
        noisy = sum(1 for p in good if p["other_util"] >= NOISY)
        if noisy:
            notes.append(f"noisy {noisy}/{len(good)}")
        errs = sum(p.get("errors", 0) if isinstance(p.get("errors"), int) else 0 for p in good)
        errs += sum(sum((p.get("sock_errors") or {}).values()) + p.get("non2xx", 0) for p in good)
        if errs:
            notes.append(f"{errs:,} errors")
        bad = len(self.of(server)) - len(good)
        if bad:
            notes.append(f"{bad} failed")
        return ", ".join(notes)


def workload_table(w, title: str, tab: Table, servers: list[str], missing: dict, ref: str, peers: list[str], unit: str,
                   latency: bool = True) -> None:  # fmt: skip
    w(f"#### {title}")
    w("")
    ref_v = tab.per_cpu(ref)
    best = max(((p, tab.per_cpu(p)) for p in peers if p in servers and tab.per_cpu(p)), key=lambda x: x[1], default=None)
    if best:
        w(f"Best peer: {best[0]}.")
        w("")
    lat = " p50 µs | p90 µs | p99 µs |" if latency else ""
    w(f"| server | {unit}/s | per CPU-s | spread | vs {ref} | vs best peer | server CPU |{lat} notes |")
    w("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" * 3 if latency else "") + "---|")
    for s in servers:
        if s in missing:
            w(f"| {s} | missing | | | | | |" + (" | | |" if latency else "") + f" {missing[s]} |")
            continue
        good = tab.good(s)
        if not good:
            why = "; ".join(sorted({p.get("problem") or "failed" for p in tab.of(s)})) or "not run"
            w(f"| {s} | failed | | | | | |" + (" | | |" if latency else "") + f" {why} |")
            continue
        v = tab.per_cpu(s)
        lat_cells = ""
        if latency:
            lat_cells = " " + " | ".join(fmt(med(p.get(k) for p in good)) for k in ("p50", "p90", "p99")) + " |"
        w(
            f"| {s} | {fmt(med(p['rps'] for p in good))} | {fmt(v)} | {spread([p['per_cpu'] for p in good])} "
            f"| {ratio(v, ref_v)} | {ratio(v, best[1]) if best else '–'} | {med(p['server_util'] for p in good):.0%} "
            f"|{lat_cells} {tab.notes(s)} |"
        )
    w("")


def wl_name(conns: int, depth: int) -> str:
    return f"{conns} connections, " + ("no pipelining" if depth == 1 else f"pipeline {depth}")


def targets(http, echo, python) -> list[tuple[str, str, str]]:
    """Issue 7's targets: (target, server, result) rows."""
    rows = []

    def per(data_points, server, **match):
        return med(
            p["per_cpu"] for p in data_points
            if p["server"] == server and p["ok"] and all(p.get(k) == v for k, v in match.items())
        )  # fmt: skip

    def verdict(a, b, want):
        if not a or not b:
            return "n/a (not measured)"
        r = a / b
        return f"{'met' if r >= want else f'**missed by {(want - r) / want:.0%}**'}: {r:.2f}×"

    if http:
        pts = [p for p in http["points"] if p.get("kind", "main") == "main"]
        for conns, depth in http["workloads"]:
            for s in ("shoal", "shoal-c"):
                if s not in http["servers"] or s in http["missing"]:
                    continue
                a = per(pts, s, conns=conns, depth=depth)
                wants = [("epoll", 0.95), ("fasthttp", 1.1)] if depth == 1 else [("epoll", 0.9), ("hyper", 1.5), ("fasthttp", 1.5)]
                for peer, want in wants:
                    rows.append((f"HTTP {wl_name(conns, depth)}: ≥ {want:g}× {peer}", s, verdict(a, per(pts, peer, conns=conns, depth=depth), want)))
    if echo:
        for conns, _size in echo["workloads"]:
            for s in ("shoal", "shoal-c"):
                if s not in echo["servers"] or s in echo["missing"]:
                    continue
                a = per(echo["points"], s, conns=conns)
                for peer, want in (("tokio", 1.0), ("epoll", 0.95)):
                    rows.append((f"echo {conns} connections: ≥ {want:g}× {peer}", s, verdict(a, per(echo["points"], peer, conns=conns), want)))
    if python:
        sec = python.get("http")
        if sec:
            for conns, depth in sec["keys"]:
                want = 1.3 if depth == 1 else 3.0
                for s in ("shoal-py", "shoal-py-inline"):
                    if s in sec["servers"] and s not in sec["missing"]:
                        a = per(sec["points"], s, conns=conns, depth=depth)
                        rows.append((f"Python HTTP {wl_name(conns, depth)}: ≥ {want:g}× granian", s,
                                     verdict(a, per(sec["points"], "granian", conns=conns, depth=depth), want)))  # fmt: skip
        sec = python.get("echo")
        if sec:
            for conns, _ in sec["keys"]:
                for s in ("shoal-py", "shoal-py-inline"):
                    if s in sec["servers"] and s not in sec["missing"]:
                        a = per(sec["points"], s, conns=conns)
                        rows.append((f"Python echo {conns} connections: ≥ 1× uvloop", s, verdict(a, per(sec["points"], "uvloop", conns=conns), 1.0)))
    for data, label in ((http, "HTTP"), (echo, "echo"), (python, "Python echo")):
        for m in (data or {}).get("memory", []):
            if m["server"].startswith("shoal") and m["ok"] and m.get("per_conn") is not None:
                ok = m["per_conn"] <= 512
                rows.append((f"idle memory ({label}) ≤ 512 B per connection", m["server"],
                             f"{'met' if ok else '**missed**'}: {m['per_conn']:,.0f} B"))  # fmt: skip
    return rows


def memory_rows(data: dict | None, label: str) -> list[tuple[str, str, dict | None, str | None]]:
    if not data:
        return []
    rows = []
    seen = set()
    for m in data.get("memory", []):
        rows.append((label, m["server"], m, None))
        seen.add(m["server"])
    for s, why in (data.get("missing") or {}).items():
        if s not in seen:
            rows.append((label, s, None, why))
    return rows


def generated_section(results: dict, meta: dict) -> str:
    out: list[str] = []
    w = out.append
    http, echo, python, cg = (results.get(k) for k in ("http", "echo", "python", "callgrind"))
    w("## Generated by `make bench`")
    w("")
    w(
        "Everything between the `bench:begin` and `bench:end` markers is rewritten by `make bench` "
        "(`python3 bench/suite.py`); edit bench/suite.py, not this text. Full reports of the same run: "
        "bench/out/suite-*.md (not committed)."
    )
    w("")
    w(f"- run: {meta['date']}, {meta['elapsed'] / 60:.1f} minutes in all (setup and builds included)")
    w(f"- machine: {meta['cpu']}, {os.cpu_count()} logical CPUs; kernel {meta['kernel']}; load average at start {meta['loadavg']}")
    w(f"- each point: a fresh server, {meta['warmup']} s of warm-up load (discarded), {meta['duration']} s measured; {meta['reps']} repetitions, interleaved in rotated order")
    w("")
    w("### Method")
    w("")
    w(
        "- Every server is pinned to CPU 0 and its load generator to CPU 1 (`taskset`), with one reactor, worker "
        "or process (GOMAXPROCS=1, `worker_processes 1`, current-thread runtimes), so every figure is per core. "
        "Each point starts the server fresh, warms it up, then measures for a fixed time; repetitions run "
        "interleaved, the order rotated by one place each time (A B C, B C A, C A B …: no server always runs first "
        "or after the same neighbour). Tables give the median and the spread (min–max)."
    )
    w(
        "- On two cores the load generator (wrk for HTTP, bench/loadgen for echo) often saturates before a fast "
        "server does. Besides requests per second, the tables give **requests per server CPU-second** (the "
        "server's utime+stime over the measured window from /proc/PID/stat, its whole process tree): the figure "
        f"that compares servers. `LG-bound` marks points where the server used less than {BUSY:.0%} of its core."
    )
    w(
        "- Latency: wrk's p50/p90/p99 for unpipelined HTTP (with pipelining wrk's percentiles are not "
        "meaningful), loadgen's for echo. Idle memory: growth of the server's RSS (process tree) over 10,000 idle "
        "connections opened from 127.0.0.1–127.0.0.4."
    )
    w(
        f"- Noise: a point where other processes used {NOISY:.2f} cores or more was measured again (up to "
        f"{meta['retries']} time(s)), keeping the quietest; `noisy` marks those still disturbed. This machine drifts "
        "by 15–25% between runs, so compare ratios within this run, and the instruction counts, which repeat exactly."
    )
    w("")
    if (CHARTS / "http_per_cpu.png").exists():
        w("![HTTP: requests per server CPU-second](charts/http_per_cpu.png)")
        w("")

    if http:
        w("### HTTP `GET /` → `Hello, World!`")
        w("")
        for name in http["servers"]:
            w(f"- `{name}`: {http['descriptions'].get(name, '')}")
        w("")
        main_pts = [p for p in http["points"] if p.get("kind", "main") == "main"]
        for conns, depth in http["workloads"]:
            tab = Table([p for p in main_pts if p["conns"] == conns and p["depth"] == depth], "wrk_util")
            workload_table(w, f"HTTP, {wl_name(conns, depth)}", tab, http["servers"], http["missing"], http["reference"],
                           http["peers"], "req", latency=depth == 1)  # fmt: skip
        sweep = http["settings"].get("sweep") or []
        if sweep:
            w("#### HTTP connection-count sweep, no pipelining")
            w("")
            if (CHARTS / "http_sweep.png").exists():
                w("![HTTP sweep](charts/http_sweep.png)")
                w("")
            w("Requests per server CPU-second (and p99 latency, µs) at each connection count; one run per point.")
            w("")
            w("| server | " + " | ".join(f"{c:,}" for c in sweep) + " |")
            w("|---|" + "---:|" * len(sweep))
            sw = [p for p in http["points"] if p.get("kind") == "sweep"]
            for s in http["sweep_servers"]:
                if s in http["missing"]:
                    w(f"| {s} | " + " | ".join("missing" for _ in sweep) + " |")
                    continue
                cells = []
                for c in sweep:
                    tab = Table([p for p in sw if p["conns"] == c], "wrk_util")
                    good = tab.good(s)
                    if not good:
                        cells.append("failed")
                        continue
                    note = " LG" if any(p["server_util"] < BUSY for p in good) else ""
                    cells.append(f"{fmt(tab.per_cpu(s))} (p99 {fmt(med(p.get('p99') for p in good))}){note}")
                w(f"| {s} | " + " | ".join(cells) + " |")
            w("")
            w("`LG`: load-generator bound (the server below 90% of its core).")
            w("")
    if echo:
        w("### Echo, 64-byte ping-pong")
        w("")
        for name in echo["servers"]:
            w(f"- `{name}`: {echo['descriptions'].get(name, '')}")
        w("")
        for conns, size in echo["workloads"]:
            tab = Table([p for p in echo["points"] if p["conns"] == conns], "loadgen_util")
            workload_table(w, f"Echo, {conns} connections, {size} B", tab, echo["servers"], echo["missing"],
                           echo["reference"], echo["peers"], "round trips")  # fmt: skip
        if (CHARTS / "echo_per_cpu.png").exists():
            w("![Echo: round trips per server CPU-second](charts/echo_per_cpu.png)")
            w("")
    if python:
        w("### Python handler")
        w("")
        if (CHARTS / "python_per_cpu.png").exists():
            w("![Python handlers](charts/python_per_cpu.png)")
            w("")
        for key in ("http", "echo"):
            sec = python.get(key)
            if not sec:
                continue
            for name in sec["servers"]:
                w(f"- {sec['title']} `{name}`: {sec['descriptions'].get(name, '')}")
        w("")
        for key in ("http", "echo"):
            sec = python.get(key)
            if not sec:
                continue
            for k in sec["keys"]:
                if key == "http":
                    pts = [p for p in sec["points"] if p["conns"] == k[0] and p["depth"] == k[1]]
                    title, unit, lat = f"Python HTTP, {wl_name(k[0], k[1])}", "req", k[1] == 1
                else:
                    pts = [p for p in sec["points"] if p["conns"] == k[0]]
                    title, unit, lat = f"Python echo, {k[0]} connections, 64 B", "round trips", True
                workload_table(w, title, Table(pts, ""), sec["servers"], sec["missing"], python["reference"],
                               sec["peers"], unit, latency=lat)  # fmt: skip

    rows = memory_rows(http, "HTTP") + memory_rows(echo, "echo") + memory_rows(python, "Python echo")
    if rows:
        w("### Memory per idle connection")
        w("")
        if (CHARTS / "idle_memory.png").exists():
            w("![Idle memory](charts/idle_memory.png)")
            w("")
        w("| workload | server | RSS before (KiB) | RSS after (KiB) | connections | bytes / connection | notes |")
        w("|---|---|---:|---:|---:|---:|---|")
        for label, s, m, why in rows:
            if m is None:
                w(f"| {label} | {s} | missing | | | | {why} |")
            elif not m["ok"]:
                w(f"| {label} | {s} | failed | | | | {m.get('problem') or ''} |")
            else:
                w(f"| {label} | {s} | {m['before_kib']:,} | {m['after_kib']:,} | {m['conns']:,} | {fmt(m['per_conn'])} | {m.get('problem') or ''} |")
        w("")
    if cg:
        w("### Instructions per request (callgrind)")
        w("")
        if (CHARTS / "callgrind.png").exists():
            w("![Instructions per request](charts/callgrind.png)")
            w("")
        st = cg["settings"]
        w(
            f"User-space instructions per request from `valgrind --tool=callgrind` (bench/callgrind.py): two runs per "
            f"server and depth, `loadgen http --conns {st['conns']}` sending N and N/5 requests (N = {st['requests']:,}; "
            f"{st['py_requests']:,} for Python), the difference of the totals over the difference of the requests. "
            "Repeats to within a fraction of a percent."
        )
        w("")
        depths = st["depths"]
        w("| server | " + " | ".join("no pipelining" if d == 1 else f"pipeline {d}" for d in depths) + " | notes |")
        w("|---|" + "---:|" * len(depths) + "---|")
        for s in cg["servers"]:
            if s in cg["missing"]:
                w(f"| {s} | " + " | ".join("missing" for _ in depths) + f" | {cg['missing'][s]} |")
                continue
            cells, notes = [], []
            for d in depths:
                c = next((c for c in cg["counts"] if c["server"] == s and c["depth"] == d), None)
                if c and c["ok"]:
                    cells.append(fmt(c["per_request"]))
                else:
                    cells.append("failed")
                    notes.append(c["problem"] if c else "not run")
            w(f"| {s} | " + " | ".join(cells) + f" | {'; '.join(n for n in notes if n)} |")
        w("")
        echo_servers = cg.get("echo_servers") or []
        if echo_servers:
            w(
                f"Echo, the same way: instructions per round trip of {st['echo_size']} bytes while `loadgen echo --conns "
                f"{st['echo_conns']} --size {st['echo_size']} --count K` makes K = {st['echo_count']:,} and K/5 round trips."
            )
            w("")
            w("| server | instructions / round trip | notes |")
            w("|---|---:|---|")
            for s in echo_servers:
                c = next((c for c in cg["counts"] if c["server"] == s and c.get("workload") == "echo"), None)
                if s in cg.get("echo_missing", {}):
                    w(f"| {s} | missing | {cg['echo_missing'][s]} |")
                elif c and c["ok"]:
                    w(f"| {s} | {fmt(c['per_request'])} | |")
                else:
                    w(f"| {s} | failed | {c['problem'] if c else 'not run'} |")
            w("")
    sys_rows = []
    for s in (http or {}).get("syscalls", []):
        if s["ok"] and s["requests"]:
            sys_rows.append((f"HTTP, 64 connections, " + ("no pipelining" if s["depth"] == 1 else f"pipeline {s['depth']}"), s["server"], s["total"], s["requests"], s["top"]))
    for s in (echo or {}).get("syscalls", []):
        if s["ok"] and s["round_trips"]:
            sys_rows.append(("echo, 64 connections", s["server"], s["total"], s["round_trips"], s["top"]))
    if sys_rows:
        w("### Syscalls per request (strace -c)")
        w("")
        w("`strace -f -c` on the server while loadgen sends a fixed number of requests (totals include start-up and shutdown).")
        w("")
        w("| workload | server | syscalls / request | top syscalls (per request) |")
        w("|---|---|---:|---|")
        for what, s, total, n, top in sys_rows:
            w(f"| {what} | {s} | {total / n:.3f} | {', '.join(f'{name} {calls / n:.3f}' for name, calls in top[:4])} |")
        w("")
    target_rows = targets(http, echo, python)
    if target_rows:
        w("### Against the targets of issue 7 (requests per server CPU-second, this run)")
        w("")
        w("| target | server | result |")
        w("|---|---|---|")
        for t, s, r in target_rows:
            w(f"| {t} | {s} | {r} |")
        w("")
    missing = []
    for data in (http, echo, cg):
        for s, why in ((data or {}).get("missing") or {}).items():
            missing.append((s, why))
    for key in ("http", "echo"):
        for s, why in (((python or {}).get(key) or {}).get("missing") or {}).items():
            missing.append((s, why))
    problems = list(meta["problems"])
    for data in (http, echo, python, cg):
        problems += (data or {}).get("problems", [])
    if missing or problems:
        w("### Missing peers and problems")
        w("")
        for s, why in dict(missing).items():
            w(f"- missing: `{s}`: {why}")
        for msg in dict.fromkeys(problems):
            w(f"- {msg}")
        w("")
    return "\n".join(out)


def write_results_md(section: str) -> None:
    """Puts `section` between the markers at the end of bench/RESULTS.md (adds them if absent)."""
    text = RESULTS_MD.read_text()
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        head = text[: text.index(BEGIN)]
        tail = text[text.index(END) + len(END) :].lstrip("\n")
        new = head + block + (("\n" + tail) if tail else "")
    else:
        new = text.rstrip("\n") + "\n\n" + block
    RESULTS_MD.write_text(new)
    log(f"rewrote the generated part of {RESULTS_MD.relative_to(ROOT)}")


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smoke run of make bench-quick")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    ap.add_argument("--budget-minutes", type=float, default=25.0, help="the whole run's time limit (default 25; --quick 2)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each point (default 3)")
    ap.add_argument("--duration", type=int, default=2, help="measured seconds of each point (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up seconds before each point (default 1)")
    ap.add_argument("--retries", type=int, help="re-runs of a disturbed point (default 1; --quick 0)")
    ap.add_argument("--quiet-wait", type=float, help="seconds to wait for a quiet machine before a point (default 5; --quick 0)")
    ap.add_argument("--jobs", type=int, help="cargo -j for the builds")
    ap.add_argument("--no-setup", action="store_true", help="install nothing (bench/setup.sh and pip are not run)")
    ap.add_argument("--no-build", action="store_true", help="skip the up-front builds (the harnesses still build what is stale)")
    ap.add_argument("--no-results", action="store_true", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--no-charts", action="store_true", help="do not draw bench/charts/*.png")
    ap.add_argument("--json-dir", help="where the harnesses' JSON goes (default target/bench/suite or target/bench/quick)")
    args = ap.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if any(p not in PARTS for p in args.parts) or args.reps < 1 or args.duration < 1 or args.warmup < 0:
        ap.error(f"bad --parts/--reps/--duration/--warmup (parts are {','.join(PARTS)})")
    if args.quick:
        args.no_setup = True
        args.budget_minutes = min(args.budget_minutes, 2.0)
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 5.0
    args.json_dir = Path(args.json_dir) if args.json_dir else TARGET / "bench" / ("quick" if args.quick else "suite")
    args.md_dir = args.json_dir if args.quick else BENCH / "out"
    args.json_dir.mkdir(parents=True, exist_ok=True)
    args.md_dir.mkdir(parents=True, exist_ok=True)
    deadline = START + args.budget_minutes * 60

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    problems: list[str] = []
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z")
    try:
        if not args.no_setup:
            rc, _ = run_child(["bash", "bench/setup.sh"], 900, "setup")
            if rc != 0:
                problems.append(f"bench/setup.sh {'timed out' if rc is None else f'exited {rc}'}: peers it installs are reported missing")
        if not args.no_build:
            problems += build_all(args)
        for f in args.json_dir.glob("*.json"):
            f.unlink()
        parts = plan(args)
        if args.quick:
            skipped = [p for p in args.parts if p not in [name for name, _, _ in parts]]
            for p in skipped:
                why = {"python": "target/venv has no shoal (make wheel)", "callgrind": "valgrind is not installed"}.get(p, "")
                log(f"{p}: skipped: {why}")
                problems.append(f"{p}: skipped in the quick run: {why}")
        statuses: dict[str, int | None] = {}
        planned_left = sum(t for _, _, t in parts)
        for name, argv, planned in parts:
            planned_left -= planned
            left = deadline - time.monotonic()
            # Up to twice its plan, leaving the later parts half of theirs at least.
            timeout = max(60.0, min(planned * 2, left - planned_left * 0.5))
            rc, took = run_child(argv, timeout, name)
            statuses[name] = rc
            if rc is None:
                problems.append(f"{name}: stopped after {took:.0f} s to keep the run within {args.budget_minutes:g} minutes")
        results = {name: load(args.json_dir / f"{name}.json") for name, _, _ in parts}
        broken = [n for n, r in results.items() if r is None]
        for n in broken:
            problems.append(f"{n}: the harness wrote no results (status {statuses.get(n)}): see its log above")
        elapsed = time.monotonic() - START
        meta = {
            "date": date, "elapsed": elapsed, "cpu": cpu_model(), "kernel": os.uname().release, "loadavg": loadavg,
            "reps": args.reps, "duration": args.duration, "warmup": args.warmup, "retries": args.retries,
            "problems": problems,
        }  # fmt: skip
        combined = {"meta": meta, **{k: v for k, v in results.items() if v is not None}}
        (args.json_dir / "results.json").write_text(json.dumps(combined, indent=1) + "\n")

        if args.quick:
            return quick_verdict(results, statuses, broken, args, meta)

        if not args.no_charts:
            draw_charts(args, problems)
        section = generated_section(results, meta)
        if not args.no_results:
            write_results_md(section)
        (args.md_dir / "suite-summary.md").write_text(section + "\n")
        log(f"done in {(time.monotonic() - START) / 60:.1f} minutes (budget {args.budget_minutes:g})")
        return 1 if broken else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130


def draw_charts(args, problems: list[str]) -> None:
    py = BENCH_VENV_PY
    if not python_can_import(py, "matplotlib"):
        if not args.no_setup and py.exists():
            run_child([str(py), "-m", "pip", "install", "-q", "-r", "bench/python/requirements.txt"], 600, "pip (matplotlib)")
        if not python_can_import(py, "matplotlib"):
            problems.append(f"no charts: matplotlib does not import in {py.relative_to(ROOT)} (bench/python/requirements.txt)")
            return
    rc, _ = run_child([str(py), "bench/charts.py", str(args.json_dir / "results.json"), str(CHARTS)], 300, "charts")
    if rc != 0:
        problems.append(f"bench/charts.py {'timed out' if rc is None else f'exited {rc}'}")


def quick_verdict(results: dict, statuses: dict, broken: list[str], args, meta) -> int:
    """The smoke check's verdict: non-zero only when a harness broke."""
    bad = [f"{n}: no results (status {statuses.get(n)})" for n in broken]
    for name, data in results.items():
        if data is None:
            continue
        if name == "python":
            pts = [p for k in ("http", "echo") if data.get(k) for p in data[k]["points"]]
        elif name == "callgrind":
            pts = [{"server": c["server"], "ok": c["ok"], "problem": c["problem"]} for c in data["counts"]]
        else:
            pts = data["points"]
        if not pts:
            bad.append(f"{name}: no point was run")
        for p in pts:
            if not p["ok"]:
                bad.append(f"{name}: {p['server']} could not be measured: {p.get('problem')}")
        for m in data.get("memory", []):
            if not m["ok"]:
                bad.append(f"{name}: idle memory of {m['server']} could not be measured: {m.get('problem')}")
    lines = ["# bench-quick (smoke run of the benchmark harnesses)", ""]
    lines.append(f"{meta['date']}, {meta['elapsed']:.0f} s; reports and JSON in {args.json_dir.relative_to(ROOT)}/")
    lines.append("")
    for name, data in results.items():
        if data is None:
            continue
        if name == "python":
            pts = [{**p, "label": f"python {k}"} for k in ("http", "echo") if data.get(k) for p in data[k]["points"]]
        else:
            pts = data.get("points") or data.get("counts", [])
        for p in pts:
            if "per_request" in p:
                if p.get("workload") == "echo":
                    where, unit = "echo", "instructions/round trip"
                else:
                    where, unit = f"pipeline {p['depth']}", "instructions/request"
                lines.append(f"- {name} {p['server']} {where}: {fmt(p['per_request'])} {unit}")
            else:
                extra = f", pipeline {p['depth']}" if p.get("depth", 1) > 1 else ""
                label = p.get("label") or (f"{name} sweep" if p.get("kind") == "sweep" else name)
                lines.append(f"- {label} {p['server']} {p['conns']} conns{extra}: {fmt(p['rps'])}/s, {fmt(p['per_cpu'])} per CPU-s")
        for m in data.get("memory", []):
            lines.append(f"- {name} idle memory {m['server']}: {fmt(m.get('per_conn'))} B/connection")
    for msg in meta["problems"]:
        lines.append(f"- note: {msg}")
    for msg in bad:
        lines.append(f"- BROKEN: {msg}")
    (args.json_dir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"quick run done in {time.monotonic() - START:.0f} s: {'BROKEN' if bad else 'the harnesses work'}")
    return 1 if bad else 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
