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


async def test_interim_responses_are_skipped() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-P: 1\r\n\r\n"
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    server, url, conns = await serve(handler)
    p = pool(url)
    for _ in range(3):  # and the connection stays usable
        status, headers, body = await p.request("POST", "/", [], b"x", 100)
        assert (status, body, headers) == (201, b"ok", [("Content-Length", "2")])
    assert len(conns) == 1
    await p.close()
    server.close()


async def test_total_deadline_cuts_off_an_upstream_that_dribbles() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.05)  # never 0.3 s between reads

    server, url, _ = await serve(handler)
    p = H1Pool(url, size=2, connect_timeout=1.0, read_timeout=0.3, total_timeout=0.6)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(H1Error) as info:
        await p.request("GET", "/", [], None, 1000)
    assert info.value.kind == "timeout" and 0.5 < loop.time() - t0 < 1.5
    await p.close()
    server.close()


async def test_a_full_pool_waits_only_pool_timeout() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(1.0)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()

    server, url, _ = await serve(handler)
    p = H1Pool(url, size=1, connect_timeout=1.0, read_timeout=2.0, pool_timeout=0.2)
    holder = asyncio.create_task(p.request("GET", "/hold", [], None, 100))
    await asyncio.sleep(0.1)
    with pytest.raises(H1Error) as info:
        await p.request("GET", "/wait", [], None, 100)
    assert info.value.kind == "pool"
    assert (await holder)[0] == 200
    await p.close()
    server.close()


class BodyFailed(Exception):
    pass


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_a_failing_request_body_aborts_without_ending_the_request(framing: str) -> None:
    """The request body's iterator raises mid-way (veil.proxy.reqbody: the client went away): the
    connection is aborted, and the upstream never receives the terminating chunk or the rest."""
    received: list[bytes] = []
    ended = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                received.append(data)
        except ConnectionError:
            pass
        ended.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"amount=1000"
        await asyncio.sleep(0.05)
        raise BodyFailed

    server, url, _ = await serve(handler)
    p = pool(url)
    headers = [("content-length", "100")] if framing == "length" else []
    with pytest.raises(BodyFailed):
        await p.request("POST", "/", headers, body(), 100)
    await asyncio.wait_for(ended.wait(), 2.0)
    wire = b"".join(received)
    assert b"amount=1000" in wire and not wire.endswith(b"0\r\n\r\n")
    assert (b"transfer-encoding: chunked" in wire) == (framing == "chunked")
    await p.close()
    server.close()


async def test_a_streamed_body_waits_for_a_slow_upstream_to_read() -> None:
    """Flow control: when the upstream does not read, veil stops taking the client's body (bounded
    by the total deadline) instead of buffering it all."""
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    produced = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(10_000):
            produced += 1
            yield b"z" * 65536

    server, url, _ = await serve(handler)
    p = H1Pool(url, size=1, connect_timeout=1.0, read_timeout=1.0, total_timeout=0.5)
    with pytest.raises(H1Error) as info:
        await p.request("POST", "/", [], body(), 100)
    assert info.value.kind == "timeout"
    assert produced < 1000  # far less than the 655 MB the client offered
    await p.close()
    server.close()


async def test_bytes_after_a_response_are_not_read_into_it() -> None:
    """Found by tests/fuzz (h1_response): a second response in the same packet changed the status
    (and would have added its headers and body) of the first. Now the first stands and the
    connection is not reused."""
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
            await w.drain()

    server, url, conns = await serve(handler)
    p = pool(url)
    for _ in range(2):
        status, headers, body = await p.request("GET", "/", [], None, 100)
        assert (status, body) == (302, b"") and ("X-Smuggled", "1") not in headers
    assert len(conns) == 2  # the connection that carried the extra bytes was closed
    await p.close()
    server.close()
