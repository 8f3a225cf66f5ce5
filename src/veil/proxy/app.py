"""The proxy listener: a pure ASGI app around the request flow (veil.policy.flow).

The flow decides; this module does the I/O around it: it reads the request off the ASGI scope, gives
the flow its two ports (`ProxyExchange`: the client's body and the upstream pool; the consent store),
then sends what the flow decided, writes the decision record and counts it.

Every response carries Veil-Decision, Veil-Decision-Id and Veil-Policy. Anything unknown or broken
fails closed with application/problem+json and a stable reason; no stack trace, no data.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from veil import metrics
from veil.errors import Refusal, UpstreamFailure, VeilError
from veil.logs import where
from veil.policy.compile import CompiledPolicy
from veil.policy.flow import Answer, Forward, Outcome, RequestFacts, decide
from veil.policy.normalize import normalize_path
from veil.proxy.asgi import Receive, ResponseGuard, Scope, Send, lifespan, request_body, send_response
from veil.proxy.headers import HOP_BY_HOP, VARY, forward_headers, response_headers
from veil.proxy.problem import problem_body
from veil.proxy.records import Recorder, count
from veil.proxy.reqbody import RequestBody, RequestBodyError, declared_length
from veil.proxy.runtime import Runtime
from veil.proxy.upstream import UpstreamError
from veil.reasons import Reason

log = logging.getLogger("veil.proxy")

_GPC_PATH = "/.well-known/gpc.json"


def _now() -> datetime:
    return datetime.now(UTC)


class ProxyExchange:
    """The flow's I/O port for one request: the client's body (read whole only when the flow asks for
    it) and the upstream (through the runtime's pool)."""

    __slots__ = ("headers", "receive", "rt", "scope", "up_time")

    def __init__(self, rt: Runtime, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]]) -> None:
        self.rt, self.scope, self.receive, self.headers = rt, scope, receive, headers
        self.up_time = 0.0

    async def request_body(self, limit: int) -> bytes:
        # issue 15: read under the client deadlines (veil.proxy.reqbody); `limit` is at most the read-ahead
        limits = self.rt.config.client_limits
        body = RequestBody(self.receive, limits, declared_length(self.headers))
        try:
            ahead = await body.read_ahead()
        except RequestBodyError as exc:
            raise Refusal(Reason.of(exc.reason), str(exc)) from exc
        if not isinstance(ahead, bytes) or len(ahead) > limit:
            raise Refusal(Reason.REQUEST_BODY_TOO_LARGE)
        return ahead

    async def forward(self, fwd: Forward) -> Answer:
        rt, scope = self.rt, self.scope
        if fwd.enforced and rt.audit_refusal is not None:  # issue 18: the decision log's backlog is over its bound
            raise UpstreamFailure(Reason.of(rt.audit_refusal), "refused", "the decision log cannot take more records")
        method: str = scope["method"]
        headers = forward_headers(scope, self.headers, enforced=fwd.enforced)
        qs = scope.get("query_string", b"")
        target = fwd.path + ("?" + qs.decode("latin-1") if qs else "")
        body = fwd.body if fwd.body is not None else request_body(  # issue 15: with the client deadlines
            scope, self.receive, self.headers, rt.config.client_limits)
        upstream = fwd.route.upstream if fwd.route is not None else None
        t_up = time.perf_counter()
        try:
            resp = await rt.upstreams.request(upstream, "GET" if method == "HEAD" else method, target, headers,
                                              body, rt.settings.max_body_bytes)
        except UpstreamError as exc:
            if exc.kind != "client":  # issue 15: a client's cut-off or slow body is not an upstream error
                metrics.upstream_errors_total.labels(rt.upstreams.name(upstream), exc.kind).inc()
            raise
        self.up_time = time.perf_counter() - t_up
        metrics.upstream_seconds(rt.upstreams.name(upstream)).observe(self.up_time)
        return Answer(resp.status, resp.headers, resp.body)


