"""The upstream client on the per-request path, behind one narrow seam (httpx's transport idea).

    Transport (Protocol): start(), request(method, target, headers, body, max_bytes) → UpstreamResponse, close()
      H1Transport       veil.proxy.h1client: asyncio protocols + the httptools parser (the default, `client: h1`)
      AiohttpTransport  aiohttp's ClientSession (`client: aiohttp`)
      MemoryTransport   a handler function answering in-process (conformance runs of the whole app)
    UpstreamPool        one transport per configured upstream; routes name them, the first is the default

Every transport pools keep-alive connections where it has any, streams request bodies, never follows
redirects and never decompresses. Foreign exceptions become UpstreamError with a stable reason at
this boundary. `veil bench` measured h1 and aiohttp (see the README's performance notes): h1 spends far
less CPU per request.

The socket transports keep the same deadlines (`pool_timeout` for a free connection → `upstream_busy`,
`connect_timeout`, `read_timeout` between reads, `total_timeout` for the whole exchange), skip 1xx
interim responses and refuse a status outside 200-599 (`upstream_status_invalid`). The pool reads a
request body (veil.proxy.reqbody) ahead up to `limits.request_buffer_bytes` before a transport is
called, so a slow client holds no connection while its (small) body arrives; when a body fails (the
client went away, stalled or sent too much) the transport's connection is aborted without ending the
request, and `ClientBodyError` (an UpstreamError of kind `client`) says why.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from veil.config import Upstream
from veil.errors import UpstreamFailure
from veil.proxy.h1client import H1Error, H1Pool
from veil.proxy.reqbody import RequestBody, RequestBodyError
from veil.reasons import Reason

_REASON = {"timeout": "upstream_timeout", "too_large": "body_too_large", "pool": "upstream_busy",
           "status": "upstream_status_invalid"}
# veil_upstream_errors_total{kind} (a client's failed body, kind `client`, is not an upstream error)
ERROR_KINDS = ("pool", "connect", "timeout", "reset", "protocol", "status", "too_large")

Body = AsyncIterator[bytes] | bytes | None


class UpstreamError(UpstreamFailure):
    """An upstream failure with its reason (upstream_unavailable | upstream_timeout | upstream_busy |
    upstream_status_invalid | body_too_large) and metric label `kind` (pool | connect | timeout | reset |
    protocol | status | too_large)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(Reason.of(reason), kind)


class ClientBodyError(UpstreamError):
    """The client's request body did not arrive whole (request_aborted | request_timeout |
    request_body_too_large): not the upstream's fault (kind `client`, not counted as an upstream
    error). The upstream connection, if one was taken, has been aborted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "client")


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """A request as a transport receives it (what MemoryTransport's handler sees)."""

    method: str
    target: str  # path and query, as sent
    headers: list[tuple[str, str]]
    body: bytes


class Transport(Protocol):
    async def start(self) -> None: ...

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
                      max_bytes: int) -> UpstreamResponse:
        """The whole response (its body at most `max_bytes`). Raises UpstreamError."""
        ...

    async def close(self) -> None: ...


class H1Transport:
    def __init__(self, u: Upstream) -> None:
        self._pool = H1Pool(u.url, size=u.pool_size, connect_timeout=u.connect_timeout,
                            read_timeout=u.read_timeout, pool_timeout=u.pool_timeout, total_timeout=u.total_timeout)

    async def start(self) -> None:
        return None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
                      max_bytes: int) -> UpstreamResponse:
        try:
            status, rheaders, data = await self._pool.request(method, target, headers, body, max_bytes)
        except H1Error as exc:
            raise UpstreamError(_REASON.get(exc.kind, "upstream_unavailable"), exc.kind) from exc
        return UpstreamResponse(status, rheaders, data)

    async def close(self) -> None:
        await self._pool.close()


