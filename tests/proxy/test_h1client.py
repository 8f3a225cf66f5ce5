"""The lean upstream client against real sockets: keep-alive reuse, framing, retries, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from veil.proxy.h1client import H1Error, H1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    conns: list[int] = []

    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", conns


async def read_request(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    body = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            body = await r.readexactly(int(line.split(b":")[1]))
        if line.lower() == b"transfer-encoding: chunked":
            while True:
                size = int((await r.readuntil(b"\r\n")).strip(), 16)
                chunk = await r.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
    return head, body


def pool(url: str, **kw: float) -> H1Pool:
    return H1Pool(url, size=4, connect_timeout=kw.get("connect", 1.0), read_timeout=kw.get("read", 1.0))


async def test_keep_alive_reuses_one_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok")
            await w.drain()

    server, url, conns = await serve(handler)
    p = pool(url)
    for _ in range(20):
        status, headers, body = await p.request("GET", "/x", [], None, 1000)
        assert (status, body) == (200, b"ok") and ("X-A", "1") in headers
    assert len(conns) == 1
    await p.close()
    server.close()


async def test_chunked_and_until_eof_bodies() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, _ = await read_request(r)
        if b"/chunked" in head:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
        await w.drain()
        w.close()

    server, url, _ = await serve(handler)
    p = pool(url)
    assert (await p.request("GET", "/chunked", [], None, 1000))[2] == b"abcde"
    assert (await p.request("GET", "/eof", [], None, 1000))[2] == b"until-eof"
    await p.close()
    server.close()


async def test_stale_keep_alive_connection_is_retried_for_idempotent_methods() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await asyncio.sleep(0.05)  # then close the idle keep-alive connection without saying so

    server, url, conns = await serve(handler)
    p = pool(url)
    assert (await p.request("GET", "/a", [], None, 100))[2] == b"ok"
    await asyncio.sleep(0.2)
    assert (await p.request("GET", "/b", [], None, 100))[2] == b"ok"
    assert len(conns) == 2
    await p.close()
    server.close()


async def test_bodies_are_sent_with_length_or_chunked() -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(r)
            seen.append(body)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await w.drain()

    async def stream() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    server, url, _ = await serve(handler)
    p = pool(url)
    await p.request("POST", "/b", [], b"fixed", 100)
    await p.request("POST", "/s", [], stream(), 100)
    assert seen == [b"fixed", b"hello world"]
    await p.close()
    server.close()


@pytest.mark.parametrize("reply,kind", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", "too_large"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n" * 1, "too_large"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "reset"),
    (b"NOT HTTP AT ALL\r\n\r\n", "protocol"),
    (b"HTTP/1.1 100 Continue\r\n\r\n", "timeout"),  # interim: the final response never comes
    (b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", "status"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "status"),
    (b"", "timeout"),
])
async def test_failures_have_kinds(reply: bytes, kind: str) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        if reply:
            w.write(reply)
            await w.drain()
        if kind == "reset":
            return
        await asyncio.sleep(2)

    server, url, _ = await serve(handler)
    p = pool(url, read=0.3)
    with pytest.raises(H1Error) as info:
        await p.request("GET", "/", [], None, 1000)
    assert info.value.kind == kind
    await p.close()
    server.close()


async def test_connect_refused() -> None:
    server, url, _ = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    p = pool(url)
    with pytest.raises(H1Error) as info:
        await p.request("GET", "/", [], None, 1000)
    assert info.value.kind == "connect"
