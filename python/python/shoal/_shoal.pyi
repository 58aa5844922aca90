"""Type stubs of the native module ``shoal._shoal`` (re-exported by ``shoal``)."""

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeAlias, TypedDict, TypeVar, final, overload

# From typing_extensions (bundled with every type checker) so the stubs hold for 3.10 too.
from typing_extensions import Buffer as _BufferProtocol
from typing_extensions import Self, Unpack

__version__: str

_T = TypeVar("_T")

# Any object with the buffer protocol (bytes, bytearray, memoryview, array.array, mmap, ...).
Buffer: TypeAlias = _BufferProtocol
HeaderValue: TypeAlias = str | bytes | int
HeadersArg: TypeAlias = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | None
Body: TypeAlias = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any] | Iterable[bytes | str] | None
ReturnValue: TypeAlias = (
    Body | tuple[int, Body] | tuple[int, HeadersArg, Body] | Response
)

class ShoalError(Exception):
    """Base class of the errors shoal raises."""

class ConnectionClosed(ShoalError):
    """The connection is closed (or the object names a connection that no longer exists)."""

class ServerStopped(ShoalError):
    """The server is stopped or stopping."""

class WriteOverflow(ShoalError):
    """The write would exceed max_write_buffer; the connection is being closed."""

class InvalidResponse(ShoalError):
    """A response could not be sent as asked (a bad header, a response already sent)."""

class ConfigError(ShoalError, ValueError):
    """A configuration value is out of range."""

@final
class Connection:
    """A connection of a :class:`Server`, passed to every callback; usable from any thread.

    Set any attribute on it to keep per-connection state. Once closed, every method raises
    :class:`ConnectionClosed`.
    """

    @property
    def id(self) -> int: ...
    @property
    def peer(self) -> tuple[str, int] | None: ...
    @property
    def local(self) -> tuple[str, int] | None: ...
    @property
    def open(self) -> bool: ...
    def write(self, data: Buffer) -> None:
        """Queues bytes for writing; raises ConnectionClosed or WriteOverflow."""
    def wait_writable(self, timeout: float | None = None) -> bool:
        """From a thread of your own, waits (GIL released) until at most
        ``write_low_watermark`` bytes are queued, so writing more than ``max_write_buffer`` to
        a slow client never overflows it; call it before each write. False when ``timeout``
        passed first; ConnectionClosed once the connection is gone; ShoalError inside a
        callback or on one of the server's threads."""
    def close(self) -> None:
        """Closes once queued output is flushed."""
    def shutdown(self) -> None:
        """Closes once queued output is flushed, reading and discarding the peer's input
        until it closes (or ``linger_timeout``), so the peer reads the last reply even while
        it is still sending (a plain ``close`` could make the kernel reset the connection)."""
    def abort(self) -> None:
        """Closes at once, discarding queued output."""
    def set_timer(self, seconds: float, tag: int = 0) -> None:
        """Calls ``on_timer(conn, tag)`` after ``seconds``."""
    def cancel_timer(self, tag: int = 0) -> None:
        """Cancels the pending timers with ``tag``."""
    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

class EngineOptions(TypedDict, total=False):
    """Keyword options of every server. Times are seconds; None turns off ``keepalive``,
    ``idle_timeout``, ``read_timeout``, ``write_timeout``, ``handler_timeout`` (and, for
    HTTP, ``response_timeout``); the other times cannot be off."""

    host: str
    port: int
    threads: int
    workers: int
    queue: int
    inline: bool
    gil_batch: int
    reuse_port: bool
    backlog: int
    nodelay: bool
    keepalive: float | None
    recv_buffer_size: int
    send_buffer_size: int
    read_buffer_size: int
    max_read_buffer: int
    write_high_watermark: int
    write_low_watermark: int
    max_write_buffer: int
    idle_timeout: float | None
    read_timeout: float | None
    write_timeout: float | None
    write_min_rate: int | None
    connect_timeout: float
    max_connections: int
    shutdown_grace: float
    linger_timeout: float
    max_pending_input: int
    handler_timeout: float | None
    accept_backoff: float
    events_capacity: int
    read_budget: int
    pool_buffer_size: int
    pool_max_free: int

class HttpOptions(EngineOptions, total=False):
    """Keyword options of :class:`HttpServer`."""

    max_header_bytes: int
    max_headers: int
    max_target_len: int
    max_body_size: int
    max_chunk_line: int
    max_pipelined: int
    max_requests_per_connection: int | None
    header_read_timeout: float
    body_read_timeout: float
    body_min_rate: int | None
    keepalive_timeout: float
    response_timeout: float | None

class StreamHandler(Protocol):
    """An object whose methods are the callbacks (each but on_data optional)."""

    def on_data(self, conn: Connection, data: bytes, /) -> int | None: ...