class ProxyApp:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.rec = Recorder(runtime.pseudonym_ring)
        self._gpc_json = orjson.dumps({"gpc": True, "lastUpdate": _now().date().isoformat()})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        decision_id = os.urandom(12).hex()
        policy = self.rt.policy.current
        guard = ResponseGuard(send)  # issue 15: knows whether a response has started
        try:
            await self._handle(scope, receive, guard, policy, decision_id, t0)
        except Exception as exc:  # the last line of defence: never a stack trace, never data
            # An exception's message may quote a value from the request or the body: log where, not what.
            log.error("internal error (decision %s): %s", decision_id, where(exc), extra={"decision_id": decision_id})
            if not guard.started:  # issue 15: never a second response; else uvicorn closes the connection
                await self._problem(guard, Reason.INTERNAL_ERROR, decision_id, policy)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, policy: CompiledPolicy | None,
                      decision_id: str, t0: float) -> None:
        if policy is None:
            await self._problem(send, Reason.POLICY_UNAVAILABLE, decision_id, None)
            return
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        addr = client[0] if client else "-"
        if self.rt.limiter.blocked(addr):
            metrics.auth_rate_limited_total.labels("proxy").inc()
            await self._problem(send, Reason.RATE_LIMITED, decision_id, policy)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0]
        if raw_path.startswith(b"/.well-known/") and method in ("GET", "HEAD") and policy.honors_gpc:
            try:
                is_gpc = normalize_path(raw_path)[0] == _GPC_PATH
            except Refusal:
                is_gpc = False
            if is_gpc:
                await send_response(send, 200, [(b"content-type", b"application/json")], self._gpc_json,
                                    head=method == "HEAD")
                return
        cert = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_name")  # proxy/tlsinfo.py
        facts = RequestFacts(method, raw_path, scope.get("query_string", b""), headers, cert)
        exchange = ProxyExchange(self.rt, scope, receive, headers)
        out = await decide(policy, facts, exchange, self.rt.store, self.rt.settings, self.rt.clock())
        if out.reason is Reason.UNKNOWN_CALLER:
            self.rt.limiter.failed(addr)
            keyed = any(n == b"veil-key" for n, _ in headers)
            metrics.auth_failures_total.labels("proxy", "unknown_key" if keyed else "no_key").inc()
        if out.report_only and out.answer is not None:
            await self._pass_on(send, method, policy, out, decision_id, t0, exchange.up_time)
        elif out.reason is not Reason.OK:
            await self._block(send, method, policy, out, decision_id, t0, exchange.up_time)
        else:
            await self._enforced(send, method, policy, out, decision_id, t0, exchange.up_time)

    # ------------------------------------------------------------------ sending what the flow decided
    async def _enforced(self, send: Send, method: str, policy: CompiledPolicy, out: Outcome, decision_id: str,
                        t0: float, up_time: float) -> None:
        ad, answer = out.admitted, out.answer
        assert ad is not None and answer is not None
        summary = self.rec.summary(policy, ad.rule, out.report)
        decision = out.decision
        record = self.rec.record(policy, out, decision_id, summary)
        if not await self._audit(record):  # nothing leaves that the log does not hold
            out.block(Reason.AUDIT_UNAVAILABLE)
            await self._block(send, method, policy, out, decision_id, t0, up_time, log_it=False)
            return
        headers = response_headers(answer.headers, policy, decision, decision_id)
        if out.has_body:  # issue 15: an empty response gets no content type
            headers.append((b"content-type", b"application/json"))
        if out.suppressed:
            headers.append((b"veil-suppressed", str(out.suppressed).encode()))
        if out.filtered:  # list items removed for want of consent (decision filter); docs/headers.md
            headers.append((b"veil-filtered", str(out.filtered).encode()))
        count(ad.route.template, ad.purpose.name, decision, "ok", summary, out.filtered)
        metrics.overhead(ad.route.template).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, answer.status, headers, out.body, head=method == "HEAD")

    async def _pass_on(self, send: Send, method: str, policy: CompiledPolicy, out: Outcome, decision_id: str,
                       t0: float, up_time: float) -> None:
        """Report-only: decide, record and count as when enforcing, pass the upstream's answer on unchanged."""
        answer = out.answer
        assert answer is not None
        decision, reason = out.decision, out.reason.value
        summary = self.rec.summary(policy, out.admitted.rule, out.report) if out.admitted is not None else None
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "server", "date")]
        headers += [
            (b"veil-report-only", f"{decision}; reason={reason}".encode()),
            (b"veil-decision-id", decision_id.encode()),
            (b"veil-policy", policy.version.encode()),
        ]
        await self._audit(self.rec.record(policy, out, decision_id, summary))  # report-only never blocks on it
        route = out.route.template if out.route is not None else "-"
        purpose = out.admitted.purpose.name if out.admitted is not None else (
            out.blocked.purpose if out.blocked and out.blocked.purpose else "-")
        if summary is not None and out.admitted is not None:
            count(route, purpose, decision, reason, summary, out.filtered)
        else:
            metrics.tally.inc(metrics.requests(route, purpose, decision, reason))
        metrics.overhead(route).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, answer.status, headers, answer.body, head=method == "HEAD")
        if self.rt.discovery is not None:  # report-only discovery of personal data (veil.discovery), after sending
            self.rt.discovery.observe(method, route, purpose if purpose != "-" else None, answer.status,
                                      answer.headers, answer.body)

    async def _block(self, send: Send, method: str, policy: CompiledPolicy, out: Outcome, decision_id: str,
                     t0: float, up_time: float, *, log_it: bool = True) -> None:
        reason = out.reason
        blocked = out.blocked
        route = (blocked.route if blocked else None) or "-"
        purpose = (blocked.purpose if blocked else None) or "-"
        if log_it:
            await self._audit(self.rec.record(policy, out, decision_id))  # a block discloses nothing
        metrics.tally.inc(metrics.requests(route, purpose, "block", reason.value))
        metrics.overhead(route).observe(time.perf_counter() - t0 - up_time)
        status = out.status if reason is Reason.UPSTREAM_STATUS else None
        await self._problem(send, reason, decision_id, policy, out.detail, head=method == "HEAD", status=status)

    # ------------------------------------------------------------------ step 7
    async def _audit(self, record: dict[str, Any]) -> bool:
        try:
            await self.rt.audit.append(record)
            return True
        except VeilError:
            return False

    async def _problem(self, send: Send, reason: Reason, decision_id: str, policy: CompiledPolicy | None,
                       detail: str | None = None, *, head: bool = False, status: int | None = None) -> None:
        status, body = problem_body(reason, decision_id, detail, status=status)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"veil-decision", b"block"),
            (b"veil-decision-id", decision_id.encode()),
            (b"cache-control", b"private, no-store"),
            (b"vary", VARY),
        ]
        if policy is not None:
            headers.append((b"veil-policy", policy.version.encode()))
        if status == 401:
            headers.append((b"www-authenticate", b'Veil-Key realm="veil"'))
        await send_response(send, status, headers, body, head=head)


__all__ = ["ProxyApp", "ProxyExchange", "UpstreamFailure", "where"]
