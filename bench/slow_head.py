#!/usr/bin/env python3
"""Server CPU spent on one request head sent in small pieces (a slowloris-style client).

Starts an example HTTP server (127.0.0.1, one reactor, a 60 s header timeout), sends one
head with a 60,000-byte field in writes of PIECE bytes (TCP_NODELAY, a short pause every
64 writes so they arrive as separate reads), reads the answer, and prints the server's
user+system CPU time from /proc. Bounded: one connection, one head, then the server stops.

    python3 bench/slow_head.py target/release/examples/http_hello 1 16
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(server: str, piece: int) -> None:
    srv = subprocess.Popen([server, "--host", "127.0.0.1", "--port", "0", "--threads", "1",
                            "--max-header-bytes", "65536", "--header-timeout-ms", "60000"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline().rsplit(":", 1)[1])
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 60000 + b"\r\n\r\n"
        before = cpu_seconds(srv.pid)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, at in enumerate(range(0, len(head), piece)):
                s.sendall(head[at:at + piece])
                if i % 64 == 0:
                    time.sleep(0.0005)
            s.settimeout(30)
            status = s.recv(12)
        spent = cpu_seconds(srv.pid) - before
        print(f"piece {piece:>5} B: {len(head) // piece:>6} writes, answer {status!r}, "
              f"server CPU {spent:.2f} s")
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for piece in sys.argv[2:]:
        run(sys.argv[1], int(piece))


if __name__ == "__main__":
    main()