class Server:
    """A TCP server calling Python functions for connection events.

    The server is made, and its port bound, by ``__new__``: a subclass that needs its own
    arguments takes them in ``__new__`` and passes the server's on with
    ``super().__new__(cls, ...)``.
    """

    def __new__(
        cls,
        handler: StreamHandler | None = None,
        *,
        on_data: Callable[[Connection, bytes], int | None] | None = None,
        on_open: Callable[[Connection], object] | None = None,
        on_eof: Callable[[Connection], bool | None] | None = None,
        on_drain: Callable[[Connection], object] | None = None,
        on_timer: Callable[[Connection, int], object] | None = None,
        on_close: Callable[[Connection, str], object] | None = None,
        **options: Unpack[EngineOptions],
    ) -> Self: ...
    def start(self) -> None:
        """Starts the threads and returns; the server is then listening."""
    def stop(self) -> None:
        """Asks the server to stop gracefully; returns at once."""
    def wait(self, timeout: float | None = None) -> bool:
        """Waits for a started server to finish; returns whether it did."""
    def run(self) -> None:
        """Starts and serves until stopped; on Ctrl-C stops gracefully and re-raises."""
    def connect(self, host: str, port: int) -> int:
        """Opens an outbound connection served by the same callbacks; returns its id.

        Resolving ``host`` runs with the interpreter released; ``ValueError`` if it fails.
        If it never connects, ``on_close`` alone runs (reason ``"connect_failed"``,
        ``"connect_timeout"`` or ``"shutdown"``). ``OSError`` (and no callback) if the system
        refuses to begin the connect at all; ``ServerStopped`` once the server is stopping.
        """
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def running(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class Headers(Mapping[str, str]):
    """Request header fields: a read-only, case-insensitive mapping (values decoded as Latin-1).

    A name sent in several fields appears once per field in ``keys()``, ``items()``,
    iteration and ``len()``; ``h[name]`` and ``get`` give its first value, ``getall`` all.
    """

    @overload  # type: ignore[override]
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    @overload
    def get(self, name: str, default: _T) -> str | _T: ...
    def getall(self, name: str) -> list[str]: ...
    def items(self) -> list[tuple[str, str]]: ...  # type: ignore[override]
    def keys(self) -> list[str]: ...  # type: ignore[override]
    def values(self) -> list[str]: ...  # type: ignore[override]
    def __getitem__(self, name: str) -> str: ...
    def __contains__(self, name: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...

@final
class Request:
    """One HTTP request, copied out of the connection."""

    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str | None: ...
    @property
    def version(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def body(self) -> bytes: ...
    @property
    def conn_id(self) -> int: ...
    @property
    def peer(self) -> tuple[str, int] | None: ...
    def defer(self) -> Responder:
        """Takes the response away to answer it later from any thread (only during the call)."""

@final
class Response:
    """A response a handler returns.

    An iterable body is sent chunked: its chunks are gathered while the handler runs and
    leave once it returns, at most ``max_write_buffer`` in all (for a large or endless body,
    ``Request.defer()`` and ``Responder.stream()`` from another thread, which waits for the
    client between pieces). It is not run for a
    response without a body (HEAD, 204, 304).
    """

    def __init__(
        self,
        body: Body = None,
        status: int = 200,
        headers: HeadersArg = None,
        content_type: str | None = None,
    ) -> None: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> HeadersArg: ...
    @property
    def body(self) -> Body: ...
    @property
    def content_type(self) -> str | None: ...

@final
class Stream:
    """The body of a streamed deferred response."""

    def write(self, data: Buffer | str) -> None:
        """Sends one piece. From a thread of your own it first waits, with the GIL released,
        while more than ``write_low_watermark`` of output is queued, so a body of any size
        stays within ``max_write_buffer`` however slowly the client reads (an iterable given
        to ``Responder.send`` is paced the same way). Inside a callback it does not wait."""
    def finish(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> bool: ...

@final
class Responder:
    """A deferred response, answered once from any thread."""

    def send(
        self,
        body: Body = None,
        status: int = 200,
        headers: HeadersArg = None,
        content_type: str | None = None,
    ) -> None: ...
    def stream(
        self,
        status: int = 200,
        headers: HeadersArg = None,
        content_type: str | None = None,
    ) -> Stream: ...
    @property
    def conn_id(self) -> int: ...
    @property
    def done(self) -> bool: ...

class Handler(Protocol):
    def __call__(self, request: Request, /) -> ReturnValue: ...

@final
class HttpServer(Server):
    """An HTTP/1.1 server calling ``handler(request)`` for every request."""

    def __new__(cls, handler: Handler, **options: Unpack[HttpOptions]) -> Self: ...  # type: ignore[override]
