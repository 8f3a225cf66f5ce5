"""uvicorn's HTTP/1.1 protocol (httptools) with the deadlines and limits a proxy facing the internet
needs. uvicorn closes idle keep-alive connections (`limits.keep_alive_timeout`) but has no deadline
for the request head and no bound on its size: a client sending nothing, or a header byte every few
seconds (slowloris), would keep a connection forever. This subclass adds, per connection:

- **head deadline** (`limits.request_header_timeout`): from the connection (or the first byte of the
  next request on a keep-alive connection) to the end of the headers. Past it, a connection that sent
  part of a request gets a 408 `request_timeout` problem, an idle one is closed; both are counted in
  `veil_client_errors_total{reason="header_timeout"}`.
- **head size** (`HEAD_LIMIT`, 64 KiB of request line and headers, counted per read while the head
  is incomplete, so a head may overshoot by one read): beyond it, 431 `headers_too_large` and the
  connection is closed, before the request reaches the app (which refuses heads over 32 KiB with a
  recorded decision).
- **unread bodies**: when veil has answered before the request body arrived (a block, a 408), a
  client that sent `Expect: 100-continue` and no body byte is disconnected (it will not send one, and
  the connection cannot be reused); otherwise the rest of the body is read and discarded for at most
  `limits.request_body_idle_timeout` between reads and `limits.request_body_timeout` in all, then the
  connection is closed (`reason="body_discard_timeout"`).
- **upgrades**: the server runs without WebSocket support (`ws="none"`); the app refuses upgrade
  requests (`upgrade_refused`), and the connection is closed after that answer (uvicorn's parser
  cannot continue after an upgrade request), without uvicorn's warning per request.

One timer per connection: deadlines move a field, the timer re-arms itself when it fires early. No
per-header work: the head is measured per read (`scripts/bench_protocol.py` compares the protocol with
uvicorn's own).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from veil import metrics
from veil.config import ClientLimits
from veil.proxy.problem import problem_body
from veil.reasons import Reason

HEAD_LIMIT = 64 * 1024

_IDLE, _HEAD, _APP, _DISCARD = range(4)  # connection phases


def _problem_bytes(reason: Reason, phrase: bytes) -> bytes:
    status, body = problem_body(reason, os.urandom(12).hex())
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, phrase),
        b"content-type: application/problem+json\r\n",
        b"veil-decision: block\r\n",
        b"cache-control: private, no-store\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class GuardedHTTPProtocol(HttpToolsProtocol):
    """See the module docstring. `limits` and `listener` are set on a subclass by `protocol_class`."""

    limits = ClientLimits()
    listener = "proxy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._deadline = 0.0
        self._discard_end = 0.0
        self._guard: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._body_seen = False
        self._message_done = True

    # -- the timer ---------------------------------------------------------------------------------
    def _arm(self, phase: int, deadline: float) -> None:
        self._phase, self._deadline = phase, deadline
        if self._guard is not None and self._guard.when() > deadline:
            self._guard.cancel()
            self._guard = None
        if self._guard is None:
            self._guard = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._guard = None
        if self._phase not in (_HEAD, _DISCARD) or self.transport is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._guard = self.loop.call_at(self._deadline, self._check)
            return
        if self._phase == _HEAD:
            metrics.client_errors(self.listener, "header_timeout").inc()
            if self._head_bytes:  # part of a request arrived: say why the connection ends
                self.transport.write(_problem_bytes(Reason.REQUEST_TIMEOUT, b"Request Timeout"))
        else:
            metrics.client_errors(self.listener, "body_discard_timeout").inc()
        self._phase = _IDLE
        self.transport.close()

    # -- connection ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._arm(_HEAD, self.loop.time() + self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self._phase = _IDLE
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _DISCARD:  # the answer is out; the rest of the body is read and dropped
            deadline = self.loop.time() + self.limits.body_idle_timeout
            self._deadline = deadline if deadline < self._discard_end else self._discard_end
        HttpToolsProtocol.data_received(self, data)
        if phase == _HEAD and self._phase == _HEAD:  # this whole read belongs to a head still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT and not self.transport.is_closing():
                metrics.client_errors(self.listener, "header_too_large").inc()
                self._phase = _IDLE
                self.transport.write(_problem_bytes(Reason.HEADERS_TOO_LARGE, b"Request Header Fields Too Large"))
                self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # The app answers upgrade requests (upgrade_refused); the parser cannot go on after one.
        if self.cycle is not None:
            self.cycle.keep_alive = False

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_bytes = 1  # something arrived (the head deadline then answers 408)
        self._body_seen = False
        self._message_done = False
        self._arm(_HEAD, self.loop.time() + self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        self._phase = _APP
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._body_seen = True
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._message_done = True
        if self._phase == _DISCARD:
            self._phase = _IDLE
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if self._message_done or self.transport.is_closing():
            return
        if self.expect_100_continue and not self._body_seen:
            self.transport.close()  # the client waits for 100 Continue and will not send the body now
            return
        now = self.loop.time()
        self._discard_end = now + self.limits.body_timeout
        self._arm(_DISCARD, min(now + self.limits.body_idle_timeout, self._discard_end))


def protocol_class(limits: ClientLimits, listener: str, base: type[GuardedHTTPProtocol] = GuardedHTTPProtocol
                   ) -> type[GuardedHTTPProtocol]:
    """The protocol class for one listener (uvicorn instantiates it per connection)."""
    return type(f"{base.__name__}_{listener}", (base,), {"limits": limits, "listener": listener})
