"""Shared plumbing of shoal's benchmark harnesses (bench/echo.py, bench/http.py).

Child processes with timeouts that are always killed on the way out, servers
that follow the example-server convention (`--host H --port P --threads N`,
one flushed `listening on HOST:PORT` line, exit 0 on SIGTERM), pinning with
taskset, CPU accounting from /proc, the quiet-machine wait and the re-run of
disturbed measurements, builds, `strace -c` summaries and report formatting.
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY_THRESHOLD = 0.90  # below this server-core share: load-generator bound
NOISE_THRESHOLD = 0.10  # more CPU than this (in cores) used by others: noisy run

BUILD_TIMEOUT = 1800
START_TIMEOUT = 20
STOP_TIMEOUT = 10
LISTEN_RE = re.compile(r"^listening on (\S+):(\d+)$")

PROG = Path(sys.argv[0]).name or "bench"  # the log prefix: echo.py, http.py
LIVE: set[subprocess.Popen] = set()  # children to kill whatever happens


def log(msg: str) -> None:
    print(f"[{PROG} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes


class LineReader:
    """Reads lines from a pipe with a timeout (select + os.read)."""

    def __init__(self, stream) -> None:
        self.fd = stream.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line without its newline; None at EOF; TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1 :]
                return line.decode(errors="replace").rstrip("\r")
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode(errors="replace")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no output line in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buf += chunk
                else:
                    self.eof = True

    def drain_in_background(self) -> None:
        """Keeps reading (and dropping) output so the child never blocks."""

        def run() -> None:
            try:
                while os.read(self.fd, 65536):
                    pass
            except OSError:
                pass

        threading.Thread(target=run, daemon=True).start()


def spawn(argv: list[str], *, stderr_path: Path, stdin=subprocess.DEVNULL, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE, stderr=err, bufsize=0,
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
    LIVE.add(proc)
    return proc


def kill_quietly(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream:
                stream.close()
        except OSError:
            pass
    LIVE.discard(proc)


def kill_all_live() -> None:
    for proc in list(LIVE):
        kill_quietly(proc)


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _stat_times(pid: int) -> tuple[int, int]:
    """(utime + cutime, stime + cstime) in ticks of one process (fields 14-17 of
    /proc/PID/stat: all its threads, and the children it has reaped)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3
    return int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14])


