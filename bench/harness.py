"""Shared plumbing of shoal's benchmark harnesses (bench/echo.py, bench/http.py).

Child processes with timeouts that are always killed on the way out, servers
that follow the example-server convention (`--host H --port P --threads N`,
one flushed `listening on HOST:PORT` line, exit 0 on SIGTERM), pinning with
taskset, CPU accounting from /proc, the quiet-machine wait and the re-run of
disturbed measurements, builds, `strace -c` summaries and report formatting.
Standard library only.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
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


def spawn(argv: list[str], *, stderr_path: Path, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE, stderr=err, bufsize=0
        )
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


class Server:
    """One running server process (optionally under strace)."""

    def __init__(self, spec: ServerSpec, tools: Tools, strace_out: Path | None = None) -> None:
        self.spec = spec
        self.stderr_path = tools.scratch(f"{spec.name}.stderr")
        argv = tools.pin(tools.server_cpu)
        if strace_out is not None:
            argv += ["strace", "-f", "-c", "-o", str(strace_out), "--"]
        argv += [str(spec.binary), *spec.args]
        self.traced = strace_out is not None
        self.proc = spawn(argv, stderr_path=self.stderr_path)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        try:
            self._wait_listening()
        except BaseException:
            self.kill()
            raise

    def _wait_listening(self) -> None:
        spec = self.spec
        reader = LineReader(self.proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RuntimeError(f"{spec.name}: no `listening on` line within {START_TIMEOUT}s") from None
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
        if self.traced:
            kid = None
            for _ in range(100):
                kid = child_pid(self.proc.pid)
                if kid:
                    break
                time.sleep(0.01)
            if kid is None:
                raise RuntimeError(f"{spec.name}: cannot find the traced server's pid")
            self.pid = kid

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


def run_build(cmd: list[str], cwd: Path, jobs: int | None, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Runs a build command under `nice -n 10` (cargo with `-j jobs`), with `env`
    added to the environment; returns (ok, why it failed)."""
    if cmd[0] == "cargo" and jobs:
        cmd = [*cmd, "-j", str(jobs)]
    full = (["nice", "-n", "10"] if shutil.which("nice") else []) + cmd
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
