"""Flags and signal handling shared by the Python examples (as examples/c/cli.h is for C)."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

import shoal


def parser(description: str, port: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port, help="0 picks a free port")
    p.add_argument("--threads", type=int, default=None, help="reactor threads (default: cores)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker threads running the callbacks (default 4)")
    p.add_argument("--inline", action="store_true",
                   help="run callbacks on the reactor threads (for callbacks that never block)")
    p.add_argument("--gil-batch", type=int, default=None,
                   help="callbacks a worker runs per GIL acquisition (default 16)")
    p.add_argument("--idle-timeout", type=float, default=None, help="seconds; default off")
    p.add_argument("--max-connections", type=int, default=None)
    return p


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The server options given on the command line (absent ones keep shoal's defaults)."""
    out: dict[str, Any] = {"host": args.host, "port": args.port}
    for name in ["threads", "workers", "gil_batch", "idle_timeout", "max_connections"]:
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.inline:
        out["inline"] = True
    return out


def serve(server: shoal.Server, name: str) -> None:
    """Prints the address, serves until SIGINT or SIGTERM, stops gracefully, exits 0."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_term)
    host, port = server.address
    # The example-server convention (as the C and Rust examples): exactly this line.
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in brackets
    print(f"listening on {shown}:{port}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    print(f"{name}: stopped", file=sys.stderr, flush=True)