def descendants(pid: int) -> list[int]:
    """The live descendants of a process (through /proc/PID/task/TID/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process tree: the process (all its threads) and its
    live descendants, each with the children it has reaped, so that a server made of a
    supervisor and worker processes (granian) is counted whole and a child that exits in
    the window is not lost. A single process without children: its utime, stime."""
    user, system = _stat_times(pid)  # the root must exist
    for kid in descendants(pid):
        try:
            u, s = _stat_times(kid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile: its time is in its parent's cutime/cstime now
        user += u
        system += s
    return user / CLK_TCK, system / CLK_TCK


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process tree (see proc_cpu_split)."""
    return sum(proc_cpu_split(pid))


def system_busy_seconds() -> float:
    """CPU time all CPUs spent on anything but idle/iowait (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_for_quiet(max_wait: float) -> float:
    """Waits (up to max_wait s) until the machine runs nothing else; returns the last busy share."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        busy = (system_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy < NOISE_THRESHOLD or time.monotonic() >= deadline:
            return busy


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and its live descendants (nginx's master and worker), summed."""
    total = vm_rss_kib(pid)
    for kid in descendants(pid):
        try:
            total += vm_rss_kib(kid)
        except (OSError, RuntimeError):
            pass
    return total


def child_pid(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


# --------------------------------------------------------------------------
# configuration


@dataclass
class Tools:
    loadgen: Path
    server_cpu: str
    loadgen_cpu: str
    taskset: bool
    tmp: Path

    serial: int = 0

    def scratch(self, name: str) -> Path:
        """A fresh file name in the run's temporary directory."""
        self.serial += 1
        return self.tmp / f"{self.serial:04d}-{name}"

    def pin(self, cpu: str) -> list[str]:
        return ["taskset", "-c", cpu] if self.taskset else []


@dataclass
class ServerSpec:
    name: str
    binary: Path
    missing: str | None = None  # why it cannot run
    args: list[str] = field(default_factory=lambda: ["--host", HOST, "--port", "0", "--threads", "1"])
    # A server that cannot pick its own port and say which (nginx): the harness picks a free
    # port, puts it in place of "{port}" in args ("{scratch}" becomes a fresh directory of
    # the run), and takes the server as ready once a TCP connect to it succeeds.
    fixed_port: bool = False
    env: dict[str, str] | None = None  # added to the server's environment


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def connectable(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class Server:
    """One running server process (optionally under strace)."""

    def __init__(
        self, spec: ServerSpec, tools: Tools, strace_out: Path | None = None, wrapper: list[str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.start_timeout = start_timeout
        self.stderr_path = tools.scratch(f"{spec.name}.stderr")
        argv = tools.pin(tools.server_cpu)
        if wrapper is not None:
            argv += wrapper
        elif strace_out is not None:
            argv += ["strace", "-f", "-c", "-o", str(strace_out), "--"]
        args = spec.args
        self.port = 0
        if spec.fixed_port:
            self.port = free_port()
            scratch = tools.scratch(f"{spec.name}.d")
            scratch.mkdir()
            args = [a.replace("{port}", str(self.port)).replace("{scratch}", str(scratch)) for a in args]
        argv += [str(spec.binary), *args]
        self.traced = strace_out is not None  # under strace: the server is strace's child
        self.proc = spawn(argv, stderr_path=self.stderr_path, env=spec.env)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        try:
            if spec.fixed_port:
                self._wait_connectable()
            else:
                self._wait_listening()
            if self.traced:
                self._find_traced_pid()
        except BaseException:
            self.kill()
            raise

    def _wait_connectable(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        LineReader(self.proc.stdout).drain_in_background()
        while not connectable(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name}: exited (status {self.proc.returncode}) before listening: {tail(self.stderr_path)}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.spec.name}: port {self.port} not accepting within {self.start_timeout:g}s")
            time.sleep(0.05)

    def _find_traced_pid(self) -> None:
        """The traced server's own pid: strace's child (a wrapper such as valgrind runs the
        program in its own process, so there the pid stays)."""
        kid = None
        for _ in range(100):
            kid = child_pid(self.proc.pid)
            if kid:
                break
            time.sleep(0.01)
        if kid is None:
            raise RuntimeError(f"{self.spec.name}: cannot find the traced server's pid")
        self.pid = kid

    def _wait_listening(self) -> None:
        spec = self.spec
        reader = LineReader(self.proc.stdout)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RuntimeError(f"{spec.name}: no `listening on` line within {self.start_timeout:g}s") from None
            if line is None:
                rc = self.proc.wait(timeout=5)
                raise RuntimeError(
                    f"{spec.name}: exited (status {rc}) before listening: {tail(self.stderr_path)}"
                )
            m = LISTEN_RE.match(line.strip())
            if m:
                break
        if m.group(1) != HOST:
            raise RuntimeError(f"{spec.name}: listens on {m.group(1)}, not {HOST}")
        self.port = int(m.group(2))
        reader.drain_in_background()

    def stop(self) -> str | None:
        """SIGTERM; returns a problem description, or None for a clean exit 0."""
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            LIVE.discard(self.proc)
            return f"exited by itself during the run (status {rc}): {tail(self.stderr_path)}"
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_quietly(self.proc)
            return f"did not exit within {STOP_TIMEOUT}s of SIGTERM (killed)"
        LIVE.discard(self.proc)
        if rc != 0:
            return f"exit status {rc} after SIGTERM (want 0): {tail(self.stderr_path, 2)}"
        return None

    def kill(self) -> None:
        if self.traced:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        kill_quietly(self.proc)


# --------------------------------------------------------------------------
# building


NICE = os.environ.get("SHOAL_BENCH_NICE", "10")  # the niceness of builds


def run_build(cmd: list[str], cwd: Path, jobs: int | None, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Runs a build command under `nice -n $SHOAL_BENCH_NICE` (10 unless set; cargo with
    `-j jobs`), with `env` added to the environment; returns (ok, why it failed)."""
    if cmd[0] == "cargo" and jobs:
        cmd = [*cmd, "-j", str(jobs)]
    full = (["nice", "-n", NICE] if shutil.which("nice") else []) + cmd
    shown = shlex.join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd])
    log(f"build: {shown} (in {cwd.relative_to(ROOT) if cwd != ROOT else '.'})")
    try:
        res = subprocess.run(
            full, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
            env={**os.environ, **env} if env else None,
        )
    except subprocess.TimeoutExpired:
        return False, f"`{shown}` timed out after {BUILD_TIMEOUT}s"
    except OSError as e:
        return False, f"`{shown}`: {e}"
    if res.returncode == 0:
        return True, ""
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")] or lines[-3:]
    return False, f"`{shown}` failed: " + " / ".join(errors[:3])



SETUP_SCRIPT = ROOT / "bench" / "setup.sh"
SETUP_TIMEOUT = 1800
DEBIAN_GOPATH = Path("/usr/share/gocode")


def run_setup(need: list[str], tools: list[str] | None = None) -> str | None:
    """Runs `bash bench/setup.sh TOOL...` (every tool when `tools` is None); `need` names
    what is missing, for the log. Returns why it failed, or None."""
    log(f"setup: missing {', '.join(need)}: bash bench/setup.sh {' '.join(tools or [])}".rstrip())
    try:
        res = subprocess.run(
            ["bash", str(SETUP_SCRIPT), *(tools or [])], cwd=ROOT, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=SETUP_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"bench/setup.sh timed out after {SETUP_TIMEOUT}s"
    except OSError as e:
        return f"bench/setup.sh: {e}"
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith("setup.sh:"):
            log(f"  {line}")
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
        return f"bench/setup.sh failed (status {res.returncode}): " + " / ".join(lines[-3:])
    return None


def go_env(gopath: Path | None) -> dict[str, str]:
    """GOPATH-mode environment of the Go peers (Debian's packaged sources)."""
    env = {"GO111MODULE": "off", "GOFLAGS": ""}
    if gopath is not None:
        env["GOPATH"] = str(gopath)
    if not os.environ.get("GOCACHE") and not os.environ.get("HOME"):
        env["GOCACHE"] = str(TARGET / "bench" / "go-cache")
    return env


def build_if_stale(spec: ServerSpec, src: Path, cmd: list[str], env: dict[str, str] | None, no_build: bool) -> None:
    """Builds spec.binary from src when it is older than src (or absent)."""
    stale = not spec.binary.exists() or spec.binary.stat().st_mtime < src.stat().st_mtime
    if stale and not no_build:
        spec.binary.parent.mkdir(parents=True, exist_ok=True)
        ok, why = run_build(cmd, ROOT, None, env)
        if not ok:
            spec.missing = why


def nginx_binary() -> str | None:
    """nginx's path, when Debian's nginx is installed (it lives in /usr/sbin)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def c_compiler() -> str:
    return os.environ.get("CC", "cc")


def write_json(path: str | Path, data: dict) -> None:
    """The machine-readable results of a harness (read by bench/suite.py and bench/charts.py).
    NaN becomes null."""

    def clean(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean(data), indent=1) + "\n")
    log(f"results written to {path}")


# --------------------------------------------------------------------------
# measurements


def parse_strace_summary(path: Path) -> tuple[int, list[tuple[str, int]]]:
    rows: list[tuple[str, int]] = []
    total = None
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 5 or not re.match(r"^\d+(\.\d+)?$", parts[0]):
            continue
        name, calls = parts[-1], int(parts[3])
        if name == "total":
            total = calls
        else:
            rows.append((name, calls))
    if total is None:
        total = sum(c for _, c in rows)
    rows.sort(key=lambda r: -r[1])
    return total, rows


T = TypeVar("T")


def rotated(items: list, rep: int) -> list:
    """The run order of repetition `rep` (from 1): rotated by one place per repetition (A B C,
    B C A, C A B, ...), so no server always runs first, or always right after the same
    neighbour, whose aftermath (sockets closing, caches) would then always fall on it."""
    if not items:
        return []
    k = (rep - 1) % len(items)
    return items[k:] + items[:k]


def measure_with_retries(
    run: Callable[[int], T], *, ok: Callable[[T], bool], others: Callable[[T], float], retries: int, quiet_wait: float
) -> T:
    """Runs `run(attempt)` after waiting for a quiet machine; re-runs it (up to
    `retries` times) while other processes used NOISE_THRESHOLD cores or more
    meanwhile, and returns the quietest good result (or the last failure)."""
    best = None
    for attempt in range(retries + 1):
        busy = wait_for_quiet(quiet_wait)
        if busy >= NOISE_THRESHOLD:
            log(f"  machine still busy ({busy:.2f} cores used by others): running anyway")
        pt = run(attempt)
        if best is None or (ok(pt) and (not ok(best) or others(pt) < others(best))):
            best = pt
        if not ok(pt) or others(pt) < NOISE_THRESHOLD:
            break
        log("  other processes used the CPUs meanwhile: noisy, measuring again")
    return best


@dataclass
class MemoryResult:
    server: str
    ok: bool = False
    before_kib: int = 0
    after_kib: int = 0
    conns: int = 0
    problem: str | None = None

    @property
    def per_conn(self) -> float:
        return (self.after_kib - self.before_kib) * 1024 / self.conns if self.conns else float("nan")


IDLE_SOURCES = 4  # idle connections come from 127.0.0.1 .. 127.0.0.IDLE_SOURCES


def run_idle_memory(spec: ServerSpec, tools: Tools, conns: int, probe: str = "echo") -> MemoryResult:
    """The resident memory (VmRSS of the server's process tree) that `conns` idle
    connections add: read before, and 1 s after `loadgen idle` has opened them all (from
    IDLE_SOURCES source addresses, each used once: `probe` is echo or http)."""
    res = MemoryResult(spec.name)
    srv = lg = None
    try:
        srv = Server(spec, tools)
        time.sleep(0.2)
        res.before_kib = tree_rss_kib(srv.pid)
        argv = tools.pin(tools.loadgen_cpu) + [
            str(tools.loadgen), "idle", "--host", HOST, "--port", str(srv.port), "--conns", str(conns),
            "--sources", str(IDLE_SOURCES), "--probe", probe,
        ]  # fmt: skip
        lg_err = tools.scratch("loadgen.stderr")
        lg = spawn(argv, stderr_path=lg_err, stdin=subprocess.PIPE)
        reader = LineReader(lg.stdout)
        line = reader.readline(180)
        if line is None or not line.startswith("ready "):
            raise RuntimeError(f"loadgen idle said {line!r}: {tail(lg_err)}")
        res.conns = int(line.split()[1])
        time.sleep(1.0)
        res.after_kib = tree_rss_kib(srv.pid)
        lg.stdin.write(b"\n")
        lg.stdin.flush()
        lg.stdin.close()
        rc = lg.wait(timeout=30)
        kill_quietly(lg)
        problem = srv.stop()
        srv = None
        notes = []
        if res.conns < conns:
            notes.append(f"only {res.conns} of {conns} connections opened: {tail(lg_err, 2)}")
        if rc != 0:
            notes.append(f"loadgen idle status {rc}")
        if problem:
            notes.append(problem)
        res.problem = "; ".join(notes) or None
        res.ok = res.conns > 0
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        res.problem = f"{type(e).__name__}: {e}"
    finally:
        kill_quietly(lg)
        if srv is not None:
            srv.kill()
    return res


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the children it starts
    (wrk opens as many sockets as it has connections)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


raise_nofile_limit()


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


# --------------------------------------------------------------------------
# report


def fmt_int(v: float) -> str:
    return f"{v:,.0f}" if v == v else "n/a"


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "–"
    return f"{fmt_int(min(values))}–{fmt_int(max(values))}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
