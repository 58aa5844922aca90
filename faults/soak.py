#!/usr/bin/env python3
"""Soak: wrk load, repeated slowloris runs and a reset storm together against one server,
sampling its RSS and descriptor count every second.

    python3 faults/soak.py                 # 10 minutes (SOAK_SECONDS or --seconds to change)

Writes target/faults/soak.csv and soak.png (when matplotlib is importable) and a summary.
Fails if, once load is steady (after the first minute), the median RSS or descriptor count
of any later minute drifts more than 5% from the first minute's, if wrk saw any error or
non-2xx response, or if the server died. Only 127.0.0.1 is contacted; everything stops by
itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HOST, OUT, Target, log  # noqa: E402

DRIFT = 0.05
FD_SLACK = 8  # descriptors: connection churn makes small absolute wobble meaningless


def wrk_loop(port: int, seconds: int, results: list[str], stop: threading.Event) -> None:
    """wrk in 30-second runs, 64 connections, until the soak ends."""
    end = time.monotonic() + seconds
    while not stop.is_set():
        left = int(end - time.monotonic())
        if left < 2:
            break
        run = min(30, left)
        out = subprocess.run(["wrk", "-t1", "-c64", f"-d{run}s", "--timeout", "5s",
                              f"http://{HOST}:{port}/"], capture_output=True, text=True,
                             timeout=run + 30)
        results.append(out.stdout + out.stderr)


def slowloris_loop(port: int, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        subprocess.run(["slowhttptest", "-H", "-c", "300", "-i", "1", "-r", "150", "-l", "15",
                        "-p", "3", "-u", f"http://{HOST}:{port}/"], capture_output=True,
                       timeout=60)


def reset_loop(port: int, stop: threading.Event, counter: list[int]) -> None:
    linger0 = struct.pack("ii", 1, 0)
    while not stop.is_set():
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"GET /big?bytes=1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            s.recv(100)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
            s.close()
            counter[0] += 1
        except OSError:
            pass
        time.sleep(0.01)


def parse_wrk(text: str) -> tuple[int, int, int]:
    """(requests, socket errors, non-2xx) of one wrk run."""
    m = re.search(r"(\d+) requests in", text)
    reqs = int(m.group(1)) if m else 0
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    return reqs, errs, non2xx


def plot(samples: list[tuple[float, int, int]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s[0] for s in samples]
    fig, ax1 = plt.subplots(figsize=(9, 4))
    ax1.plot(t, [s[1] / 1024 for s in samples], color="tab:blue", label="RSS (MiB)")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("RSS (MiB)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(t, [s[2] for s in samples], color="tab:orange", label="descriptors")
    ax2.set_ylabel("open descriptors", color="tab:orange")
    ax1.set_title("shoal soak: wrk + slowloris + reset storm")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--server", default="rust", choices=["rust", "c"])
    args = ap.parse_args()
    if args.seconds < 120:
        ap.error("a soak needs at least 120 seconds (a steady first minute and one to compare)")
    for tool in ("wrk", "slowhttptest"):
        if not shutil.which(tool):
            log(f"{tool} is not installed (bench/setup.sh installs wrk, faults/setup.sh "
                f"slowhttptest)")
            return 1
    OUT.mkdir(parents=True, exist_ok=True)
    t = Target(args.server, ["--max-connections", "4096"])
    stop = threading.Event()
    wrk_out: list[str] = []
    resets = [0]
    threads = [
        threading.Thread(target=wrk_loop, args=(t.port, args.seconds, wrk_out, stop)),
        threading.Thread(target=slowloris_loop, args=(t.port, stop), daemon=True),
        threading.Thread(target=reset_loop, args=(t.port, stop, resets), daemon=True),
    ]
    for th in threads:
        th.start()
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    alive = True
    try:
        while time.monotonic() - started < args.seconds:
            time.sleep(1.0)
            if not t.alive():
                alive = False
                break
            samples.append((time.monotonic() - started, t.rss_kib(), t.fds()))
    finally:
        stop.set()
        threads[0].join(60)
        rc = t.stop()
    csv_path = OUT / "soak.csv"
    with open(csv_path, "w") as f:
        f.write("seconds,rss_kib,fds\n")
        for s in samples:
            f.write(f"{s[0]:.1f},{s[1]},{s[2]}\n")
    png = OUT / "soak.png"
    plotted = plot(samples, png)
    reqs = errs = non2xx = 0
    for text in wrk_out:
        a, b, c = parse_wrk(text)
        reqs, errs, non2xx = reqs + a, errs + b, non2xx + c
    problems = []
    if not alive:
        problems.append("the server died")
    minutes: list[list[tuple[float, int, int]]] = []
    for s in samples:
        i = int(s[0] // 60)
        while len(minutes) <= i:
            minutes.append([])
        minutes[i].append(s)
    minutes = [m for m in minutes if len(m) >= 30]
    lines = []
    if len(minutes) >= 2:
        rss0 = statistics.median(s[1] for s in minutes[0])
        fd0 = statistics.median(s[2] for s in minutes[0])
        for i, m in enumerate(minutes[1:], start=2):
            rss = statistics.median(s[1] for s in m)
            fds = statistics.median(s[2] for s in m)
            lines.append(f"minute {i}: median RSS {rss:.0f} KiB ({(rss / rss0 - 1) * 100:+.1f}%),"
                         f" descriptors {fds:.0f} ({fds - fd0:+.0f})")
            if abs(rss / rss0 - 1) > DRIFT:
                problems.append(f"RSS drift {(rss / rss0 - 1) * 100:+.1f}% in minute {i}")
            if abs(fds - fd0) > max(DRIFT * fd0, FD_SLACK):
                problems.append(f"descriptor drift {fds - fd0:+.0f} in minute {i}")
        lines.insert(0, f"minute 1: median RSS {rss0:.0f} KiB, descriptors {fd0:.0f}")
    else:
        problems.append("not enough samples")
    if errs or non2xx:
        problems.append(f"wrk saw {errs} socket errors and {non2xx} non-2xx responses")
    summary = [
        f"# Soak, {args.seconds} s, {args.server} server",
        "",
        f"- wrk: {reqs} requests, {errs} socket errors, {non2xx} non-2xx",
        f"- reset storm: {resets[0]} connections reset mid-response",
        f"- server exit status on SIGTERM: {rc}",
        f"- samples: {csv_path.relative_to(OUT.parent.parent)}"
        + (f", plot: {png.relative_to(OUT.parent.parent)}" if plotted else " (no matplotlib)"),
        *[f"- {line}" for line in lines],
        f"- result: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}",
    ]
    text = "\n".join(summary) + "\n"
    print(text)
    (OUT / "soak.md").write_text(text)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
