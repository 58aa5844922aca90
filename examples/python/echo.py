"""echo: every byte a client sends comes back to it.

    python examples/python/echo.py --port 9000
"""

from __future__ import annotations

import time

import _cli

import shoal


def main() -> None:
    p = _cli.parser("TCP echo server", 9000)
    p.add_argument("--handler-delay", type=float, default=0.0,
                   help="seconds each on_data sleeps first (to show blocking callbacks)")
    args = p.parse_args()
    delay: float = args.handler_delay

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        if delay:
            time.sleep(delay)
        conn.write(data)

    _cli.serve(shoal.Server(on_data=on_data, **_cli.options(args)), "echo")


if __name__ == "__main__":
    main()
