"""A raw HTTP/1.1 upstream that records what it received, for request-path hardening tests.

Every request is recorded (`GET /_log` returns the list, `POST /_reset` empties it) with its framing
(`length`, `chunked` or `none`), whether the body arrived whole (`complete`: all Content-Length bytes,
or the terminating chunk), the body received (latin-1) and the headers. A request whose body does not
arrive whole is recorded as it ended and never answered: the upstream never "processes" it.

    /echo/<id>               200 JSON: what was received
    /interim/<id>            100 Continue and 103 Early Hints, then the echo
    /status/<code>           that status line, whatever it is (600, 999, 101 ...), with a JSON body
    /empty/<code>[?ctype=0]  that status with an empty body (Content-Length: 0; no Content-Type with ctype=0)
    /gzipempty/<code>        that status, Content-Encoding: gzip of an empty body
    /dribble/<id>            200, Content-Length: 200, then one byte every 0.2 s
    /hold/<id>?s=SECONDS     the echo after SECONDS

    python -m tests.e2e.recording_upstream --port 9100
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any
from urllib.parse import parse_qs

LOG: list[dict[str, Any]] = []


def response(status: int, body: bytes, ctype: str | None = "application/json",
             extra: list[tuple[str, str]] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} X"]
    if ctype:
        head.append(f"Content-Type: {ctype}")
    head.append(f"Content-Length: {len(body)}")
    head += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], rec: dict[str, Any]) -> bool:
    """Read the request body into rec["body"]; False when the connection ended before it was whole."""
    got = bytearray()
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            rec["framing"] = "chunked"
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # the end of the (empty) trailer section
                    return True
                got += (await reader.readexactly(size + 2))[:-2]
                rec["body"] = got.decode("latin-1")
        elif "content-length" in headers:
            rec["framing"] = "length"
            want = int(headers["content-length"])
            while len(got) < want:
                chunk = await reader.read(want - len(got))
                if not chunk:
                    return False
                got += chunk
                rec["body"] = got.decode("latin-1")
            return True
        return True
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return False
    finally:
        rec["body"] = got.decode("latin-1")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if ": " in x)}
            path, _, query = target.partition("?")
            params = {k: v[0] for k, v in parse_qs(query).items()}
            if path == "/_log":
                writer.write(response(200, json.dumps(LOG).encode()))
                await writer.drain()
                continue
            rec: dict[str, Any] = {"method": method, "target": target, "framing": "none", "complete": False,
                                   "body": "", "headers": headers, "at": time.time()}
            if path == "/_reset":
                LOG.clear()
                writer.write(response(200, b"{}"))
                await writer.drain()
                continue
            if path != "/healthz":
                LOG.append(rec)
            rec["complete"] = await read_body(reader, headers, rec)
            if not rec["complete"]:
                return
            kind, _, arg = path.strip("/").partition("/")
            echo = json.dumps({"id": arg, "method": method, "target": target, "headers": headers,
                               "body": rec["body"]}).encode()
            if kind == "interim":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(response(200, echo))
            elif kind == "status":
                writer.write(f"HTTP/1.1 {arg} Odd\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(echo)}\r\n\r\n".encode() + echo)
            elif kind == "empty":
                ctype = None if params.get("ctype") == "0" else "application/json"
                extra = [("Location", "/echo/new")] if arg == "201" else []
                writer.write(response(int(arg), b"", ctype, extra))
            elif kind == "gzipempty":
                writer.write(response(int(arg), gzip.compress(b""), extra=[("Content-Encoding", "gzip")]))
            elif kind == "dribble":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
                for _ in range(200):
                    await writer.drain()
                    writer.write(b" ")
                    await asyncio.sleep(0.2)
            elif kind == "hold":
                await asyncio.sleep(float(params.get("s", "1")))
                writer.write(response(200, echo))
            else:
                writer.write(response(200, echo))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    from tests.e2e.raw_server import run

    run(handle)
