"""The client's request body, read under deadlines and a size limit, whole or not at all.

`RequestBody` is an async iterator of the body's chunks as the ASGI server hands them over. It never
ends quietly when the body does not arrive whole: a client that disconnects mid-body, stalls longer
than `limits.request_body_idle_timeout` between two reads or `limits.request_body_timeout` in all,
or sends more than `limits.max_request_body_bytes`, makes the iteration raise `RequestBodyError`
(reason `request_aborted`, `request_timeout` or `request_body_too_large`). The upstream client that
consumes it must then abort its connection without finishing the request (no terminating chunk, no
missing Content-Length bytes made up): a cut-off body never reaches the upstream as a whole one.

`read_ahead()` reads up to `limits.request_buffer_bytes` before an upstream connection is taken:
a body that fits (most do) is handed over as bytes with a Content-Length, so a slow or vanishing
client never holds an upstream connection; a larger one is streamed, the part read so far first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from veil.config import ClientLimits
from veil.errors import VeilError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]  # veil.proxy.asgi.Receive (which imports this)


class RequestBodyError(VeilError):
    """The request body did not arrive whole; `reason` is its reason code (veil.reasons.Reason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, code=reason)
        self.reason = reason  # request_aborted | request_timeout | request_body_too_large


class RequestBody:
    """See the module docstring. Iterate it once; `error` is the failure once one happened."""

    __slots__ = ("_chunks", "_deadline", "_declared", "_done", "_limits", "_receive", "_size", "error")

    def __init__(self, receive: Receive, limits: ClientLimits, declared: int | None = None) -> None:
        self._receive = receive
        self._limits = limits
        self._declared = declared  # Content-Length, when the client sent one
        self._chunks: list[bytes] = []  # read ahead, not yet handed out
        self._deadline: float | None = None  # for the whole body, set by the first read
        self._size = 0
        self._done = False
        self.error: RequestBodyError | None = None

    def _fail(self, reason: str, message: str) -> RequestBodyError:
        self.error = RequestBodyError(reason, message)
        self._done = True
        return self.error

    async def _read(self) -> bytes | None:
        """The next chunk from the client (may be empty), or None once the body is complete."""
        if self.error is not None:
            raise self.error
        if self._done:
            return None
        limits = self._limits
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None:
            self._deadline = now + limits.body_timeout
        wait = min(limits.body_idle_timeout, self._deadline - now)
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                msg = await self._receive()
        except TimeoutError:
            raise self._fail("request_timeout", "the request body did not arrive in time") from None
        if msg["type"] != "http.request":  # http.disconnect: the client went away mid-body
            raise self._fail("request_aborted", "the client closed the connection before the body was complete")
        chunk: bytes = msg.get("body", b"")
        self._size += len(chunk)
        if self._size > limits.max_body_bytes:
            raise self._fail("request_body_too_large", "the request body exceeds the size limit")
        if not msg.get("more_body", False):
            self._done = True
        return chunk

    async def read_ahead(self) -> bytes | RequestBody:
        """The whole body as bytes when it is at most `request_buffer_bytes`; else self, to be
        streamed (what was read so far comes first). Raises RequestBodyError like the iteration."""
        limit = self._limits.buffer_bytes
        if self._declared is not None:
            if self._declared > self._limits.max_body_bytes:
                raise self._fail("request_body_too_large", "the declared request body exceeds the size limit")
            if self._declared > limit:
                return self
        buffered = sum(len(c) for c in self._chunks)
        while buffered <= limit:
            chunk = await self._read()
            if chunk is None:
                body = b"".join(self._chunks)
                self._chunks.clear()
                return body
            if chunk:
                self._chunks.append(chunk)
                buffered += len(chunk)
        return self

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        while True:
            chunk = await self._read()
            if chunk is None:
                raise StopAsyncIteration
            if chunk:
                return chunk


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length (the ASGI server has validated the framing), or None."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
