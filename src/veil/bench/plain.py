"""The plain Python references of `veil bench`: the fastest proxy without policy work we could build in
Python, so that veil's ratios are against a fair peer rather than a framework.

    python -m veil.bench.plain --port P --upstream URL [--parse] [--server lowlevel|web] [--loop uvloop|asyncio]

A GET is forwarded to the upstream with one shared `aiohttp.ClientSession` (a keep-alive pool large
enough for every connection, no cookie jar, no automatic decompression, no default headers to add) and
the answer relayed; `--parse` adds `orjson.loads` + `orjson.dumps` of the body (the parse-only
reference: the least any JSON-rewriting proxy does). The server is aiohttp's low-level
`aiohttp.web_server.Server` (one handler, no router, no middleware, no application signals) on uvloop.

Why this one: measured side by side on this machine (16 connections, 1 KB profile, built-in load
generator, CPU per request of the proxy process, medians of interleaved rounds) the low-level server
on uvloop was the cheapest of the four aiohttp set-ups (low-level or `web.Application` with one
catch-all route; uvloop or the default asyncio loop); see `veil bench --plain-variants` and the
README's Performance section for the figures. uvicorn + Starlette (`veil.bench.servers`) costs
more per request than any of them and is kept as an information row.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

LOOPBACK = "127.0.0.1"
SERVERS = ("lowlevel", "web")
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


async def serve(port: int, upstream: str, *, parse: bool = False, server: str = "lowlevel") -> None:
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
        if server == "lowlevel":
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
    p.add_argument("--server", choices=SERVERS, default="lowlevel")
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
