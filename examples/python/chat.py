"""chat: a line-based chat room. Every line a client sends goes to every other client.

    python examples/python/chat.py --port 9100

Commands: "/nick NAME" changes your name, "/who" lists who is here. Lines longer than 4 KiB
are refused and the sender is disconnected.
"""

from __future__ import annotations

import itertools
import threading

import _cli

import shoal

MAX_LINE = 4096


class Room:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.members: dict[int, shoal.Connection] = {}
        self.guests = itertools.count(1)

    def join(self, conn: shoal.Connection) -> None:
        conn.nick = f"guest{next(self.guests)}"
        with self.lock:
            self.members[conn.id] = conn
        conn.write(f"* welcome, {conn.nick}; /nick NAME, /who\n".encode())
        self.broadcast(conn, f"* {conn.nick} joined\n")

    def leave(self, conn: shoal.Connection, reason: str) -> None:
        with self.lock:
            self.members.pop(conn.id, None)
        self.broadcast(conn, f"* {conn.nick} left ({reason})\n")

    def broadcast(self, sender: shoal.Connection, text: str) -> None:
        data = text.encode()
        with self.lock:
            others = [c for cid, c in self.members.items() if cid != sender.id]
        for c in others:
            try:
                c.write(data)
            except shoal.ShoalError:
                pass  # gone meanwhile, or a reader too slow (its connection is closing)

    def on_data(self, conn: shoal.Connection, data: bytes) -> int:
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        # A line too long, finished or still arriving: say why, then a lingering close (a
        # plain close with unread input could reset the connection before the reply is read).
        if len(data) - end > MAX_LINE or any(len(raw) > MAX_LINE for raw in lines):
            conn.write(b"* line too long\n")
            conn.shutdown()
            return len(data)
        if end == 0:
            return 0  # wait for the rest of the line
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if line.startswith("/nick "):
                old, conn.nick = conn.nick, line[6:].strip()[:32] or conn.nick
                self.broadcast(conn, f"* {old} is now {conn.nick}\n")
            elif line == "/who":
                with self.lock:
                    names = sorted(c.nick for c in self.members.values())
                conn.write(("* here: " + ", ".join(names) + "\n").encode())
            elif line:
                self.broadcast(conn, f"{conn.nick}: {line}\n")
        return end


def main() -> None:
    args = _cli.parser("line-based chat server", 9100).parse_args()
    room = Room()
    server = shoal.Server(on_open=room.join, on_data=room.on_data, on_close=room.leave,
                          **_cli.options(args))
    _cli.serve(server, "chat")


if __name__ == "__main__":
    main()
