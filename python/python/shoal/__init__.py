"""shoal: a high-concurrency TCP and HTTP/1.1 server core, written in Rust, driven from Python.

Servers run on shoal's own threads: epoll reactors that never take the interpreter, and a
pool of workers that run your callbacks (so callbacks may block). ``inline=True`` runs them
on the reactors instead, for callbacks that never block.

.. code-block:: python

    import shoal

    def on_data(conn: shoal.Connection, data: bytes) -> None:
        conn.write(data)

    shoal.Server(on_data=on_data, port=9000).run()   # Ctrl-C stops it gracefully

Exceptions raised by callbacks are logged to the ``shoal`` logger and close only their
connection.
"""

from collections.abc import Mapping as _Mapping

from ._shoal import (
    ConfigError,
    Connection,
    ConnectionClosed,
    Headers,
    HttpServer,
    InvalidResponse,
    Request,
    Responder,
    Response,
    Server,
    ServerStopped,
    ShoalError,
    Stream,
    WriteOverflow,
    __version__,
)

# Request headers behave as a read-only mapping; isinstance() says so too.
_Mapping.register(Headers)

__all__ = [
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "Headers",
    "HttpServer",
    "InvalidResponse",
    "Request",
    "Responder",
    "Response",
    "Server",
    "ServerStopped",
    "ShoalError",
    "Stream",
    "WriteOverflow",
    "__version__",
]
