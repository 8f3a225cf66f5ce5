"""The upstream client on the per-request path, behind one small seam.

Two backends, chosen per upstream (`upstreams.<name>.client`): `h1` (default; veil.proxy.h1client,
asyncio protocols + the httptools parser) and `aiohttp` (ClientSession). Both pool keep-alive
connections, stream request bodies, never follow redirects and never decompress. `veil bench`
measured both (see the README's performance notes); h1 spends far less CPU per request.
Foreign exceptions become UpstreamError with a stable reason at this boundary.

Both backends keep the same deadlines (`pool_timeout` for a free connection → `upstream_busy`,
`connect_timeout`, `read_timeout` between reads, `total_timeout` for the whole exchange), skip 1xx
interim responses and refuse a status outside 100-599 (`upstream_status_invalid`). A request body
(veil.proxy.reqbody) is read ahead up to `limits.request_buffer_bytes` before a connection is taken;
when it fails (the client went away, stalled or sent too much) the upstream connection is aborted
and `ClientBodyError` (an UpstreamError of kind `client`) says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from veil.config import Upstream
from veil.proxy.h1client import H1Error, H1Pool
from veil.proxy.reqbody import RequestBody, RequestBodyError

_REASON = {"timeout": "upstream_timeout", "too_large": "body_too_large", "pool": "upstream_busy",
           "status": "upstream_status_invalid"}


class UpstreamError(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        # upstream_unavailable | upstream_timeout | upstream_busy | upstream_status_invalid | body_too_large,
        # or (ClientBodyError) request_aborted | request_timeout | request_too_large
        self.reason = reason
        self.kind = kind  # metric label: pool | connect | timeout | reset | protocol | status | too_large | client


class ClientBodyError(UpstreamError):
    """The client's request body did not arrive whole: not the upstream's fault (kind `client`; not
    an upstream error for the metrics). The upstream connection has been aborted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "client")


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class UpstreamPool:
    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self._config = {u.name: u for u in upstreams}
        self._default = upstreams[0].name
        self._h1: dict[str, H1Pool] = {}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}  # aiohttp: a slot per connection, with pool_timeout

    async def start(self) -> None:
        for u in self._config.values():
            if u.client == "aiohttp":
                connector = aiohttp.TCPConnector(limit=u.pool_size, ttl_dns_cache=300)
                timeout = aiohttp.ClientTimeout(total=u.total_timeout, sock_connect=u.connect_timeout,
                                                sock_read=u.read_timeout)
                self._slots[u.name] = asyncio.Semaphore(u.pool_size)
                self._sessions[u.name] = aiohttp.ClientSession(
                    connector=connector, timeout=timeout, auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                )
            else:
                self._h1[u.name] = H1Pool(u.url, size=u.pool_size, connect_timeout=u.connect_timeout,
                                          read_timeout=u.read_timeout, pool_timeout=u.pool_timeout,
                                          total_timeout=u.total_timeout)

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        for p in self._h1.values():
            await p.close()
        self._sessions.clear()
        self._h1.clear()

    def name(self, upstream: str | None) -> str:
        return upstream or self._default

    async def request(
        self,
        upstream: str | None,
        method: str,
        path_qs: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | bytes | None,
        max_bytes: int,
    ) -> UpstreamResponse:
        name = self.name(upstream)
        if isinstance(body, RequestBody):
            try:  # before a connection is taken: a slow client holds none while its body is small
                body = await body.read_ahead()
            except RequestBodyError as exc:
                raise ClientBodyError(exc.reason) from exc
        pool = self._h1.get(name)
        try:
            if pool is not None:
                try:
                    status, rheaders, data = await pool.request(method, path_qs, headers, body, max_bytes)
                except H1Error as exc:
                    raise UpstreamError(_REASON.get(exc.kind, "upstream_unavailable"), exc.kind) from exc
                return UpstreamResponse(status, rheaders, data)
            return await self._aiohttp(name, method, path_qs, headers, body, max_bytes)
        except RequestBodyError as exc:
            raise ClientBodyError(exc.reason) from exc
        except UpstreamError as exc:
            failed = body.error if isinstance(body, RequestBody) else None
            if failed is not None and not isinstance(exc, ClientBodyError):  # the body failed first
                raise ClientBodyError(failed.reason) from exc
            raise

    async def _aiohttp(self, name: str, method: str, path_qs: str, headers: list[tuple[str, str]],
                       body: AsyncIterator[bytes] | bytes | None, max_bytes: int) -> UpstreamResponse:
        slots = self._slots[name]
        if slots.locked():
            try:
                async with asyncio.timeout(self._config[name].pool_timeout):
                    await slots.acquire()
            except TimeoutError as exc:
                raise UpstreamError("upstream_busy", "pool") from exc
        else:
            await slots.acquire()
        try:
            return await self._aiohttp_request(name, method, path_qs, headers, body, max_bytes)
        finally:
            slots.release()

    async def _aiohttp_request(self, name: str, method: str, path_qs: str, headers: list[tuple[str, str]],
                               body: AsyncIterator[bytes] | bytes | None, max_bytes: int) -> UpstreamResponse:
        session = self._sessions[name]
        url = URL(self._config[name].url + path_qs, encoded=True)
        try:
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as resp:
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
