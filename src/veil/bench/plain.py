"""The plain Python references of `veil bench`: the fastest proxy without policy work we could build in
Python, so that veil's ratios are against a fair peer rather than a framework.

    python -m veil.bench.plain --port P --upstream URL [--parse] [--server raw|lowlevel|web|asgi]
                               [--loop uvloop|asyncio]

A GET is forwarded to the upstream with one shared `aiohttp.ClientSession` (a keep-alive pool large
enough for every connection, no cookie jar, no automatic decompression, no default headers to add) and
the answer relayed; `--parse` adds `orjson.loads` + `orjson.dumps` of the body (the parse-only
reference: the least any JSON-rewriting proxy does). The default server (`raw`) is httptools'
request parser on an asyncio protocol on uvloop, answering each request with one write: enough HTTP
for a load generator's keep-alive GETs, and nothing else (no router, no middleware, no ASGI).

Why this one: measured side by side on the 2-core development machine (`scripts/bench_plain.py`: the
bench's fast upstream, 16 connections, wrk, interleaved rounds of 3 s, a 1 KB profile), CPU per request
of the proxy process, in two runs: `raw` 277 and 226 µs; aiohttp's low-level `web_server.Server` 283
and 274 µs (277 on asyncio's loop); uvicorn (httptools, uvloop) with a bare ASGI callable 255 and 315
µs; `aiohttp.web.Application` with one catch-all route 316 µs (311 on asyncio's loop); Starlette on
uvicorn with the same client 407 µs. The servers differ by less than the machine's noise once the
framework is gone: what is left is the aiohttp client's request and response handling. `raw` has the
least machinery and was never slower; the others stay selectable (`--server`) to check that again.
uvicorn + Starlette (`veil.bench.servers.proxy_app`) is kept as an information row.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

LOOPBACK = "127.0.0.1"
SERVERS = ("lowlevel", "web", "asgi", "raw")
LOOPS = ("uvloop", "asyncio")
POOL = 256  # upstream connections kept alive: more than any load the bench puts on it
_DROP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
})

Handler = Callable[[Any], Awaitable[Any]]


def make_handler(upstream: str, session: Any, parse: bool) -> Handler:
    from aiohttp import web

    base = upstream.rstrip("/")
    bad_gateway = b'{"error":"bad_gateway"}'

    async def handle(request: Any) -> web.Response:
        if request.path == "/healthz":
            return web.Response(body=b'{"status":"ok"}', content_type="application/json")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _DROP and not k.lower().startswith("veil-")}
        try:
            async with session.get(base + request.path_qs, headers=headers) as r:
                body = await r.read()
                status, ctype = r.status, r.headers.get("Content-Type", "application/json")
        except Exception:  # any upstream failure: a bare 502, like a real gateway
            return web.Response(body=bad_gateway, status=502, content_type="application/json")
        if parse:
            body = orjson.dumps(orjson.loads(body))
        return web.Response(body=body, status=status, headers={"Content-Type": ctype})

    return handle


class _RawHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive GET on httptools' parser, one request at a time per connection (what a load
    generator without pipelining sends), answered through `fetch`."""

    def __init__(self, fetch: Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes, str]]]) -> None:
        import httptools

        self.fetch = fetch
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self._answer(self.url.decode("latin-1"), self.headers))

    async def _answer(self, url: str, headers: dict[str, str]) -> None:
        if url == "/healthz":
            status, body, ctype = 200, b'{"status":"ok"}', "application/json"
        else:
            status, body, ctype = await self.fetch(url, headers)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)


def _fetcher(upstream: str, session: Any, parse: bool
             ) -> Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes, str]]]:
    base = upstream.rstrip("/")

    async def fetch(path_qs: str, given: dict[str, str]) -> tuple[int, bytes, str]:
        headers = {k: v for k, v in given.items() if k not in _DROP and not k.startswith("veil-")}
        try:
            async with session.get(base + path_qs, headers=headers) as r:
                body = await r.read()
                status, ctype = r.status, r.headers.get("Content-Type", "application/json")
        except Exception:  # any upstream failure: a bare 502, like a real gateway
            return 502, b'{"error":"bad_gateway"}', "application/json"
        if parse:
            body = orjson.dumps(orjson.loads(body))
        return status, body, ctype

    return fetch


def asgi_app(fetch: Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes, str]]]) -> Any:
    """A bare ASGI callable (no framework) relaying through `fetch`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            status, body, ctype = 200, b'{"status":"ok"}', "application/json"
        else:
            qs = scope.get("query_string", b"")
            url = path + ("?" + qs.decode("latin-1") if qs else "")
            status, body, ctype = await fetch(url, {k.decode("latin-1"): v.decode("latin-1")
                                                    for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": body})

    return app


async def serve(port: int, upstream: str, *, parse: bool = False, server: str = "raw") -> None:
    import aiohttp
    from aiohttp import web, web_server

    connector = aiohttp.TCPConnector(limit=POOL, limit_per_host=POOL, keepalive_timeout=60, ttl_dns_cache=None)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                    auto_decompress=False, skip_auto_headers=("User-Agent",))
    handle = make_handler(upstream, session, parse)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        if server == "raw":
            fetch = _fetcher(upstream, session, parse)
            srv = await loop.create_server(lambda: _RawHTTP(fetch), LOOPBACK, port, backlog=1024)
            async with srv:
                await stop.wait()
        elif server == "asgi":
            import uvicorn

            config = uvicorn.Config(asgi_app(_fetcher(upstream, session, parse)), host=LOOPBACK, port=port,
                                    loop="none", http="httptools", log_level="warning", access_log=False,
                                    lifespan="off", backlog=1024)
            userver = uvicorn.Server(config)
            task = asyncio.ensure_future(userver.serve())
            await stop.wait()
            userver.should_exit = True
            await task
        elif server == "lowlevel":
            low = web_server.Server(handle, access_log=None)
            srv = await loop.create_server(low, LOOPBACK, port, backlog=1024)
            async with srv:
                await stop.wait()
            await low.shutdown(1.0)
        else:
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, LOOPBACK, port, backlog=1024).start()
            await stop.wait()
            await runner.cleanup()
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m veil.bench.plain")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--parse", action="store_true")
    p.add_argument("--server", choices=SERVERS, default="raw")
    p.add_argument("--loop", choices=LOOPS, default="uvloop")
    args = p.parse_args(argv)
    coro = serve(args.port, args.upstream, parse=args.parse, server=args.server)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
