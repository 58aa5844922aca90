#!/usr/bin/env python3
"""Charts of a `make bench` run: bench/charts/*.png from target/bench/suite/results.json.

    target/bench-venv/bin/python bench/charts.py RESULTS_JSON OUT_DIR

Run by bench/suite.py with the bench venv's interpreter (matplotlib comes from
bench/python/requirements.txt). Draws, from the medians of the run:

- http_per_cpu.png   HTTP requests per server CPU-second, per workload and server (the headline)
- http_sweep.png     the connection-count sweep: requests per CPU-second and p99 latency
- echo_per_cpu.png   echo round trips per server CPU-second
- python_per_cpu.png the Python handler against granian, uvloop and epoll
- idle_memory.png    bytes per idle connection
- callgrind.png      user-space instructions per request

A chart whose data the run does not have is not drawn (and an old one is removed, so the
charts never mix runs).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

CHARTS = ["http_per_cpu", "http_sweep", "echo_per_cpu", "python_per_cpu", "idle_memory", "callgrind"]
SHOAL_COLORS = {"shoal": "#1f5fa8", "shoal-c": "#3d85d8", "shoal-pool": "#7fb0e8", "shoal-py": "#1f5fa8",
                "shoal-py-inline": "#3d85d8", "shoal-py-w1": "#7fb0e8"}  # fmt: skip
REF_COLOR = "#555555"
# One color per peer in every chart.
FIXED_COLORS = {"hyper": "#d9822b", "may_minihttp": "#7f9e3a", "fasthttp": "#b04a5a", "nethttp": "#8a6bb8",
                "nginx": "#3a9e95", "tokio": "#c4a53a", "libuv": "#8c564b", "go": "#e377c2",
                "granian": "#17becf", "uvloop": "#bcbd22"}  # fmt: skip
PEER_COLORS = ["#9edae5", "#c5b0d5", "#f7b6d2", "#dbdb8d"]


def colors_for(servers: list[str]) -> dict[str, str]:
    out, i = {}, 0
    for s in servers:
        if s in SHOAL_COLORS:
            out[s] = SHOAL_COLORS[s]
        elif s == "epoll":
            out[s] = REF_COLOR
        elif s in FIXED_COLORS:
            out[s] = FIXED_COLORS[s]
        else:
            out[s] = PEER_COLORS[i % len(PEER_COLORS)]
            i += 1
    return out


def median_of(points, server, field="per_cpu", **match):
    vals = [
        p[field] for p in points
        if p["server"] == server and p["ok"] and p.get(field) is not None and all(p.get(k) == v for k, v in match.items())
    ]  # fmt: skip
    return statistics.median(vals) if vals else None


def grouped_bars(path: Path, title: str, ylabel: str, groups: list[str], servers: list[str], value, note: str = "") -> bool:
    """Bars per group (workload) and server; value(group_index, server) -> float | None."""
    data = {s: [value(i, s) for i in range(len(groups))] for s in servers}
    servers = [s for s in servers if any(v for v in data[s])]
    if not servers:
        return False
    colors = colors_for(servers)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.1 * len(groups) * (len(servers) + 1) / 2.2), 4.6), dpi=110)
    width = 0.8 / len(servers)
    for j, s in enumerate(servers):
        xs = [i + (j - (len(servers) - 1) / 2) * width for i in range(len(groups))]
        ys = [v or 0 for v in data[s]]
        ax.bar(xs, ys, width * 0.92, label=s, color=colors[s], edgecolor="white", linewidth=0.5)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=min(len(servers), 5), loc="upper left", frameon=False)
    ymax = max(v or 0 for vs in data.values() for v in vs)
    ax.set_ylim(0, ymax * 1.25)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return True


def wl(conns: int, depth: int) -> str:
    return f"{conns} conns\n" + ("no pipelining" if depth == 1 else f"pipeline {depth}")


def http_chart(res: dict, out: Path) -> bool:
    http = res.get("http")
    if not http:
        return False
    pts = [p for p in http["points"] if p.get("kind", "main") == "main"]
    wls = [tuple(w) for w in http["workloads"]]
    servers = [s for s in http["servers"] if s not in http["missing"]]
    return grouped_bars(
        out / "http_per_cpu.png", "HTTP GET / → Hello, World!: requests per server CPU-second (one core, median)",
        "requests / server CPU-s", [wl(c, d) for c, d in wls], servers,
        lambda i, s: median_of(pts, s, conns=wls[i][0], depth=wls[i][1]),
        note=f"{res['meta']['date']}; wrk on the other core; bench/suite.py",
    )  # fmt: skip


def sweep_chart(res: dict, out: Path) -> bool:
    http = res.get("http")
    sweep = (http or {}).get("settings", {}).get("sweep") or []
    if not http or not sweep:
        return False
    pts = [p for p in http["points"] if p.get("kind") == "sweep"]
    servers = [s for s in http["sweep_servers"] if s not in http["missing"]]
    colors = colors_for(servers)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    drawn = False
    for s in servers:
        xs, per, p99 = [], [], []
        for c in sweep:
            v = median_of(pts, s, conns=c)
            if v is None:
                continue
            xs.append(c)
            per.append(v)
            p99.append(median_of(pts, s, "p99", conns=c))
        if not xs:
            continue
        drawn = True
        a1.plot(xs, per, marker="o", label=s, color=colors[s])
        pairs = [(x, y) for x, y in zip(xs, p99) if y]
        if pairs:
            a2.plot([x for x, _ in pairs], [y for _, y in pairs], marker="o", label=s, color=colors[s])
    if not drawn:
        plt.close(fig)
        return False
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("connections")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    a1.set_ylabel("requests / server CPU-s")
    a1.set_ylim(bottom=0)
    a1.set_title("HTTP, no pipelining: requests per CPU-second", fontsize=10)
    a2.set_yscale("log")
    a2.set_ylabel("p99 latency, µs (wrk)")
    a2.set_title("p99 latency", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "http_sweep.png")
    plt.close(fig)
    return True


def echo_chart(res: dict, out: Path) -> bool:
    echo = res.get("echo")
    if not echo:
        return False
    wls = [tuple(w) for w in echo["workloads"]]
    servers = [s for s in echo["servers"] if s not in echo["missing"]]
    return grouped_bars(
        out / "echo_per_cpu.png", "Echo, 64-byte ping-pong: round trips per server CPU-second (one core, median)",
        "round trips / server CPU-s", [f"{c} connections" for c, _ in wls], servers,
        lambda i, s: median_of(echo["points"], s, conns=wls[i][0]),
    )  # fmt: skip


def python_chart(res: dict, out: Path) -> bool:
    py = res.get("python")
    if not py:
        return False
    groups, getters, servers = [], [], []
    for key in ("http", "echo"):
        sec = py.get(key)
        if not sec:
            continue
        for s in sec["servers"]:
            if s not in sec["missing"] and s not in servers:
                servers.append(s)
        for k in sec["keys"]:
            if key == "http":
                groups.append("HTTP " + wl(k[0], k[1]))
                getters.append(lambda s, k=k, sec=sec: median_of(sec["points"], s, conns=k[0], depth=k[1]))
            else:
                groups.append(f"echo {k[0]} conns\n64 B")
                getters.append(lambda s, k=k, sec=sec: median_of(sec["points"], s, conns=k[0]))
    if not groups:
        return False
    return grouped_bars(
        out / "python_per_cpu.png", "Python handlers: requests per server CPU-second (one core, median)",
        "requests / server CPU-s", groups, servers, lambda i, s: getters[i](s),
    )  # fmt: skip


def memory_chart(res: dict, out: Path) -> bool:
    rows = []
    for key, label in (("http", "HTTP"), ("echo", "echo"), ("python", "Python echo")):
        for m in (res.get(key) or {}).get("memory", []):
            if m["ok"] and m.get("per_conn") is not None:
                rows.append((f"{m['server']} ({label})", max(0.0, m["per_conn"]), m["server"]))
    if not rows:
        return False
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.4), dpi=110)
    colors = colors_for(list(dict.fromkeys(r[2] for r in rows)))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[colors[r[2]] for r in rows])
    ax.axvline(512, color="#b04a5a", linestyle="--", linewidth=1)
    ax.text(512, len(rows) - 0.5, " 512 B target", color="#b04a5a", fontsize=8, va="top")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("bytes of server RSS per idle connection (10,000 connections)")
    ax.set_title("Memory per idle connection", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "idle_memory.png")
    plt.close(fig)
    return True


def callgrind_chart(res: dict, out: Path) -> bool:
    cg = res.get("callgrind")
    if not cg:
        return False
    depths = cg["settings"]["depths"]
    servers = [s for s in cg["servers"] if s not in cg["missing"]]

    def value(i, s):
        c = next((c for c in cg["counts"] if c["server"] == s and c["depth"] == depths[i] and c["ok"]), None)
        return c["per_request"] if c else None

    ok = grouped_bars(
        out / "callgrind.png", "User-space instructions per request (callgrind; lower is better)", "instructions / request",
        ["no pipelining" if d == 1 else f"pipeline {d}" for d in depths], servers, value,
    )  # fmt: skip
    return ok


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    res = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "shoal", "path.simplify": True})
    drawn = {
        "http_per_cpu": http_chart(res, out),
        "http_sweep": sweep_chart(res, out),
        "echo_per_cpu": echo_chart(res, out),
        "python_per_cpu": python_chart(res, out),
        "idle_memory": memory_chart(res, out),
        "callgrind": callgrind_chart(res, out),
    }
    for name, ok in drawn.items():
        if not ok:
            (out / f"{name}.png").unlink(missing_ok=True)
        print(f"charts.py: {name}.png: {'drawn' if ok else 'no data'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
