#!/usr/bin/env python3
"""Python-binding benchmark harness: shoal's Python package against granian and uvloop, with the raw-epoll C servers as the reference.

    python3 bench/python_binding.py [--quick] [--reps R] [--duration S] [--warmup S]
                                    [--parts http,echo,batch,memory,syscalls]
                                    [--http-servers LIST] [--echo-servers LIST]
                                    [--conns 64[,512]] [--pipeline 1,16]
                                    [--gil-batches 1,4,16,64] [--batch-workers N]
                                    [--idle-conns N] [--out FILE]
                                    [--no-build] [--no-setup] [--no-venv-setup]

Every server runs one core's worth of threads pinned to CPU 0 (`taskset -c 0`) with its
load generator pinned to CPU 1, started fresh for each run, interleaved per repetition
(A B C, B C A, C A B: the order rotated by one place each time), exactly as bench/http.py and bench/echo.py do; this script reuses
their measurement code (loaded from those files), so the numbers mean the same:

- http: wrk (`-t1`, 64 connections, no pipelining and 16 pipelined requests per write,
  bench/wrk/pipeline.lua) against `GET /` -> `200 Hello, World!`; requests per server
  CPU-second from /proc around wrk's measured window.
- echo: `loadgen echo` with 64-byte messages; round trips per server CPU-second.
- batch: shoal-py's HTTP server in workers mode with gil_batch 1, 4, 16 and 64 (the
  callbacks a worker runs per interpreter acquisition), on the http workloads.
- memory: resident memory that `loadgen idle --conns N` (10 000) adds to the echo servers.
- syscalls: `strace -f -c` per request (`loadgen http`, a fixed number of requests) and
  per echoed message (`loadgen echo --count`).

Servers (bench/python/*.py, run by target/bench-venv's interpreter; they follow the
example-server convention: `--host H --port P --threads N`, one `listening on HOST:PORT`
line, exit 0 on SIGTERM): `shoal-py` (shoal's defaults: workers=4, gil_batch=16),
`shoal-py-w1` (workers=1), `shoal-py-inline` (inline=True), `granian` (an RSGI app, one
worker process, one runtime thread), `uvloop` (HTTP: an asyncio Protocol parsing with
httptools and answering a canned response; echo: an asyncio Protocol), `epoll`
(bench/c/epoll_http.c, bench/c/epoll_echo.c).

The venv: target/bench-venv, made with `python3 -m venv` (the interpreter running this
script) and `pip install -r bench/python/requirements.txt` (granian, uvloop, httptools,
maturin; pinned), then shoal from `pip install --no-build-isolation ./python` with
CARGO_TARGET_DIR=target (the build `make wheel` shares) unless --no-build. wrk, strace
and taskset come from `bash bench/setup.sh wrk strace taskset` when missing.

A Markdown report goes to stdout (and to --out FILE); progress goes to stderr. Standard
library only. Every child process has a timeout and is killed on the way out; every
server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import (
    BUSY_THRESHOLD,
    CLK_TCK,
    NOISE_THRESHOLD,
    ROOT,
    TARGET,
    ServerSpec,
    Tools,
    cpu_model,
    fmt_int,
    kill_all_live,
    log,
    measure_with_retries,
    rotated,
    on_sigterm,
    run_build,
    spread,
    write_json,
)


def _load(name: str, filename: str):
    """bench/http.py and bench/echo.py as modules (not `import http`: that name is the
    standard library's package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / filename)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bh = _load("bench_http", "http.py")
be = _load("bench_echo", "echo.py")

BENCH_PY = ROOT / "bench" / "python"
EXAMPLES_PY = ROOT / "examples" / "python"
REQUIREMENTS = BENCH_PY / "requirements.txt"
VENV = TARGET / "bench-venv"
SETUP_TIMEOUT = 1800
REFERENCE = "epoll"

HTTP_SERVERS = ["shoal-py", "shoal-py-w1", "shoal-py-inline", "granian", "uvloop", "epoll"]
ECHO_SERVERS = ["shoal-py", "shoal-py-w1", "shoal-py-inline", "uvloop", "epoll"]
SHOAL_VARIANTS = ["shoal-py", "shoal-py-w1", "shoal-py-inline"]
PARTS = ["http", "echo", "batch", "memory", "syscalls"]

DESCRIPTIONS = {
    "shoal-py": "examples/python/{example}.py (the project's example, every route of it): shoal's Python package with "
    "its defaults, one reactor (`--threads 1`) and `workers=4` threads running the callbacks, `gil_batch=16`",
    "shoal-py-w1": "the same with `workers=1`: one reactor and one worker thread",
    "shoal-py-inline": "the same with `inline=True`: the callbacks run on the reactor thread",
    "granian": "bench/python/granian_hello.py: an RSGI app returning `response_str(200, ..., \"Hello, World!\")`; granian, "
    "one worker process, one runtime thread, HTTP/1, uvloop; its supervisor process is counted too",
    "uvloop": "bench/python/uvloop_{kind}.py: an asyncio Protocol on uvloop ({what})",
    "epoll": "bench/c/epoll_{kind}.c (`cc -O2`): one thread, raw edge-triggered epoll; the practical limit of one core",
}
UVLOOP_WHAT = {
    "http": "httptools parses each request, a canned response bytes object answers it, one write per read",
    "echo": "`data_received` writes the bytes back",
}


def describe(name: str, kind: str) -> str:
    if name.startswith("shoal-py-b"):
        return f"shoal-py with `gil_batch={name[len('shoal-py-b'):]}`"
    example = "http_hello" if kind == "http" else "echo"
    return DESCRIPTIONS[name].format(kind=kind, what=UVLOOP_WHAT[kind], example=example)


# --------------------------------------------------------------------------
# setup


def run_step(cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: int = SETUP_TIMEOUT) -> str | None:
    """Runs a setup command; returns why it failed, or None."""
    shown = shlex.join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd])
    log(f"setup: {shown}")
    try:
        res = subprocess.run(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"{what}: `{shown}` timed out after {timeout}s"
    except OSError as e:
        return f"{what}: `{shown}`: {e}"
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        return f"{what}: `{shown}` failed (status {res.returncode}): " + " / ".join(lines[-3:])
    return None


def ensure_tools(need_strace: bool, args, problems: list[str]) -> None:
    need = [t for t in ("wrk", "taskset") if shutil.which(t) is None]
    if need_strace and shutil.which("strace") is None:
        need.append("strace")
    if not need:
        return
    if args.no_setup:
        problems.append(f"not installed, and --no-setup: {', '.join(need)}")
        return
    why = run_step(["bash", str(bh.SETUP_SCRIPT), *need], "bench/setup.sh")
    if why:
        problems.append(why)


def ensure_venv(args, problems: list[str]) -> Path | None:
    """target/bench-venv with the peers, and shoal built from ./python; returns its python."""
    venv = Path(args.venv).resolve() if args.venv else VENV
    py = venv / "bin" / "python"
    if not py.exists():
        if args.no_venv_setup:
            problems.append(f"{venv} does not exist, and --no-venv-setup")
            return None
        why = run_step([sys.executable, "-m", "venv", str(venv)], "venv")
        if why:
            shutil.rmtree(venv, ignore_errors=True)
            why2 = run_step(["sh", str(ROOT / "python" / "install-venv-support.sh")], "venv support")
            why = why2 or run_step([sys.executable, "-m", "venv", str(venv)], "venv")
            if why:
                problems.append(why)
                return None
    stamp = venv / ".bench-ready"
    if not args.no_venv_setup and (not stamp.exists() or stamp.stat().st_mtime < REQUIREMENTS.stat().st_mtime):
        why = run_step([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], "pip")
        if why:
            problems.append(why)
            return py
        stamp.touch()
    if not args.no_build:
        env = {"CARGO_TARGET_DIR": str(TARGET), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
        if args.jobs:
            env["CARGO_BUILD_JOBS"] = str(args.jobs)
        cmd = [str(py), "-m", "pip", "install", "-q", "--no-build-isolation", "--force-reinstall", "--no-deps", "./python"]
        ok, why = run_build(cmd, ROOT, None, env)
        if not ok:
            problems.append(f"shoal's Python package: {why}")
    return py


def importable(py: Path, module: str) -> str | None:
    """None if `module` imports in the venv, else why not."""
    try:
        res = subprocess.run(
            [str(py), "-c", f"import {module}"], cwd=ROOT, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`import {module}` in {py}: {e}"
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        return f"`import {module}` fails in {py.parent.parent.relative_to(ROOT)}: {last}"
    return None


def versions(py: Path) -> str:
    code = (
        "import importlib.metadata as m, platform\n"
        "out = ['Python ' + platform.python_version()]\n"
        "for p in ('shoal', 'granian', 'uvloop', 'httptools'):\n"
        "    try: out.append(p + ' ' + m.version(p))\n"
        "    except Exception: out.append(p + ' missing')\n"
        "print(', '.join(out))\n"
    )
    try:
        res = subprocess.run([str(py), "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        return res.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def build_loadgen(args, problems: list[str]) -> Path | None:
    if args.loadgen:
        return Path(args.loadgen).resolve()
    loadgen = TARGET / "release" / "loadgen"
    if not args.no_build:
        ok, why = run_build(["cargo", "build", "--release", "-p", "shoal-loadgen"], ROOT, args.jobs)
        if not ok:
            if not loadgen.exists():
                problems.append(f"loadgen cannot be built: {why}")
                return None
            problems.append(f"loadgen build failed, using the existing {loadgen.relative_to(ROOT)}: {why}")
    if not loadgen.exists():
        problems.append(f"loadgen missing: {loadgen}")
        return None
    return loadgen


def python_spec(name: str, kind: str, py: Path | None, missing: dict[str, str | None], batch_workers: int) -> ServerSpec:
    base = ["--host", bh.HOST, "--port", "0", "--threads", "1"]
    if name.startswith("shoal-py"):
        script, module = EXAMPLES_PY / ("http_hello.py" if kind == "http" else "echo.py"), "shoal"
        extra = {"shoal-py": [], "shoal-py-w1": ["--workers", "1"], "shoal-py-inline": ["--inline"]}.get(name)
        if extra is None:  # shoal-py-bN
            extra = ["--workers", str(batch_workers), "--gil-batch", name[len("shoal-py-b") :]]
    elif name == "granian":
        script, module, extra = BENCH_PY / "granian_hello.py", "granian", []
    elif name == "uvloop":
        script, module, extra = BENCH_PY / f"uvloop_{kind}.py", "uvloop" if kind == "echo" else "httptools", []
    else:
        raise AssertionError(name)
    spec = ServerSpec(name, py or Path("/nonexistent/python"), args=[str(script.relative_to(ROOT)), *base, *extra])
    if py is None:
        spec.missing = "no bench venv (see Problems)"
    elif module == "httptools":
        spec.missing = missing.get("uvloop") or missing.get("httptools")
    else:
        spec.missing = missing.get(module)
    return spec


def epoll_spec(kind: str, args) -> ServerSpec:
    spec = ServerSpec(REFERENCE, TARGET / "bench" / f"epoll_{kind}")
    src = ROOT / "bench" / "c" / f"epoll_{kind}.c"
    cc = os.environ.get("CC", "cc")
    bh.build_c_or_go(spec, src, [cc, "-O2", "-Wall", "-Wextra", "-o", str(spec.binary), str(src)], None, args)
    if spec.missing is None and not spec.binary.exists():
        spec.missing = f"{spec.binary.relative_to(ROOT)} does not exist"
    return spec


# --------------------------------------------------------------------------
# report helpers


def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def median_per_cpu(points, name: str, key: tuple) -> float | None:
    good = [p.per_cpu for p in points if p.server == name and point_key(p) == key and p.ok]
    return statistics.median(good) if good else None


def point_key(p) -> tuple:
    return (p.conns, getattr(p, "depth", 0))


def ratio(v: float | None, ref: float | None) -> str:
    return f"{v / ref:.2f}×" if v and ref else "n/a"


def pct(v: float) -> str:
    return f"{v:.0%}" if v == v else "n/a"


def us(v: float) -> str:
    return f"{v:,.0f}" if v == v else "–"


def http_name(key: tuple) -> str:
    conns, depth = key
    return f"{conns} conns, " + ("no pipelining" if depth == 1 else f"pipeline {depth}")


def echo_name(key: tuple) -> str:
    return f"{key[0]} conns, 64 B"


def notes_for(good: list, pts: list) -> list[str]:
    notes = []
    bound = sum(1 for p in good if p.server_util < BUSY_THRESHOLD)
    if bound:
        notes.append(f"LG-bound ({bound}/{len(good)})")
    noisy = sum(1 for p in good if p.other_util >= NOISE_THRESHOLD)
    if noisy:
        notes.append(f"noisy ({noisy}/{len(good)})")
    bad = len(pts) - len(good)
    if bad:
        notes.append(f"{bad} failed rep(s)")
    return notes


def errors_of(p) -> int:
    if hasattr(p, "non2xx"):
        return p.errors + p.non2xx
    return p.errors


def lg_util(p) -> float:
    return p.wrk_util if hasattr(p, "wrk_util") else p.loadgen_util


@dataclass
class Section:
    """One set of runs: a kind (http/echo), its servers, workloads and points."""

    title: str
    kind: str
    servers: list[str]
    specs: dict[str, ServerSpec]
    keys: list[tuple]
    points: list
    peers: list[str]  # the columns `vs <peer>`


def summary_table(sec: Section, w) -> None:
    name_of = http_name if sec.kind == "http" else echo_name
    unit = "requests" if sec.kind == "http" else "round trips"
    lg = "wrk" if sec.kind == "http" else "loadgen"
    w(
        f"Median {unit} per server CPU-second, its ratio to {REFERENCE}"
        + "".join(f" and to {peer}" for peer in sec.peers)
        + f", and the medians of the server's share of its core and the load generator's ({lg}) share of its own. A "
        f"server below {BUSY_THRESHOLD:.0%} waited on the load generator (`LG-bound`): its {unit}/s measure the load "
        "generator, and per CPU-s is the figure that compares servers."
    )
    w("")
    peer_cols = "".join(f" vs {peer} |" for peer in sec.peers)
    w(f"| workload | server | per CPU-s | vs {REFERENCE} |{peer_cols} server CPU | {lg} CPU |")
    w("|---|---|" + "---:|" * (4 + len(sec.peers)))
    for key in sec.keys:
        ref = median_per_cpu(sec.points, REFERENCE, key)
        for name in sec.servers:
            if sec.specs[name].missing:
                w(f"| {name_of(key)} | {name} | missing |" + " |" * (3 + len(sec.peers)))
                continue
            m = median_per_cpu(sec.points, name, key)
            if m is None:
                w(f"| {name_of(key)} | {name} | failed |" + " |" * (3 + len(sec.peers)))
                continue
            good = [p for p in sec.points if p.server == name and point_key(p) == key and p.ok]
            peers = "".join(f" {ratio(m, median_per_cpu(sec.points, peer, key))} |" for peer in sec.peers)
            w(
                f"| {name_of(key)} | {name} | {fmt_int(m)} | {ratio(m, ref)} |{peers} {pct(med(p.server_util for p in good))} "
                f"| {pct(med(lg_util(p) for p in good))} |"
            )
    w("")


def detail_tables(sec: Section, w) -> None:
    name_of = http_name if sec.kind == "http" else echo_name
    unit = "req" if sec.kind == "http" else "rt"
    lg = "wrk" if sec.kind == "http" else "loadgen"
    for key in sec.keys:
        w(f"### {sec.title}: {name_of(key)}")
        w("")
        peer_cols = "".join(f" vs {peer} |" for peer in sec.peers)
        w(
            f"| server | {unit}/s | spread | per CPU-s | spread | vs {REFERENCE} |{peer_cols} user ns/{unit} | sys ns/{unit} "
            f"| server CPU | {lg} CPU | others | p50 µs | p99 µs | errors | notes |"
        )
        w("|---|" + "---:|" * (12 + len(sec.peers)) + "---|")
        ref = median_per_cpu(sec.points, REFERENCE, key)
        for name in sec.servers:
            blanks = " |" * (12 + len(sec.peers))
            if sec.specs[name].missing:
                w(f"| {name} | missing{blanks[2:]} {sec.specs[name].missing} |")
                continue
            pts = [p for p in sec.points if p.server == name and point_key(p) == key]
            good = [p for p in pts if p.ok]
            if not good:
                why = "; ".join(sorted({p.problem or "failed" for p in pts})) or "not run"
                w(f"| {name} | failed{blanks[2:]} {why} |")
                continue
            rps = [p.rps for p in good]
            per = [p.per_cpu for p in good]
            m = statistics.median(per)
            peers = "".join(f" {ratio(m, median_per_cpu(sec.points, peer, key))} |" for peer in sec.peers)
            notes = notes_for(good, pts)
            w(
                f"| {name} | {fmt_int(med(rps))} | {spread(rps)} | {fmt_int(m)} | {spread(per)} | {ratio(m, ref)} |{peers} "
                f"{med(p.user_ns for p in good):,.0f} | {med(p.sys_ns for p in good):,.0f} | {pct(med(p.server_util for p in good))} "
                f"| {pct(med(lg_util(p) for p in good))} | {med(p.other_util for p in good):.2f} | {us(med(p.p50 for p in good))} "
                f"| {us(med(p.p99 for p in good))} | {sum(errors_of(p) for p in good):,} | {', '.join(notes)} |"
            )
        w("")


def every_run(sec: Section, w) -> None:
    name_of = http_name if sec.kind == "http" else echo_name
    w(f"### {sec.title}")
    w("")
    w("| workload | rep | server | per s | per CPU-s | user ns | sys ns | server CPU | LG CPU | others | errors | notes |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for p in sec.points:
        if not p.ok:
            w(f"| {name_of(point_key(p))} | {p.rep} | {p.server} | failed | | | | | | | | {p.problem} |")
            continue
        notes = ["LG-bound"] if p.server_util < BUSY_THRESHOLD else []
        if p.other_util >= NOISE_THRESHOLD:
            notes.append("noisy")
        if p.problem:
            notes.append(p.problem)
        w(
            f"| {name_of(point_key(p))} | {p.rep} | {p.server} | {fmt_int(p.rps)} | {fmt_int(p.per_cpu)} | {p.user_ns:,.0f} "
            f"| {p.sys_ns:,.0f} | {pct(p.server_util)} | {pct(lg_util(p))} | {p.other_util:.2f} | {errors_of(p):,} | {', '.join(notes)} |"
        )
    w("")


def target_lines(http: Section | None, echo: Section | None, memres, w) -> None:
    """The issue's targets, per shoal-py variant: met or missed, with the numbers."""
    rows = []

    def cmp(sec, name, key, peer, want):
        a, b = median_per_cpu(sec.points, name, key), median_per_cpu(sec.points, peer, key)
        if not a or not b:
            return "n/a"
        r = a / b
        return f"{'met' if r >= want else '**missed**'}: {r:.2f}× ({fmt_int(a)} vs {fmt_int(b)})"

    if http:
        for key in http.keys:
            want = 1.3 if key[1] == 1 else 3.0
            for name in SHOAL_VARIANTS:
                if name in http.servers and not http.specs[name].missing:
                    rows.append((f"HTTP hello ≥ {want:g}× granian, {http_name(key)}", name, cmp(http, name, key, "granian", want)))
    if echo:
        for key in echo.keys:
            for name in SHOAL_VARIANTS:
                if name in echo.servers and not echo.specs[name].missing:
                    rows.append((f"echo ≥ 1.0× uvloop, {echo_name(key)}", name, cmp(echo, name, key, "uvloop", 1.0)))
    if memres:
        uv = memres.get("uvloop")
        for name in SHOAL_VARIANTS:
            r = memres.get(name)
            if r is None or not r.ok:
                continue
            if uv is not None and uv.ok:
                verdict = "met" if r.per_conn < uv.per_conn else "**missed**"
                rows.append(("idle memory per connection below uvloop's", name,
                             f"{verdict}: {fmt_int(r.per_conn)} B vs {fmt_int(uv.per_conn)} B"))  # fmt: skip
    if not rows:
        w("No shoal-py runs with their peers in this report.")
        w("")
        return
    w("| target | server | result |")
    w("|---|---|---|")
    for t, n, r in rows:
        w(f"| {t} | {n} | {r} |")
    w("")


def report(args, cmdline, settings, http, echo, batch, memres, sysres, problems) -> str:
    out: list[str] = []
    w = out.append
    w("# shoal Python binding benchmark")
    w("")
    w(f"`{cmdline}`")
    w("")
    w(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}")
    w(f"- kernel: {os.uname().release}")
    w(f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    w(f"- load average at start: {settings['loadavg']}")
    w(f"- {settings['versions']}; wrk: {settings['wrk_version']}")
    w(
        f"- {settings['reps']} rep(s); each run: a fresh server, a {settings['warmup']:g} s warm-up (discarded), then "
        f"{settings['duration']:g} s measured; server on CPU {settings['server_cpu']}, load generator on CPU "
        f"{settings['loadgen_cpu']}" + ("" if settings["taskset"] else " (taskset missing: NOT pinned)")
    )
    w("")
    w("Servers (one core each; HTTP: `GET /` → `200 Hello, World!`, text/plain, keep-alive):")
    w("")
    for sec in (http, echo, batch):
        if sec is None:
            continue
        for name in sec.servers:
            w(f"- {sec.title} `{name}`: {describe(name, sec.kind)}")
    w("")
    w("How to read the tables:")
    w("")
    w(
        "- `per CPU-s` = requests (round trips) per second of server CPU: utime+stime of the server's process tree "
        "(threads, and granian's worker process) from /proc over the measured window. Medians over reps; `spread` is min–max."
    )
    w(f"- `user` / `sys ns` split the server's CPU per request (tick resolution, 1/{CLK_TCK} s).")
    w(
        f"- `server CPU` is the server's share of its core. Below {BUSY_THRESHOLD:.0%} (`LG-bound`) the load generator, "
        "not the server, was the limit; per CPU-s still compares servers."
    )
    w(
        f"- `others` = CPU (in cores) everything else used during the window. Runs where it reached {NOISE_THRESHOLD:.2f} "
        f"were re-run up to {args.retries} time(s), keeping the quietest."
    )
    w("- p50/p99: wrk's percentiles (unpipelined HTTP only) or loadgen's (echo), µs.")
    w("")
    if http or echo or memres:
        w("## Against the targets")
        w("")
        target_lines(http, echo, memres, w)
    for sec in (http, echo):
        if sec is None:
            continue
        w(f"## {sec.title}")
        w("")
        summary_table(sec, w)
        detail_tables(sec, w)
    if batch is not None:
        w(f"## {batch.title}")
        w("")
        w(
            f"shoal-py's HTTP server in workers mode (`workers={args.batch_workers}`) with each `gil_batch`; the ratio is "
            "to `gil_batch=16` (the default)."
        )
        w("")
        w("| gil_batch | " + " | ".join(http_name(k) for k in batch.keys) + " |")
        w("|---|" + "---:|" * len(batch.keys))
        for name in batch.servers:
            if batch.specs[name].missing:
                w(f"| {name} | " + " | ".join("missing" for _ in batch.keys) + " |")
                continue
            cells = []
            for key in batch.keys:
                m = median_per_cpu(batch.points, name, key)
                base = median_per_cpu(batch.points, "shoal-py-b16", key)
                pts = [p for p in batch.points if p.server == name and point_key(p) == key and p.ok]
                spr = spread([p.per_cpu for p in pts])
                cells.append("failed" if m is None else f"{fmt_int(m)} ({ratio(m, base)}; {spr}) {pct(med(p.server_util for p in pts))}")
            w(f"| {name[len('shoal-py-b'):]} | " + " | ".join(cells) + " |")
        w("")
    w("## Idle connection memory")
    w("")
    if memres is None:
        w("skipped")
    else:
        w(f"Echo servers: VmRSS before and 1 s after `loadgen idle --conns {settings['idle_conns']}` (one 64-byte echo on each).")
        w("")
        w("| server | RSS before (KiB) | RSS after (KiB) | connections | bytes / connection | notes |")
        w("|---|---:|---:|---:|---:|---|")
        for name, r in memres.items():
            if r is None:
                w(f"| {name} | missing | | | | |")
            elif not r.ok:
                w(f"| {name} | failed | | | | {r.problem} |")
            else:
                w(f"| {name} | {r.before_kib:,} | {r.after_kib:,} | {r.conns:,} | {fmt_int(r.per_conn)} | {r.problem or ''} |")
    w("")
    w("## Syscalls")
    w("")
    if sysres is None:
        w("skipped")
    else:
        w(
            f"`strace -f -c` on the server (its whole process tree) while `loadgen http --conns 64 --requests "
            f"{settings['strace_requests']} --pipeline D` or `loadgen echo --conns 64 --size 64 --count "
            f"{settings['strace_requests']}` runs; totals include start-up (the interpreter's imports), accepts and shutdown."
        )
        w("")
        w("| workload | server | syscalls | requests | per request | top syscalls (per request) | notes |")
        w("|---|---|---:|---:|---:|---|---|")
        for (what, name), r in sysres.items():
            if r is None:
                w(f"| {what} | {name} | missing | | | | |")
                continue
            n = getattr(r, "requests", 0) or getattr(r, "round_trips", 0)
            if not r.ok or not n:
                w(f"| {what} | {name} | failed | | | | {r.problem} |")
                continue
            top = ", ".join(f"{s} {c / n:.3f}" for s, c in r.top[:5])
            w(f"| {what} | {name} | {r.total:,} | {n:,} | {r.total / n:.3f} | {top} | {r.problem or ''} |")
    w("")
    w("## Every run")
    w("")
    for sec in (http, echo, batch):
        if sec is not None:
            every_run(sec, w)
    all_problems = list(problems)
    for sec in (http, echo, batch):
        for p in sec.points if sec else []:
            if p.problem:
                all_problems.append(f"{sec.title} {p.server}, rep {p.rep}: {p.problem}")
    if all_problems:
        w("## Problems")
        w("")
        for msg in all_problems:
            w(f"- {msg}")
        w("")
    return "\n".join(out)


def json_results(cmdline, settings, http, echo, batch, memres, sysres, problems) -> dict:
    """The results as plain data (bench/suite.py reads them)."""

    def section(sec: Section | None):
        if sec is None:
            return None
        return {
            "title": sec.title, "kind": sec.kind, "servers": sec.servers, "peers": sec.peers,
            "descriptions": {n: describe(n, sec.kind) for n in sec.servers},
            "missing": {n: sec.specs[n].missing for n in sec.servers if sec.specs[n].missing},
            "keys": [list(k) for k in sec.keys], "points": [asdict(p) for p in sec.points],
        }  # fmt: skip

    return {
        "kind": "python", "cmdline": cmdline, "settings": settings, "reference": REFERENCE,
        "http": section(http), "echo": section(echo), "batch": section(batch),
        "memory": [
            {"server": n, "ok": bool(r and r.ok), "before_kib": r.before_kib if r else 0,
             "after_kib": r.after_kib if r else 0, "conns": r.conns if r else 0,
             "per_conn": r.per_conn if r else None, "problem": (r.problem if r else "missing")}
            for n, r in (memres or {}).items()
        ],
        "syscalls": [
            {"workload": what, "server": n, "ok": bool(r and r.ok), "total": r.total if r else 0,
             "requests": (getattr(r, "requests", 0) or getattr(r, "round_trips", 0)) if r else 0,
             "problem": (r.problem if r else "missing")}
            for (what, n), r in (sysres or {}).items()
        ],
        "problems": problems,
    }  # fmt: skip


# --------------------------------------------------------------------------


def names(text: str, allowed: list[str], what: str, ap) -> list[str]:
    got = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in got if s not in allowed]
    if bad:
        ap.error(f"{what}: unknown {', '.join(bad)} (known: {','.join(allowed)})")
    return [s for s in allowed if s in got]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s measured after 1 s warm-up, 2,000 idle conns, fewer strace requests")
    ap.add_argument("--reps", type=int, help="repetitions per server and workload (default 3)")
    ap.add_argument("--duration", type=int, help="measured seconds per run (default 5)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds before each measured run (default 2)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    ap.add_argument("--http-servers", default=",".join(HTTP_SERVERS), help="comma list of " + ",".join(HTTP_SERVERS))
    ap.add_argument("--echo-servers", default=",".join(ECHO_SERVERS), help="comma list of " + ",".join(ECHO_SERVERS))
    ap.add_argument("--conns", default="64", help="comma list of connection counts (default 64)")
    ap.add_argument("--pipeline", default="1,16", help="HTTP pipeline depths (default 1,16)")
    ap.add_argument("--gil-batches", default="1,4,16,64", help="gil_batch values of the batch part (default 1,4,16,64)")
    ap.add_argument("--batch-workers", type=int, default=4, help="workers of the batch part (default 4, shoal's default)")
    ap.add_argument("--batch-conns", default="64", help="connection counts of the batch part (default 64)")
    ap.add_argument("--idle-conns", type=int, help="connections of the idle-memory run (default 10000; --quick 2000)")
    ap.add_argument("--strace-requests", type=int, help="requests of each strace run (default 50000; --quick 10000)")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--json", help="also write the results as JSON to this file (for bench/suite.py)")
    ap.add_argument("--venv", help=f"the bench venv (default {VENV.relative_to(ROOT)})")
    ap.add_argument("--no-build", action="store_true", help="use the binaries and the installed shoal package as they are")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh for missing tools")
    ap.add_argument("--no-venv-setup", action="store_true", help="do not create the venv or install its packages")
    ap.add_argument("--jobs", type=int, help="cargo -j for the builds")
    ap.add_argument("--loadgen", help="use this loadgen binary instead of building target/release/loadgen")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a run that others disturbed (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle machine before each run (default 30)")
    ap.add_argument("--server-cpu", default="0", help="CPU the servers are pinned to (default 0)")
    ap.add_argument("--loadgen-cpu", default="1", help="CPU wrk and loadgen are pinned to (default 1)")
    args = ap.parse_args()

    cmdline = shlex.join(["python3", *sys.argv])
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    idle_conns = args.idle_conns or (2_000 if args.quick else 10_000)
    strace_requests = args.strace_requests or (10_000 if args.quick else 50_000)
    parts = names(args.parts, PARTS, "--parts", ap)
    http_servers = names(args.http_servers, HTTP_SERVERS, "--http-servers", ap)
    echo_servers = names(args.echo_servers, ECHO_SERVERS, "--echo-servers", ap)
    conns = bh.int_list(args.conns, "--conns", ap)
    depths = bh.int_list(args.pipeline, "--pipeline", ap)
    batches = bh.int_list(args.gil_batches, "--gil-batches", ap)
    batch_conns = bh.int_list(args.batch_conns, "--batch-conns", ap)
    if reps < 1 or duration < 1 or warmup < 0 or args.batch_workers < 1:
        ap.error("bad --reps/--duration/--warmup/--batch-workers")

    signal.signal(signal.SIGTERM, on_sigterm)
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="shoal-python-bench-"))
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        ensure_tools("syscalls" in parts, args, problems)
        wrk = shutil.which("wrk")
        needs_wrk = "http" in parts or "batch" in parts
        if needs_wrk and wrk is None:
            for msg in problems:
                log(msg)
            log("wrk is not installed (bash bench/setup.sh wrk)")
            return 2
        taskset = shutil.which("taskset") is not None
        if not taskset:
            problems.append("taskset not found: servers and load generators are not pinned")
        py = ensure_venv(args, problems)
        missing: dict[str, str | None] = {}
        if py is not None:
            for module in ("shoal", "granian", "uvloop", "httptools"):
                missing[module] = importable(py, module)
        loadgen = build_loadgen(args, problems)
        needs_loadgen = any(p in parts for p in ("echo", "memory", "syscalls"))
        if needs_loadgen and loadgen is None:
            for msg in problems:
                log(msg)
            return 2
        tools = Tools(loadgen or Path("/nonexistent/loadgen"), args.server_cpu, args.loadgen_cpu, taskset, tmp)

        def specs_for(kind: str, servers: list[str]) -> dict[str, ServerSpec]:
            out = {}
            for name in servers:
                out[name] = epoll_spec(kind, args) if name == REFERENCE else python_spec(name, kind, py, missing, args.batch_workers)
                if out[name].missing:
                    log(f"{kind} {name}: missing: {out[name].missing}")
            return out

        def run_all(sec: Section, one_point) -> None:
            for key in sec.keys:
                for rep in range(1, reps + 1):
                    for name in rotated(sec.servers, rep):
                        if sec.specs[name].missing:
                            continue

                        def one(attempt: int, name=name, key=key, rep=rep):
                            wl = http_name(key) if sec.kind == "http" else echo_name(key)
                            log(f"{sec.title} {wl}, rep {rep}/{reps}: {name}" + (f" (retry {attempt})" if attempt else ""))
                            pt = one_point(sec.specs[name], key, rep)
                            if pt.ok:
                                log(
                                    f"  {pt.rps:,.0f}/s, {pt.per_cpu:,.0f}/CPU-s, server {pt.server_util:.0%}, "
                                    f"load generator {pct(lg_util(pt))}, others {pt.other_util:.2f} cores"
                                    + (f", {errors_of(pt)} errors" if errors_of(pt) else "")
                                    + (f" ({pt.problem})" if pt.problem else "")
                                )
                            else:
                                log(f"  FAILED: {pt.problem}")
                            return pt

                        sec.points.append(
                            measure_with_retries(
                                one, ok=lambda p: p.ok, others=lambda p: p.other_util,
                                retries=args.retries, quiet_wait=args.quiet_wait,
                            )  # fmt: skip
                        )

        def http_point(spec, key, rep):
            return bh.run_http_point(spec, tools, wrk, key[0], key[1], rep, duration, warmup)

        def echo_point(spec, key, rep):
            return be.run_echo_point(spec, tools, key[0], 64, rep, float(duration), float(warmup))

        http = echo = batch = None
        if "http" in parts and http_servers:
            peers = [p for p in ("granian", "uvloop") if p in http_servers]
            http = Section("HTTP", "http", http_servers, specs_for("http", http_servers),
                           [(c, d) for c in conns for d in depths], [], peers)  # fmt: skip
            run_all(http, http_point)
        if "echo" in parts and echo_servers:
            peers = ["uvloop"] if "uvloop" in echo_servers else []
            echo = Section("Echo", "echo", echo_servers, specs_for("echo", echo_servers), [(c, 0) for c in conns], [], peers)
            run_all(echo, echo_point)
        if "batch" in parts:
            bnames = [f"shoal-py-b{b}" for b in batches]
            batch = Section("GIL batch (HTTP, workers mode)", "http", bnames, specs_for("http", bnames),
                            [(c, d) for c in batch_conns for d in depths], [], [])  # fmt: skip
            run_all(batch, http_point)

        memres = None
        if "memory" in parts:
            memres = {}
            for name, spec in specs_for("echo", echo_servers).items():
                if spec.missing:
                    memres[name] = None
                    continue
                log(f"idle memory: {name}, {idle_conns} connections")
                r = be.run_memory(spec, tools, idle_conns)
                log(f"  {r.per_conn:,.0f} bytes/connection" if r.ok else f"  FAILED: {r.problem}")
                memres[name] = r

        sysres = None
        if "syscalls" in parts:
            if shutil.which("strace") is None:
                problems.append("strace is not installed: no syscall counts")
            else:
                sysres = {}
                for depth in depths:
                    for name, spec in specs_for("http", http_servers).items():
                        what = http_name((64, depth))
                        if spec.missing:
                            sysres[(what, name)] = None
                            continue
                        log(f"syscalls: {name} under strace, {strace_requests} requests, pipeline {depth}")
                        r = bh.run_syscalls(spec, tools, strace_requests, 64, depth)
                        log(f"  {r.total / r.requests:.3f} syscalls/request" if r.ok else f"  FAILED: {r.problem}")
                        sysres[(what, name)] = r
                for name, spec in specs_for("echo", echo_servers).items():
                    what = "echo, 64 conns, 64 B"
                    if spec.missing:
                        sysres[(what, name)] = None
                        continue
                    log(f"syscalls: {name} under strace, {strace_requests} round trips")
                    r = be.run_syscalls(spec, tools, strace_requests, 64)
                    log(f"  {r.total / r.round_trips:.3f} syscalls/round trip" if r.ok else f"  FAILED: {r.problem}")
                    sysres[(what, name)] = r

        settings = {
            "loadavg": " ".join(loadavg), "reps": reps, "duration": duration, "warmup": warmup,
            "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu, "taskset": taskset,
            "idle_conns": idle_conns, "strace_requests": strace_requests,
            "versions": versions(py) if py else "no bench venv",
            "wrk_version": bh.version_of(["wrk", "--version"]).split(" [")[0],
        }  # fmt: skip
        text = report(args, cmdline, settings, http, echo, batch, memres, sysres, problems)
        print(text, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
        if args.json:
            write_json(args.json, json_results(cmdline, settings, http, echo, batch, memres, sysres, problems))
        failed = any(not p.ok for sec in (http, echo, batch) if sec for p in sec.points)
        failed |= any(r is not None and not r.ok for r in (memres or {}).values())
        failed |= any(r is not None and not r.ok for r in (sysres or {}).values())
        return 1 if failed else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        kill_all_live()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
