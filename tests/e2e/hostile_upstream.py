"""A hostile upstream for hardening tests: a raw asyncio HTTP/1.1 server whose answers are chosen by
path (`/evil/<case>`), including ones no well-behaved server would send (bodies cut short, resets,
stalls, lying encodings). `/echo/<id>` answers with the request headers it received.

    python -m tests.e2e.hostile_upstream --port 9100
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable

PROFILE = {"id": "c-1", "name": "Ada", "email": "ada@example.com", "ssn": "123-45-6789"}
J = "application/json"
PAD = b'"pad":"' + b"x" * 20_000 + b'"'
_CACHE: dict[str, bytes] = {}


def _resp(status: int, body: bytes, ctype: str | None = J, extra: list[tuple[str, str]] | None = None,
          length: int | None = None) -> bytes:
    reason = {200: "OK", 302: "Found", 304: "Not Modified", 500: "Internal Server Error"}.get(status, "X")
    head = [f"HTTP/1.1 {status} {reason}"]
    if ctype:
        head.append(f"Content-Type: {ctype}")
    head.append(f"Content-Length: {len(body) if length is None else length}")
    head += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def case_bytes(case: str) -> bytes | None:
    p = json.dumps(PROFILE).encode()
    table: dict[str, Callable[[], bytes]] = {
        "ok": lambda: _resp(200, p, extra=[("ETag", '"abc"'), ("Content-MD5", "x"), ("Accept-Ranges", "bytes"),
                                   ("X-Upstream", "1")]),
        "dupkeys": lambda: _resp(200, b'{"id":"c-1","email":"first@example.com","email":"second@example.com"}'),
        "escaped": lambda: _resp(200, b'{"id":"c-1","\\u0065mail":"esc@example.com","\\u0073sn":"123-45-6789"}'),
        "deep": lambda: _resp(200, b"[" * 5000 + b"]" * 5000),
        "deep_obj": lambda: _resp(200, b'{"id":"c-1","name":' + b'{"a":' * 300 + b"1" + b"}" * 301),
        "deep_unkept": lambda: _resp(200, b'{"id":"c-1","junk":' + b'{"a":' * 300 + b"1" + b"}" * 301),
        "hugenum": lambda: _resp(200, b'{"id":"c-1","n":1' + b"0" * 400 + b"}"),
        "nan": lambda: _resp(200, b'{"id":"c-1","n":NaN}'),
        "inf": lambda: _resp(200, b'{"id":"c-1","n":Infinity}'),
        "toparray": lambda: _resp(200, json.dumps([PROFILE, PROFILE]).encode()),
        "scalar": lambda: _resp(200, b'"ada@example.com"'),
        "textplain": lambda: _resp(200, p, ctype="text/plain"),
        "nocontenttype": lambda: _resp(200, p, ctype=None),
        "latin1": lambda: _resp(200, json.dumps(PROFILE).encode("latin-1"), ctype="application/json; charset=latin-1"),
        "empty": lambda: _resp(200, b""),
        "gzip": lambda: _resp(200, gzip.compress(p), extra=[("Content-Encoding", "gzip")]),
        "deflate": lambda: _resp(200, zlib.compress(p), extra=[("Content-Encoding", "deflate")]),
        "gzipgzip": lambda: _resp(200, gzip.compress(gzip.compress(p)), extra=[("Content-Encoding", "gzip, gzip")]),
        "lyinggzip": lambda: _resp(200, p, extra=[("Content-Encoding", "gzip")]),
        "br": lambda: _resp(200, p, extra=[("Content-Encoding", "br")]),
        "cutgzip": lambda: _resp(200, gzip.compress(p)[:-12], extra=[("Content-Encoding", "gzip")]),
        "bomb": lambda: _resp(200, gzip.compress(b" " * 5_000_000), extra=[("Content-Encoding", "gzip")]),
        "large": lambda: _resp(200, json.dumps({"id": "c-1", "blob": "x" * 3_000_000}).encode()),
        "ndjson": lambda: _resp(200, p + b"\n" + p + b"\n", ctype="application/x-ndjson"),
        "ndjson_as_json": lambda: _resp(200, p + b"\n" + p + b"\n"),
        "problemjson": lambda: _resp(200, p, ctype="application/problem+json"),
        "redirect": lambda: _resp(302, b"", extra=[("Location", "http://evil.example/steal")]),
        "notmodified": lambda: _resp(304, b"", ctype=None),
        "error500": lambda: _resp(500, json.dumps({"error": "boom", "email": "ada@example.com"}).encode()),
        "headerleak": lambda: _resp(200, p, extra=[("X-Customer-Email", "ada@example.com")]),
        # Bodies large enough to be read lazily (veil.redact.lazy): the result must not change.
        "dupkeys_large": lambda: _resp(200, b'{"id":"c-1","email":"first@example.com","email":"second@example.com",'
                                            + PAD + b"}"),
        "escaped_large": lambda: _resp(200, b'{"id":"c-1","\\u0065mail":"esc@example.com","\\u0073sn":"123-45-6789",'
                                            + PAD + b"}"),
        "bigint_large": lambda: _resp(200, b'{"id":"c-1","n":18446744073709551616,' + PAD + b"}"),
        "deep_obj_large": lambda: _resp(200, b'{"id":"c-1",' + PAD + b',"name":' + b'{"a":' * 300 + b"1" + b"}" * 301),
        "deep_unkept_large": lambda: _resp(200, b'{"id":"c-1",' + PAD + b',"junk":' + b'{"a":' * 300 + b"1"
                                                + b"}" * 301),
        "toparray_large": lambda: _resp(200, json.dumps([PROFILE] * 300).encode()),
        # A list route with per-item subjects: an item whose subject key repeats is read as orjson reads it.
        "items_dups": lambda: _resp(200, b'{"items":[' + b",".join(
            [b'{"id":"c-2","id":"","email":"two@example.com"}', b'{"id":"","id":"c-3","email":"three@example.com"}']
            + [json.dumps({**PROFILE, "id": f"c-{i}"}).encode() for i in range(10, 300)]) + b"]}"),
    }
    make = table.get(case)
    if make is None:
        return None
    if case not in _CACHE:
        _CACHE[case] = make()
    return _CACHE[case]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(x.split(": ", 1)) for x in lines[1:] if ": " in x]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            path = target.split("?", 1)[0]
            if path == "/healthz":
                writer.write(_resp(200, b"{}"))
            elif path.startswith("/echo/"):
                doc = {"id": path[6:], "method": method, "target": target,
                       "headers": {k.lower(): v for k, v in headers}, "body": body.decode("latin-1")}
                writer.write(_resp(200, json.dumps(doc).encode()))
            elif path == "/evil/cutshort":
                writer.write(_resp(200, b'{"id":"c-1","email":"ada@', length=500))
                await writer.drain()
                writer.close()
                return
            elif path == "/evil/reset":
                writer.transport.abort()
                return
            elif path == "/evil/stall":
                await asyncio.sleep(30)
                return
            elif path == "/evil/slowbody":
                writer.write(_resp(200, b'{"id":"c-1",', length=40))
                await writer.drain()
                await asyncio.sleep(30)
                return
            else:
                case = path.rsplit("/", 1)[-1]
                data = case_bytes(case)
                writer.write(data if data is not None else _resp(404, b'{"error":"no such case"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    from tests.e2e.raw_server import run

    run(handle)
