"""The proxy app's last line of defence (ProxyApp.__call__, with asgi.ResponseGuard): an internal
error gets one problem response, or, once a response has started, none (uvicorn then closes the
connection and the incomplete response shows it); never a second `http.response.start`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from veil.config import parse_config
from veil.proxy.app import ProxyApp
from veil.proxy.asgi import ResponseGuard, send_response
from veil.proxy.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


class Failing(ProxyApp):
    """The real app with a request flow that fails: before or after starting its response."""

    started_first = False

    async def _handle(self, scope: Any, receive: Any, send: Any, *args: Any) -> None:
        if self.started_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("secret@example.com")  # a message that must not reach the log


@pytest.mark.parametrize("started_first", [False, True])
async def test_an_internal_error_never_starts_a_second_response(tmp_path: Path, started_first: bool,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config({"upstreams": {"u": {"url": "http://127.0.0.1:9"}},
                        "policy": {"paths": [str(ROOT / "policies")], "watch": False},
                        "consent": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
                        "audit": {"path": str(tmp_path / "audit" / "d.log")}}, base=tmp_path)
    app = Failing(Runtime(cfg))
    app.started_first = started_first
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "headers": [], "client": ("1.2.3.4", 5)}
    with caplog.at_level(logging.ERROR, logger="veil.proxy"):
        await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    if started_first:
        assert sent == starts  # nothing more: the connection will be closed, the response incomplete
    else:
        assert starts[0]["status"] == 500 and b"internal_error" in sent[-1]["body"]
    assert "internal error" in caplog.text and "secret@example.com" not in caplog.text


async def test_response_guard_and_bodiless_statuses() -> None:
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    guard = ResponseGuard(send)
    assert not guard.started
    await send_response(guard, 204, [], b"")
    assert guard.started and (b"content-length", b"0") not in sent[0]["headers"]
    await send_response(send, 201, [], b"")
    assert (b"content-length", b"0") in sent[2]["headers"]
