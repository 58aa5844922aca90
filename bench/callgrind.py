#!/usr/bin/env python3
"""Instructions per request: shoal's HTTP server (Rust, C and Python handlers), the raw-epoll C reference and hyper under valgrind's callgrind; and per echo round trip: shoal (Rust, C), epoll, tokio and libuv.

    python3 bench/callgrind.py [--quick] [--servers shoal,shoal-c,shoal-py,shoal-py-inline,epoll,hyper]
                               [--pipeline 1,16] [--conns 16] [--requests N] [--py-requests N]
                               [--echo-servers shoal,shoal-c,epoll,tokio,libuv] [--echo-count K]
                               [--python PATH] [--out FILE] [--json FILE] [--no-build] [--no-setup]

Wall-clock figures on this machine drift by 20% between runs; the number of user-space
instructions a server executes per request does not. For each server and pipeline depth
D, the server runs twice under `valgrind --tool=callgrind`, while `loadgen http --conns C
--requests K --pipeline D` sends exactly K requests (D per write, waiting for the D
responses) over C keep-alive connections: once with K = N and once with K = N / 5. The
instructions per request are the difference of the two totals over the difference of the
request counts, so start-up, connection set-up and shutdown cancel out. The echo servers
run the same way while `loadgen echo --conns 64 --size 64 --count K` makes exactly K round
trips (K and K / 5). Each total is callgrind's `Ir` over every thread of the server (the
Python servers: the interpreter, the binding and the engine together); the kernel's work is
not counted.

Servers: `shoal` (target/release/examples/http_hello), `shoal-c` (target/c/http_hello),
`shoal-py` (examples/python/http_hello.py with shoal's defaults: workers=4) and
`shoal-py-inline` (the same with inline=True), run by --python (default
target/bench-venv/bin/python, which `make bench-python` makes; else target/venv/bin/python
when shoal imports there), `epoll` (bench/c/epoll_http.c) and `hyper`
(bench/peers/src/hyper_hello.rs). valgrind comes from `bash bench/setup.sh valgrind`
unless --no-setup; a server that cannot be built, or valgrind missing, is reported as
missing with the reason.

A Markdown report goes to stdout (and to --out FILE); progress goes to stderr. Standard
library only. Every child process has a timeout and is killed on the way out; every
server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import (
    HOST,
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
    on_sigterm,
    run_setup,
    spawn,
    tail,
    write_json,
)


def _load(name: str, filename: str):
    """bench/http.py as a module (not `import http`: that name is the standard library's)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / filename)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bh = _load("bench_http", "http.py")
be = _load("bench_echo", "echo.py")

SERVER_ORDER = ["shoal", "shoal-c", "shoal-py", "shoal-py-inline", "epoll", "hyper"]
# The echo workload's servers (bench/echo.py's); Go is left out: valgrind runs its runtime poorly.
ECHO_ORDER = ["shoal", "shoal-c", "epoll", "tokio", "libuv"]
ECHO_CONNS = 64
ECHO_SIZE = 64
PYTHON_SERVERS = {"shoal-py": [], "shoal-py-inline": ["--inline"]}
SMALL_FRACTION = 5  # the short run sends requests / SMALL_FRACTION
START_TIMEOUT = 180  # valgrind starts a Python interpreter slowly
STOP_TIMEOUT = 120  # and writes its profile on the way out
RUN_TIMEOUT = 900

DESCRIPTIONS = {
    "shoal": "Rust handler: `target/release/examples/http_hello`, one reactor",
    "shoal-c": "C handler: `target/c/http_hello` (examples/c/http_hello.c on libshoal.so), one reactor",
    "shoal-py": "Python handler: examples/python/http_hello.py, shoal's defaults (one reactor, workers=4, gil_batch=16)",
    "shoal-py-inline": "Python handler: examples/python/http_hello.py with inline=True (the handler runs on the reactor thread)",
    "epoll": "`bench/c/epoll_http.c`: fixed response, no parsing (the floor)",
    "hyper": "`bench/peers/src/hyper_hello.rs`: hyper 1.x on a current-thread tokio runtime",
}
ECHO_DESCRIPTIONS = {
    "shoal": "`target/release/examples/echo`, one reactor",
    "shoal-c": "`target/c/echo` (examples/c/echo.c on libshoal.so), one reactor",
    "epoll": "`bench/c/epoll_echo.c`: raw edge-triggered epoll (the floor)",
    "tokio": "`bench/peers/src/tokio_echo.rs`: a task per connection on a current-thread runtime",
    "libuv": "`bench/c/libuv_echo.c`: one uv_loop, uv_try_write",
}


@dataclass
class Count:
    server: str
    # HTTP: the pipeline depth; echo: 0 (then "requests" are round trips).
    depth: int
    workload: str = "http"
    ok: bool = False
    requests_big: int = 0
    requests_small: int = 0
    ir_big: int = 0
    ir_small: int = 0
    per_request: float = float("nan")
    problem: str | None = None


def find_python(arg: str | None) -> tuple[Path | None, str | None]:
    """The interpreter for the Python servers, and why there is none."""
    candidates = [Path(arg)] if arg else [TARGET / "bench-venv" / "bin" / "python", TARGET / "venv" / "bin" / "python"]
    why = None
    for py in candidates:
        if not py.exists():
            why = f"{py} does not exist (make bench-python makes target/bench-venv)"
            continue
        try:
            res = subprocess.run([str(py), "-c", "import shoal"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{py}: {e}"
            continue
        if res.returncode == 0:
            return py, None
        why = f"`import shoal` fails in {py}: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
    return None, why


def prepare(servers: list[str], args, problems: list[str]) -> tuple[Path | None, dict[str, ServerSpec]]:
    http_names = [s for s in servers if s not in PYTHON_SERVERS]
    ns = argparse.Namespace(no_build=args.no_build, jobs=args.jobs, loadgen=args.loadgen)
    loadgen, specs = bh.prepare(http_names, ns, True, None, problems)
    if any(s in PYTHON_SERVERS for s in servers):
        py, why = find_python(args.python)
        for name in servers:
            if name in PYTHON_SERVERS:
                script = ROOT / "examples" / "python" / "http_hello.py"
                spec = ServerSpec(
                    name, py or Path("/nonexistent/python"),
                    args=[str(script.relative_to(ROOT)), "--host", HOST, "--port", "0", "--threads", "1", *PYTHON_SERVERS[name]],
                )  # fmt: skip
                spec.missing = why
                specs[name] = spec
    return loadgen, specs


def callgrind_total(path: Path) -> int:
    """The total Ir of a callgrind output file (its `summary:` or `totals:` line)."""
    total = None
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^(summary|totals):\s+(\d+)", line)
        if m:
            total = int(m.group(2))
    if total is None:
        raise RuntimeError(f"no totals in {path.name}")
    return total


def run_once(spec: ServerSpec, tools: Tools, requests: int, conns: int, depth: int) -> tuple[int, int]:
    """(instructions, responses) of one server run under callgrind with `requests` requests
    (depth 0: `requests` echo round trips of ECHO_SIZE bytes)."""
    out = tools.scratch(f"callgrind-{spec.name}-{depth}-{requests}.out")
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", "--quiet"]
    srv = lg = None
    try:
        srv = Server(spec, tools, wrapper=wrapper, start_timeout=START_TIMEOUT)
        if depth == 0:
            load = [
                "echo", "--host", HOST, "--port", str(srv.port), "--conns", str(conns), "--size", str(ECHO_SIZE),
                "--count", str(requests), "--warmup", "0", "--duration", str(RUN_TIMEOUT - 60),
            ]  # fmt: skip
        else:
            load = [
                "http", "--host", HOST, "--port", str(srv.port), "--conns", str(conns),
                "--requests", str(requests), "--pipeline", str(depth), "--timeout", str(RUN_TIMEOUT - 60),
            ]  # fmt: skip
        argv = tools.pin(tools.loadgen_cpu) + [str(tools.loadgen), *load]
        lg_err = tools.scratch("loadgen.stderr")
        lg = spawn(argv, stderr_path=lg_err)
        reader = LineReader(lg.stdout)
        deadline = time.monotonic() + RUN_TIMEOUT
        result = None
        while (line := reader.readline(max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith("{"):
                result = json.loads(line)
        rc = lg.wait(timeout=10)
        kill_quietly(lg)
        if result is None or rc != 0:
            raise RuntimeError(f"loadgen status {rc}: {tail(lg_err)}")
        os.kill(srv.pid, signal.SIGTERM)
        try:
            src = srv.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"did not exit within {STOP_TIMEOUT}s of SIGTERM") from None
        srv = None
        if src != 0:
            raise RuntimeError(f"exit status {src} after SIGTERM")
        if int(result.get("errors", 0)) or int(result.get("non2xx", 0)):
            raise RuntimeError(f"{result.get('errors')} connection errors, {result.get('non2xx')} non-2xx responses")
        return callgrind_total(out), int(result["round_trips" if depth == 0 else "responses"])
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()


def count(spec: ServerSpec, tools: Tools, requests: int, conns: int, depth: int) -> Count:
    c = Count(spec.name, depth, "echo" if depth == 0 else "http")
    small = max(conns * max(depth, 1), requests // SMALL_FRACTION)
    try:
        c.ir_small, c.requests_small = run_once(spec, tools, small, conns, depth)
        c.ir_big, c.requests_big = run_once(spec, tools, requests, conns, depth)
        if c.requests_big <= c.requests_small:
            raise RuntimeError("the long run answered no more requests than the short one")
        c.per_request = (c.ir_big - c.ir_small) / (c.requests_big - c.requests_small)
        c.ok = c.per_request > 0
        if not c.ok:
            c.problem = "the long run executed fewer instructions than the short one"
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        c.problem = f"{type(e).__name__}: {e}"
    return c


def report(
    cmdline: str, servers: list[str], specs, counts: dict, depths: list[int], settings, problems,
    echo_servers: list[str], echo_specs: dict[str, ServerSpec],
) -> str:  # fmt: skip
    out: list[str] = []
    w = out.append
    w("# shoal instructions per request (callgrind)")
    w("")
    w(f"`{cmdline}`")
    w("")
    w(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}")
    w(f"- kernel: {os.uname().release}; CPU: {cpu_model()}; {settings['valgrind']}")
    w(
        f"- per server and depth D: two runs under `valgrind --tool=callgrind` while `loadgen http --conns "
        f"{settings['conns']} --requests K --pipeline D` runs, K = N and N / {SMALL_FRACTION} (N = "
        f"{settings['requests']:,}; {settings['py_requests']:,} for the Python servers); instructions per request = "
        "difference of the totals / difference of the requests (start-up, connects and shutdown cancel out); user "
        "space only, every thread of the server"
    )
    w("")
    for name in servers:
        w(f"- `{name}`: {DESCRIPTIONS[name]}")
    w("")
    w("| server | " + " | ".join("no pipelining" if d == 1 else f"pipeline {d}" for d in depths) + " | notes |")
    w("|---|" + "---:|" * len(depths) + "---|")
    for name in servers:
        if specs[name].missing:
            w(f"| {name} | " + " | ".join("missing" for _ in depths) + f" | {specs[name].missing} |")
            continue
        cells, notes = [], []
        for d in depths:
            c = counts.get((name, d))
            if c is None or not c.ok:
                cells.append("failed")
                notes.append(f"pipeline {d}: {c.problem if c else 'not run'}")
            else:
                cells.append(fmt_int(c.per_request))
        w(f"| {name} | " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    w("")
    if echo_servers:
        w(
            f"Echo: instructions per round trip of {ECHO_SIZE} bytes, `loadgen echo --conns {ECHO_CONNS} --size "
            f"{ECHO_SIZE} --count K`, K = {settings['echo_count']:,} and K / {SMALL_FRACTION}, the same difference."
        )
        w("")
        for name in echo_servers:
            w(f"- `{name}`: {ECHO_DESCRIPTIONS[name]}")
        w("")
        w("| server | instructions / round trip | notes |")
        w("|---|---:|---|")
        for name in echo_servers:
            c = counts.get((name, 0))
            if echo_specs[name].missing:
                w(f"| {name} | missing | {echo_specs[name].missing} |")
            elif c is None or not c.ok:
                w(f"| {name} | failed | {c.problem if c else 'not run'} |")
            else:
                w(f"| {name} | {fmt_int(c.per_request)} | |")
        w("")
    w("Totals (instructions, requests) of each pair of runs:")
    w("")
    w("| server | pipeline (0: echo) | short run | long run |")
    w("|---|---:|---:|---:|")
    for (name, d), c in counts.items():
        if c.requests_big:
            w(f"| {name} | {d} | {c.ir_small:,} Ir / {c.requests_small:,} | {c.ir_big:,} Ir / {c.requests_big:,} |")
    w("")
    if problems:
        w("## Problems")
        w("")
        for msg in problems:
            w(f"- {msg}")
        w("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 requests per long run (500 for Python)")
    ap.add_argument("--servers", default=",".join(SERVER_ORDER), help="comma list of " + ",".join(SERVER_ORDER))
    ap.add_argument("--pipeline", default="1,16", help="comma list of pipeline depths (default 1,16)")
    ap.add_argument("--conns", type=int, default=16, help="keep-alive connections (default 16)")
    ap.add_argument("--requests", type=int, help="requests of the long run (default 32000; --quick 2000)")
    ap.add_argument("--py-requests", type=int, help="requests of the long run of the Python servers (default 8000; --quick 500)")
    ap.add_argument("--python", help="interpreter of the Python servers (default target/bench-venv/bin/python)")
    ap.add_argument(
        "--echo-servers", default=",".join(ECHO_ORDER),
        help="comma list of " + ",".join(ECHO_ORDER) + " for the echo workload (empty: none)",
    )  # fmt: skip
    ap.add_argument("--echo-count", type=int, help="round trips of the long echo run (default 50000; --quick 2000)")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--json", help="also write the results as JSON to this file (for bench/suite.py)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    ap.add_argument("--no-setup", action="store_true", help="do not install valgrind with bench/setup.sh")
    ap.add_argument("--jobs", type=int, help="cargo -j for the builds")
    ap.add_argument("--loadgen", help="use this loadgen binary instead of building target/release/loadgen")
    ap.add_argument("--server-cpu", default="0", help="CPU the server is pinned to (default 0)")
    ap.add_argument("--loadgen-cpu", default="1", help="CPU loadgen is pinned to (default 1)")
    args = ap.parse_args()

    cmdline = shlex.join(["python3", *sys.argv])
    requests = args.requests or (2_000 if args.quick else 32_000)
    py_requests = args.py_requests or (500 if args.quick else 8_000)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or any(s not in SERVER_ORDER for s in servers) or requests < 10 or py_requests < 10 or args.conns < 1:
        ap.error(f"bad --servers/--requests/--py-requests/--conns (servers are {','.join(SERVER_ORDER)})")
    servers = [s for s in SERVER_ORDER if s in servers]
    depths = bh.int_list(args.pipeline, "--pipeline", ap)
    echo_count = args.echo_count or (2_000 if args.quick else 50_000)
    echo_servers = [s.strip() for s in args.echo_servers.split(",") if s.strip()]
    if any(s not in ECHO_ORDER for s in echo_servers) or echo_count < 10 * SMALL_FRACTION:
        ap.error(f"bad --echo-servers/--echo-count (echo servers are {','.join(ECHO_ORDER)})")
    echo_servers = [s for s in ECHO_ORDER if s in echo_servers]

    signal.signal(signal.SIGTERM, on_sigterm)
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="shoal-callgrind-"))
    try:
        valgrind_missing = None
        if shutil.which("valgrind") is None:
            why = "not installed, and --no-setup" if args.no_setup else run_setup(["valgrind"], ["valgrind"])
            if shutil.which("valgrind") is None:
                valgrind_missing = f"valgrind is not installed (Debian package valgrind): {why or 'still missing'}"
        loadgen, specs = prepare(servers, args, problems)
        echo_specs: dict[str, ServerSpec] = {}
        if echo_servers and loadgen is not None:
            ns = argparse.Namespace(no_build=args.no_build, jobs=args.jobs, loadgen=str(loadgen))
            _, echo_specs = be.prepare(echo_servers, ns, problems)
        if loadgen is None:
            for msg in problems:
                log(msg)
            return 2
        if valgrind_missing:
            for s in [*specs.values(), *echo_specs.values()]:
                s.missing = s.missing or valgrind_missing
        tools = Tools(loadgen, args.server_cpu, args.loadgen_cpu, shutil.which("taskset") is not None, tmp)
        counts: dict[tuple[str, int], Count] = {}
        for d in depths:
            for name in servers:
                spec = specs[name]
                if spec.missing:
                    log(f"{name}: missing: {spec.missing}")
                    continue
                n = py_requests if name in PYTHON_SERVERS else requests
                log(f"callgrind: {name}, pipeline {d}, {n // SMALL_FRACTION} and {n} requests")
                t0 = time.monotonic()
                c = count(spec, tools, n, args.conns, d)
                log(
                    f"  {c.per_request:,.0f} instructions/request ({time.monotonic() - t0:.0f} s)"
                    if c.ok else f"  FAILED: {c.problem}"
                )  # fmt: skip
                counts[(name, d)] = c
        for name in echo_servers:
            spec = echo_specs[name]
            if spec.missing:
                log(f"echo {name}: missing: {spec.missing}")
                continue
            log(f"callgrind: echo {name}, {echo_count // SMALL_FRACTION} and {echo_count} round trips")
            t0 = time.monotonic()
            c = count(spec, tools, echo_count, ECHO_CONNS, 0)
            log(
                f"  {c.per_request:,.0f} instructions/round trip ({time.monotonic() - t0:.0f} s)"
                if c.ok else f"  FAILED: {c.problem}"
            )  # fmt: skip
            counts[(name, 0)] = c
        settings = {
            "conns": args.conns, "requests": requests, "py_requests": py_requests, "depths": depths,
            "echo_count": echo_count, "echo_conns": ECHO_CONNS, "echo_size": ECHO_SIZE,
            "valgrind": bh.version_of(["valgrind", "--version"]),
        }  # fmt: skip
        text = report(cmdline, servers, specs, counts, depths, settings, problems, echo_servers, echo_specs)
        print(text, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
        if args.json:
            write_json(args.json, {
                "kind": "callgrind", "cmdline": cmdline, "settings": settings, "servers": servers,
                "descriptions": {n: DESCRIPTIONS[n] for n in servers},
                "missing": {n: specs[n].missing for n in servers if specs[n].missing},
                "echo_servers": echo_servers,
                "echo_descriptions": {n: ECHO_DESCRIPTIONS[n] for n in echo_servers},
                "echo_missing": {n: echo_specs[n].missing for n in echo_servers if echo_specs[n].missing},
                "counts": [asdict(c) for c in counts.values()], "problems": problems,
            })  # fmt: skip
        return 1 if any(not c.ok for c in counts.values()) else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        kill_all_live()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
