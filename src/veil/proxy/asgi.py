"""ASGI plumbing for the proxy: the request body as a stream, sending a whole response, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

Scope = dict[str, Any]


def request_body(scope: Scope, receive: Any, headers: list[tuple[bytes, bytes]]
                        ) -> AsyncIterator[bytes] | None:
    if scope["method"] in ("GET", "HEAD"):
        return None
    if not any(n in (b"content-length", b"transfer-encoding") for n, _ in headers):
        return None

    async def body() -> AsyncIterator[bytes]:
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunk = msg.get("body", b"")
            if chunk:
                yield chunk
            more = msg.get("more_body", False)

    return body()


async def send_response(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
                ) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
