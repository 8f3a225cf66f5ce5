"""A lean HTTP/1.1 client for the per-request upstream path: asyncio protocols, the httptools
response parser (the one uvicorn uses), and a keep-alive pool per upstream.

Why not aiohttp's ClientSession: on this path it spends most of its time in request/response object
machinery veil does not need; `veil bench` shows the difference. This module does exactly what the
proxy needs: send a request (body streamed), read the whole response up to a size limit, reuse the
connection when both sides allow it. Nothing else imports it: `upstream.py` is the seam.

Deadlines: `pool_timeout` for a free connection slot (kind `pool`); `connect_timeout` for the TCP
(and TLS) handshake; `read_timeout` between two reads of the response (a stalled upstream is cut off
even mid-body); `total_timeout` for the whole exchange from the slot on: connecting, sending the
request (a streamed body included) and reading the response (an upstream dribbling a byte a second
is cut off too). A request on a reused connection that fails before any response byte arrived is
retried once on a new connection when the method is idempotent (the upstream may have closed an idle
keep-alive connection).

Interim responses (1xx other than 101) are skipped: veil never forwards `Expect`, but an upstream may
send `100 Continue` or `103 Early Hints` anyway. A status outside 100-599 is refused (kind `status`).

A streamed request body that fails (the client went away, stalled, sent too much: an exception from
its iterator) aborts the connection: the upstream never receives a terminating chunk or the missing
Content-Length bytes, so it cannot take a cut-off body for a whole one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from veil.errors import VeilError

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class H1Error(VeilError):
    """An upstream connection failure; `kind` is its metric label (translated into UpstreamError by
    veil.proxy.upstream)."""

    code = "upstream_unavailable"

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind  # pool | connect | timeout | reset | protocol | status | too_large


class _AfterResponse(VeilError):
    """Data after a complete response: the connection is closed, the response stands."""


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._end = 0.0  # the total deadline of the current exchange (loop time)
        self._drained: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self._reset_state(0, 0.0)

    def _reset_state(self, max_bytes: int, read_timeout: float) -> None:
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.got_bytes = False
        self.headers_done = False
        self.until_eof = False  # no Content-Length, not chunked: the body ends when the connection does
        self.interim = False  # the message being parsed is a 1xx interim response
        self.status = 0  # of the final response
        self.complete = False
        self.keep_alive = False
        self.error: H1Error | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        deadline = self.loop.time() + self.read_timeout  # the timer checks it when it fires
        self._deadline = deadline if deadline < self._end else self._end
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(H1Error("protocol", "unexpected protocol upgrade"))
        except httptools.HttpParserError:
            if self.error is None:
                self._fail(H1Error("protocol", "malformed HTTP response"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.resume_writing()
        if self.complete or self._waiter is None:
            return
        if self.until_eof and self.error is None and exc is None:
            self.on_message_complete()
        else:
            self._fail(H1Error("reset", "the upstream closed the connection"))

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the response (another response?): never read as part of it
            raise _AfterResponse("data after a complete response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 102, 103 Early Hints: the final response follows
            return
        if not 200 <= status <= 599:
            self._fail(H1Error("status", f"the upstream answered with status {status}"))
            return
        self.status = status
        self.headers_done = True
        framed = False
        for name, value in self.headers:
            low = name.lower()
            if low == "content-length":
                framed = True
                if value.strip().isdigit() and int(value) > self.max_bytes:
                    self._fail(H1Error("too_large"))
                    return
            elif low == "transfer-encoding":
                framed = True
        self.until_eof = not framed and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            self._fail(H1Error("too_large"))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
            return
        self.complete = True
        self.keep_alive = not self.until_eof and self.parser.should_keep_alive()  # reset after the feed
        self._cancel_timer()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- helpers ----------------------------------------------------------------------------------
    def _fail(self, error: H1Error) -> None:
        if self.error is None:
            self.error = error
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _arm_timer(self) -> None:
        """One timer per response: reads push `_deadline` on, and the timer re-arms itself for the
        rest when it fires early (cheaper than a new timer per read)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.read_timeout > 0 and self._waiter is not None:
            deadline = self.loop.time() + self.read_timeout
            self._deadline = deadline if deadline < self._end else self._end
            self._timer = self.loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._waiter is None or self.complete:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._timed_out)
            return
        self._fail(H1Error("timeout"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def roundtrip(self, head: bytes, body: bytes | AsyncIterator[bytes] | None, chunked: bool,
                        max_bytes: int, read_timeout: float, end: float
                        ) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        """One request and its response, by loop time `end` at the latest (H1Error "timeout")."""
        assert self.transport is not None
        self._reset_state(max_bytes, read_timeout)
        self._end = end
        self.parser = httptools.HttpResponseParser(self)
        self._waiter = self.loop.create_future()
        try:
            if body is None or isinstance(body, bytes):
                self.transport.write(head + body if body else head)
            else:
                self.transport.write(head)
                try:
                    async with asyncio.timeout_at(end):
                        await self._send_body(body, chunked)
                except TimeoutError as exc:
                    raise H1Error("timeout", "the total deadline passed while sending the request") from exc
            self._arm_timer()
            await self._waiter
        finally:
            self._cancel_timer()
            self._waiter = None
        keep = not self.closed and self.keep_alive
        return self.status, self.headers, b"".join(self.chunks), keep

    async def _send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        """Stream the body. An exception from `body` propagates before the end is written: the
        caller aborts the connection, and the upstream sees an incomplete request."""
        assert self.transport is not None
        async for chunk in body:
            if self.closed:  # the upstream answered early or went away: its answer (or error) decides
                return
            if chunked:
                if chunk:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.transport.write(chunk)
            if self._drained is not None:  # the upstream reads slower than the client sends
                await self._drained
        if chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")


class H1Pool:
    """Keep-alive connections to one upstream (scheme://host:port), at most `size` at a time."""

    def __init__(self, base_url: str, *, size: int, connect_timeout: float, read_timeout: float,
                 pool_timeout: float = 5.0, total_timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = (self.https and self.port == 443) or (not self.https and self.port == 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode("idna")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_timeout = pool_timeout
        self.total_timeout = total_timeout
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: deque[_Conn] = deque()
        self._slots = asyncio.Semaphore(size)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(loop), self.host, self.port, ssl=self._ssl),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise H1Error("timeout", "connect timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise H1Error("connect", str(exc.strerror or exc)) from exc
        return conn

    def _take_idle(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | AsyncIterator[bytes] | None, max_bytes: int
                      ) -> tuple[int, list[tuple[str, str]], bytes]:
        has_length = any(n.lower() == "content-length" for n, _ in headers)
        chunked = body is not None and not isinstance(body, bytes) and not has_length
        lines = [f"{method} {self.prefix}{target} HTTP/1.1".encode("latin-1"), b"host: " + self.host_header]
        lines += [f"{n}: {v}".encode("latin-1") for n, v in headers]
        if isinstance(body, bytes) and not has_length:
            lines.append(b"content-length: %d" % len(body))
        elif chunked:
            lines.append(b"transfer-encoding: chunked")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        await self._acquire()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.total_timeout
            for attempt in (0, 1):
                conn = self._take_idle()
                if conn is None:
                    try:
                        async with asyncio.timeout_at(end):
                            conn = await self._connect()
                    except TimeoutError as exc:
                        raise H1Error("timeout", "the total deadline passed while connecting") from exc
                try:
                    status, rheaders, rbody, keep = await conn.roundtrip(
                        head, body, chunked, max_bytes, self.read_timeout, end)
                except H1Error as exc:
                    retry = (attempt == 0 and conn.reused and not conn.got_bytes and exc.kind == "reset"
                             and method in IDEMPOTENT and (body is None or isinstance(body, bytes)))
                    if conn.transport is not None:
                        conn.transport.abort()
                    if retry:
                        continue
                    raise
                except BaseException:  # the request body failed, or the caller was cancelled
                    if conn.transport is not None:
                        conn.transport.abort()
                    raise
                if keep:
                    self._idle.append(conn)
                elif conn.transport is not None:
                    conn.transport.close()
                return status, rheaders, rbody
            raise H1Error("reset")  # pragma: no cover - the loop always returns or raises
        finally:
            self._slots.release()

    async def _acquire(self) -> None:
        """A connection slot, waiting at most `pool_timeout` when all are taken (H1Error "pool")."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(self.pool_timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise H1Error("pool", "no upstream connection became free in time") from exc

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()
