"""ASGI plumbing for the proxy: the ASGI types (named once, used in every signature), the request body
as a stream, sending a whole response, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_body(scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]]
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


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
                        head: bool = False) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
