"""A raw HTTP/1.1 client over a plain socket, for tests where the bytes on the wire matter: cut-off
bodies, stalls, interim responses, connections veil must close."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

KEY = "demo-storefront-key"  # the `support` caller of request_policy/ and hostile_policy/
PURPOSE = "support.lookup"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses received before this one

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, method: str, path: str, headers: dict[str, str] | None = None, *,
             key: str | None = KEY, purpose: str | None = PURPOSE) -> bytes:
        h = {"Host": "veil.test"}
        if key is not None:
            h["Veil-Key"] = key
        if purpose is not None:
            h["Veil-Purpose"] = purpose
        h.update(headers or {})
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in h.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def response(self, timeout: float = 10.0) -> RawResponse:
        """The next final response (interim 1xx responses are collected on it)."""
        deadline = time.monotonic() + timeout
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill(deadline):
                    raise ConnectionError(f"no complete response head; got {self.buf[:200]!r}")
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            if 100 <= status < 200:
                interim.append(status)
                continue
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                if not self._fill(deadline):
                    raise ConnectionError("response body cut short")
            body, self.buf = self.buf[:length], self.buf[length:]
            return RawResponse(status, headers, body, interim)

    def interim(self, timeout: float = 5.0) -> int | None:
        """The status of an interim response (100 Continue) if one arrives within `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        status = int(self.buf.split(b" ", 2)[1])
        if 100 <= status < 200:
            self.buf = self.buf.partition(b"\r\n\r\n")[2]
            return status
        return None

    def closed_within(self, timeout: float) -> bool:
        """Whether veil closes the connection within `timeout` (data that arrives first is kept)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
            if not chunk:
                return True
            self.buf += chunk
        return False


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
