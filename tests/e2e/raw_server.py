"""The command line of the raw asyncio upstreams (recording_upstream, hostile_upstream): serve one
connection handler on --host/--port until killed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handle: Handler, host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def run(handle: Handler) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    a = ap.parse_args()
    asyncio.run(serve(handle, a.host, a.port))
