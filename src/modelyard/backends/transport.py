"""A lean HTTP/1.1 client for upstream calls: pooled keep-alive connections, parsed by httptools.

aiohttp's full client (cookies, redirects, tracing, per-call timers) was about half of the gateway's CPU per proxied
request. Upstream calls need none of that: one POST, a status, headers, and a body read whole or as it arrives.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import AsyncIterator
from urllib.parse import urlsplit

import httptools

_END = object()


class TransportError(Exception):
    """The connection failed (refused, reset, closed early, malformed response)."""


class _Connection(asyncio.Protocol):
    """One connection and the response arriving on it. Body pieces queue in `chunks`; a reader waiting for one has
    its future in `waiter`, resolved by the piece's arrival (no Event, no task switch beyond the reader's own)."""

    __slots__ = ("transport", "parser", "closed", "status", "headers", "headers_done", "chunks", "waiter",
                 "complete", "keep_alive", "got_bytes")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reset()

    def reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done: asyncio.Future = loop.create_future()
        self.chunks: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(TransportError(f"connection closed{': ' + str(exc) if exc else ''}"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if not self.headers_done.done():
            self.headers_done.set_exception(exc)
        self.chunks.append(exc)
        self._wake()
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.chunks.append(_END)
        self._wake()


class _IdleWatch:
    """Bounds each wait for a body piece with one timer per idle period, not one per piece: a stream relaying a
    token every 50 ms would otherwise make and cancel a timer for every token. The timer, when it fires, fails the
    wait in progress if it began `limit` seconds ago, else moves itself to that wait's own deadline."""

    __slots__ = ("loop", "conn", "limit", "since", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: _Connection, limit: float) -> None:
        self.loop = loop
        self.conn = conn
        self.limit = limit
        self.since = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        self.since = self.loop.time()
        if self.handle is None:
            self.handle = self.loop.call_at(self.since + self.limit, self._check)

    def _check(self) -> None:
        self.handle = None
        waiter = self.conn.waiter
        if waiter is None or waiter.done():
            return  # not waiting now: the next wait arms the timer again
        due = self.since + self.limit
        if self.loop.time() + 0.001 >= due:  # timers may fire a little early (uvloop counts whole milliseconds)
            waiter.set_exception(TransportError(f"no data for {self.limit:g} s"))
        else:
            self.handle = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class Response:
    """One response; `release()` returns its connection to the pool when the body was read to the end."""

    def __init__(self, pool: "Pool", conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def iter_any(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        """Body pieces as they arrive; `idle_timeout` bounds each wait for the next piece."""
        conn = self._conn
        chunks = conn.chunks
        loop = asyncio.get_running_loop()
        idle = _IdleWatch(loop, conn, idle_timeout) if idle_timeout is not None else None
        try:
            while True:
                while not chunks:
                    waiter = conn.waiter = loop.create_future()
                    if idle is not None:
                        idle.waiting()
                    await waiter
                item = chunks.popleft()
                if type(item) is bytes:
                    yield item
                elif item is _END:
                    return
                else:
                    raise item
        finally:
            if idle is not None:
                idle.cancel()

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_any()])

    def release(self) -> None:
        self._pool._release(self._conn)


class Pool:
    """Keep-alive connections to one origin, at most `limit` at once (extra callers wait for one)."""

    def __init__(self, base_url: str, *, limit: int) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.host_header = parts.netloc.encode("latin-1")
        self.prefix = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(limit)
        self.closed = False

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self.https else None)
        except TimeoutError:
            raise TransportError(f"connect to {self.host}:{self.port} timed out after {timeout:g} s") from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn

    async def post(self, path: str, body: bytes, headers: dict[str, str], *, connect_timeout: float) -> Response:
        """Send a POST and wait for the response headers. The caller bounds the wait and calls release()."""
        head = b"".join([b"POST ", (self.prefix + path).encode(), b" HTTP/1.1\r\nHost: ", self.host_header,
                         b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n",
                         *[f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()], b"\r\n"])
        await self._slots.acquire()
        conn: _Connection | None = None
        try:
            for attempt in (0, 1):
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(connect_timeout)
                conn.reset()
                try:
                    conn.transport.write(head + body)  # type: ignore[union-attr]
                    await conn.headers_done
                except (TransportError, RuntimeError, OSError) as exc:
                    # a kept-alive connection the server had already closed: try once more on a fresh one
                    if reused and attempt == 0 and not conn.got_bytes:
                        continue
                    raise exc if isinstance(exc, TransportError) else TransportError(str(exc)) from exc
                return Response(self, conn)
            raise TransportError("unreachable")  # pragma: no cover
        except BaseException:
            self._slots.release()
            if conn is not None and conn.transport is not None:  # cancelled or failed mid-request: never reuse
                conn.closed = True
                conn.transport.close()
            raise

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        if conn.complete and conn.keep_alive and not conn.closed and not self.closed:
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.closed = True
            conn.transport.close()

    async def close(self) -> None:
        self.closed = True
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()