class AiohttpTransport:
    def __init__(self, u: Upstream) -> None:
        self._u = u
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(u.pool_size)  # a slot per connection: waiting for one is bounded

    async def start(self) -> None:
        u = self._u
        connector = aiohttp.TCPConnector(limit=u.pool_size, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=u.total_timeout, sock_connect=u.connect_timeout,
                                        sock_read=u.read_timeout)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
                      max_bytes: int) -> UpstreamResponse:
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._u.pool_timeout):
                    await slots.acquire()
            except TimeoutError as exc:
                raise UpstreamError("upstream_busy", "pool") from exc
        else:
            await slots.acquire()
        try:
            return await self._request(method, target, headers, body, max_bytes)
        finally:
            slots.release()

    async def _request(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
                       max_bytes: int) -> UpstreamResponse:
        assert self._session is not None, "start() first"
        url = URL(self._u.url + target, encoded=True)
        try:
            async with self._session.request(method, url, headers=headers, data=body,
                                             allow_redirects=False) as resp:
                if not 200 <= resp.status <= 599:  # aiohttp has skipped 1xx interim responses
                    raise UpstreamError("upstream_status_invalid", "status")
                length = resp.content_length
                if length is not None and length > max_bytes:
                    raise UpstreamError("body_too_large", "too_large")
                if length is not None:
                    data = await resp.read()
                else:
                    chunks, size = [], 0
                    async for chunk in resp.content.iter_chunked(65536):
                        size += len(chunk)
                        if size > max_bytes:
                            raise UpstreamError("body_too_large", "too_large")
                        chunks.append(chunk)
                    data = b"".join(chunks)
                return UpstreamResponse(resp.status, list(resp.headers.items()), data)
        except (UpstreamError, RequestBodyError):
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError("upstream_timeout", "timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("upstream_unavailable", "connect") from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamError("upstream_unavailable", "reset") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("upstream_unavailable", "protocol") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Handler = Callable[[UpstreamRequest], UpstreamResponse | Awaitable[UpstreamResponse]]


class MemoryTransport:
    """Answers in-process with `handler(request)`: the whole app runs without sockets (wire behaviour
    is tested on sockets elsewhere). The request body is read whole, as a socket transport would send it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[UpstreamRequest] = []

    async def start(self) -> None:
        return None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
                      max_bytes: int) -> UpstreamResponse:
        if body is None or isinstance(body, bytes):
            data = body or b""
        else:
            data = b"".join([chunk async for chunk in body])
        req = UpstreamRequest(method, target, headers, data)
        self.requests.append(req)
        got = self.handler(req)
        resp = await got if inspect.isawaitable(got) else got
        if len(resp.body) > max_bytes:
            raise UpstreamError("body_too_large", "too_large")
        return resp

    async def close(self) -> None:
        return None


def transport_for(u: Upstream) -> Transport:
    return AiohttpTransport(u) if u.client == "aiohttp" else H1Transport(u)


class UpstreamPool:
    def __init__(self, upstreams: Sequence[Upstream], transports: Mapping[str, Transport] | None = None) -> None:
        """One transport per upstream: `transports` (by upstream name) where given, else the client the
        upstream's config names."""
        self._default = upstreams[0].name
        given = transports or {}
        self._transports: dict[str, Transport] = {u.name: given.get(u.name) or transport_for(u) for u in upstreams}

    async def start(self) -> None:
        for t in self._transports.values():
            await t.start()

    async def close(self) -> None:
        for t in self._transports.values():
            await t.close()

    def name(self, upstream: str | None) -> str:
        return upstream or self._default

    async def request(self, upstream: str | None, method: str, path_qs: str, headers: list[tuple[str, str]],
                      body: Body, max_bytes: int) -> UpstreamResponse:
        transport = self._transports[self.name(upstream)]
        if not isinstance(body, RequestBody):
            return await transport.request(method, path_qs, headers, body, max_bytes)
        try:  # before a transport takes a connection: a slow client holds none while its body is small
            ahead = await body.read_ahead()
            return await transport.request(method, path_qs, headers, ahead, max_bytes)
        except RequestBodyError as exc:
            raise ClientBodyError(exc.reason) from exc
        except UpstreamError as exc:
            if body.error is not None and not isinstance(exc, ClientBodyError):  # the body failed first
                raise ClientBodyError(body.error.reason) from exc
            raise


__all__ = [
    "AiohttpTransport",
    "ClientBodyError",
    "H1Transport",
    "MemoryTransport",
    "Transport",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamRequest",
    "UpstreamResponse",
    "transport_for",
]
