"""The proxy listener: a pure ASGI app implementing the request flow.

    1 match route   2 authenticate   3 purpose + rule   4 subject, consent, signals
    5 forward       6 enforce the response               7 record the decision

Every response carries Veil-Decision, Veil-Decision-Id and Veil-Policy. Anything unknown or broken
fails closed with application/problem+json and a stable reason; no stack trace, no data.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from veil import metrics
from veil.consent import signals
from veil.consent.store import ConsentState
from veil.errors import ConsentUnavailable, VeilError
from veil.policy.compile import CompiledPolicy, CompiledRoute
from veil.policy.decision import Admitted, Blocked, admit, consent_reason, consent_reasons, no_content, status_reason
from veil.proxy.asgi import ResponseGuard, lifespan, request_body, send_response
from veil.proxy.enforce import EnforceError, check_depth, decode_content, keep_items, list_items, parse_json
from veil.proxy.headers import HOP_BY_HOP, OVERRIDE, VARY, forward_headers, response_headers, wants_upgrade
from veil.proxy.normalize import PathInvalid, normalize_path
from veil.proxy.problem import problem_body
from veil.proxy.records import Recorder, Summary, count
from veil.proxy.runtime import Runtime
from veil.proxy.upstream import UpstreamError, UpstreamResponse
from veil.redact.lazy import NotLazy, is_lazy

log = logging.getLogger("veil.proxy")

Scope = dict[str, Any]
MAX_HEADER_BYTES = 32 * 1024
_OVERRIDE_BYTES = frozenset(h.encode() for h in OVERRIDE)


def where(exc: BaseException) -> str:
    """`TypeName at file:line in function` for the innermost frame: no exception message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    f = frames[-1]
    return f"{type(exc).__name__} at {Path(f.filename).name}:{f.lineno} in {f.name}"


def _now() -> datetime:
    return datetime.now(UTC)


_NOT_ENFORCEABLE = "the document cannot be enforced (too deep or not JSON data)"


@dataclass(slots=True)
class _Evaluation:
    """The policy applied to one upstream response: reason "ok" with the enforced document (or none),
    or the reason veil refuses it."""

    reason: str
    doc: Any = None
    has_body: bool = False
    report: Any = None
    subjects: list[str] = field(default_factory=list)
    filtered: int = 0
    detail: str | None = None

    def decision(self, summary: Summary) -> str:
        return "filter" if self.filtered else ("redact" if summary.changed else "allow")


class ProxyApp:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.config = runtime.config
        self.rec = Recorder(runtime.pseudonym_ring)
        self._gpc_json = orjson.dumps({"gpc": True, "lastUpdate": _now().date().isoformat()})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
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
            log.error("internal error (decision %s): %s", decision_id, where(exc))
            if not guard.started:  # issue 15: never a second response; else uvicorn closes the connection
                await self._problem(guard, "internal_error", decision_id, policy)

    # ------------------------------------------------------------------ the flow
    async def _handle(self, scope: Scope, receive: Any, send: Any, policy: CompiledPolicy | None,
                      decision_id: str, t0: float) -> None:
        if policy is None:
            await self._problem(send, "policy_unavailable", decision_id, None)
            return
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        addr = client[0] if client else "-"
        if self.rt.limiter.blocked(addr):
            metrics.auth_rate_limited_total.labels("proxy").inc()
            await self._problem(send, "rate_limited", decision_id, policy)
            return
        if sum(len(n) + len(v) for n, v in headers) > MAX_HEADER_BYTES:
            await self._block(send, scope, policy, Blocked("headers_too_large"), decision_id, t0)
            return
        keys: list[str] = []
        purposes: list[str] = []
        gpc_values: list[str] = []
        override = False
        query_string: bytes = scope.get("query_string", b"")
        for name, value in headers:
            if name == b"veil-key":
                keys.append(value.decode("latin-1"))
            elif name == b"veil-purpose":
                purposes.append(value.decode("latin-1"))
            elif name == b"sec-gpc":
                gpc_values.append(value.decode("latin-1"))
            elif name in _OVERRIDE_BYTES:
                override = True
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0]
        try:
            path, wire_path = normalize_path(raw_path)
        except PathInvalid as exc:
            await self._block(send, scope, policy, Blocked("path_invalid"), decision_id, t0, str(exc))
            return
        if path == "/.well-known/gpc.json" and method in ("GET", "HEAD") and policy.honors_gpc:
            await send_response(send, 200, [(b"content-type", b"application/json")], self._gpc_json,
                        head=method == "HEAD")
            return
        if override:
            await self._block(send, scope, policy, Blocked("method_override"), decision_id, t0)
            return
        if wants_upgrade(headers):  # issue 15: WebSocket is off in the server; say so with a problem
            await self._block(send, scope, policy, Blocked("upgrade_refused"), decision_id, t0)
            return
        cert = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_name")  # proxy/tlsinfo.py
        outcome = admit(policy, method, path, keys, purposes, cert_subject=cert)
        route = outcome.route if isinstance(outcome, Admitted) else self._route_of(policy, outcome, method, path)
        report_only = ((route.mode if route else None) or self.config.mode) == "report-only"
        if isinstance(outcome, Blocked):
            if outcome.reason == "unknown_caller":
                self.rt.limiter.failed(addr)
                metrics.auth_failures_total.labels("proxy", "unknown_key" if keys else "no_key").inc()
            if not report_only:
                await self._block(send, scope, policy, outcome, decision_id, t0)
                return
        gpc = signals.gpc_from_headers(gpc_values)
        subject: str | None = None
        consent_facts: dict[str, str] = {}
        if isinstance(outcome, Admitted):
            subject, why = await self._subject_consent(outcome, scope, headers, query_string, gpc,
                                                       consent_facts)
            if why is not None:
                blocked = Blocked(why, outcome.route.template, outcome.purpose.name, outcome.caller.name,
                                  (outcome.rule.loc,))
                if not report_only:
                    await self._block(send, scope, policy, blocked, decision_id, t0, subject=subject,
                                      consent=consent_facts)
                    return
                outcome = blocked
        # 5. forward
        upstream_name = route.upstream if route else None
        fwd_headers = forward_headers(scope, headers, enforced=not report_only)
        fwd_method = "GET" if method == "HEAD" else method  # a HEAD answer would have no body to enforce
        qs = ("?" + query_string.decode("latin-1")) if query_string else ""
        t_up = time.perf_counter()
        try:
            resp = await self.rt.upstreams.request(
                upstream_name, fwd_method, wire_path + qs, fwd_headers,
                request_body(scope, receive, headers, self.config.client_limits),  # issue 15: body deadlines
                self.config.max_body_bytes,
            )
        except UpstreamError as exc:
            up = self.rt.upstreams.name(upstream_name)
            if exc.kind != "client":  # issue 15: a client's cut-off or slow body is not an upstream error
                metrics.upstream_errors_total.labels(up, exc.kind).inc()
            await self._block(send, scope, policy, self._as_blocked(outcome, exc.reason), decision_id, t0,
                              subject=subject)
            return
        up_time = time.perf_counter() - t_up
        metrics.upstream_seconds(self.rt.upstreams.name(upstream_name)).observe(up_time)
        if report_only:
            await self._report_only_response(send, scope, policy, outcome, resp, decision_id, t0, up_time,
                                             subject, consent_facts)
            return
        assert isinstance(outcome, Admitted)
        await self._enforce(send, scope, policy, outcome, resp, decision_id, t0, up_time, subject, consent_facts)

    @staticmethod
    def _route_of(policy: CompiledPolicy, blocked: Blocked, method: str, path: str) -> CompiledRoute | None:
        """The route of a request blocked before admission (for its mode and upstream), if it has one.
        A route's own mode applies to such requests too: a route rolled out in report-only passes them."""
        found = policy.match(method, path) if blocked.route else None
        return found[0] if found else None

    @staticmethod
    def _as_blocked(outcome: Admitted | Blocked, reason: str) -> Blocked:
        if isinstance(outcome, Admitted):
            return Blocked(reason, outcome.route.template, outcome.purpose.name, outcome.caller.name)
        return Blocked(reason, outcome.route, outcome.purpose, outcome.caller)

    # ------------------------------------------------------------------ step 4
    async def _subject_consent(
        self, ad: Admitted, scope: Scope, headers: list[tuple[bytes, bytes]], query_string: bytes, gpc: bool,
        facts: dict[str, str],
    ) -> tuple[str | None, str | None]:
        rule = ad.rule
        subject: str | None = None
        src = ad.route.subject
        if src is not None:
            kind, name = src
            if kind == "path":
                subject = ad.params.get(name)
            elif kind == "query":
                vals = parse_qs(query_string.decode("latin-1")).get(name, [])
                subject = vals[0] if len(vals) == 1 else None
            else:
                hv = [v.decode("latin-1") for n, v in headers if n == name.lower().encode()]
                subject = hv[0] if len(hv) == 1 else None
            if not subject:
                return None, "subject_missing"
        if gpc:
            facts["gpc"] = "1"  # per-item checks on list routes read it too
        needs = bool(rule.consent_keys) or "tcf" in rule.purpose.sources or gpc
        if subject is None or not needs:
            if gpc and (rule.purpose.gpc_honor or rule.respect_gpc) and ad.route.each is None:
                return subject, "gpc_opt_out"
            return subject, None
        states: dict[str, ConsentState] = {}
        if rule.consent_keys:
            try:  # the store's cache observes veil_consent_store_latency_seconds on its misses only
                got = await self.rt.store.current([subject], rule.consent_keys)
            except (ConsentUnavailable, VeilError, OSError):
                return subject, "consent_unavailable"
            states = {k: got[(subject, k)] for k in rule.consent_keys if (subject, k) in got}
        tcf = self._tcf(headers) if "tcf" in rule.purpose.sources else None
        why = consent_reason(rule, states, _now(), gpc=gpc, tcf=tcf, vendor=ad.caller.vendor)
        for k, st in states.items():
            facts[k] = st.status.value
        if tcf is not None:
            facts["tcf"] = "valid" if tcf.valid else "invalid"
        return subject, why

    def _tcf(self, headers: list[tuple[bytes, bytes]]) -> Any:
        from veil.consent.tcf import decode

        pairs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        cookie = "; ".join(v for n, v in pairs if n == "cookie") or None
        tc = signals.tcf_from_request(pairs, cookie, header_name=self.config.tcf_header,
                                      cookie_name=self.config.tcf_cookie)
        return decode(tc) if tc else None

    # ------------------------------------------------------------------ step 6
    async def _evaluate(self, ad: Admitted, resp: UpstreamResponse, scope: Scope, facts: dict[str, str]
                        ) -> _Evaluation:
        """What the policy makes of this upstream response (enforce and report-only alike)."""
        why = status_reason(resp.status)  # issue 15: one rule for statuses (veil.policy.decision)
        if why is not None:
            return _Evaluation(why)
        hdrs = {k.lower(): v for k, v in resp.headers}
        ev = _Evaluation("ok")
        try:
            if no_content(resp.status, resp.body):  # issue 15: empty 2xx pass empty (decision.no_content)
                return ev
            body = decode_content(resp.body, hdrs.get("content-encoding"), self.config.max_body_bytes)
            if not body:  # issue 15: an encoded empty body is empty too
                return ev
            plan = ad.rule.plan
            ctype = hdrs.get("content-type")
            # A large body the plan mostly filters is read lazily: only what the plan reads becomes
            # Python objects (veil.redact.lazy). Anything the lazy reading cannot match exactly
            # (duplicate keys, numbers simdjson refuses) is redone on an orjson parse.
            lazy_min = self.config.lazy_json_min_bytes
            doc = parse_json(ctype, body, lazy=lazy_min is not None and len(body) >= lazy_min
                             and plan.lazy_ok(ad.route.each))
            try:
                await self._apply(ad, doc, scope, facts, ev)
                retry = False
            except NotLazy:
                retry = True
            if retry:  # outside the handler: its traceback would keep the lazy document alive meanwhile
                doc = None
                ev = _Evaluation("ok")
                await self._apply(ad, parse_json(ctype, body), scope, facts, ev)
            if ev.reason != "ok":
                return ev
            # What would leave is checked (removed parts are never read); a body with few brackets
            # cannot nest deeper than the limit, so most profiles skip the walk.
            check_depth(ev.doc, self.config.max_json_depth, body, plan.added_depth)
            ev.has_body = True
        except EnforceError as exc:
            return _Evaluation(exc.reason, detail=exc.detail)
        except (RecursionError, TypeError, VeilError):
            return _Evaluation("body_invalid", detail=_NOT_ENFORCEABLE)
        return ev

    async def _apply(self, ad: Admitted, doc: Any, scope: Scope, facts: dict[str, str], ev: _Evaluation) -> None:
        """Per-item consent (list routes), then the field plan: fills `ev` (its reason when blocked)."""
        lazy = is_lazy(doc)
        if ad.route.each is not None:
            doc, ev.subjects, ev.filtered, why = await self._filter_items(ad, doc, scope, facts, lazy)
            if why is not None:
                ev.reason = why
                return
        plan = ad.rule.plan
        ev.doc, ev.report = plan.apply_lazy(doc) if lazy else plan.apply(doc)

    async def _enforce(self, send: Any, scope: Scope, policy: CompiledPolicy, ad: Admitted,
                       resp: UpstreamResponse, decision_id: str, t0: float, up_time: float,
                       subject: str | None, facts: dict[str, str]) -> None:
        ev = await self._evaluate(ad, resp, scope, facts)
        if ev.reason == "upstream_status":
            await self._upstream_status(send, scope, policy, ad, resp.status, decision_id, t0, subject)
            return
        reason, out_body = ev.reason, b""
        if reason == "ok" and ev.has_body:
            try:
                out_body = orjson.dumps(ev.doc)
            except (orjson.JSONEncodeError, TypeError):
                reason, ev.detail = "body_invalid", _NOT_ENFORCEABLE
        if reason != "ok":
            await self._block(send, scope, policy, self._as_blocked(ad, reason), decision_id, t0,
                              detail=ev.detail, subject=subject)
            return
        summary = self.rec.summary(policy, ad.rule, ev.report)
        decision = ev.decision(summary)
        out_headers = response_headers(resp.headers, policy, decision, decision_id)
        if ev.has_body:  # issue 15: an empty response gets no content type
            out_headers.append((b"content-type", b"application/json"))
        if ev.report is not None and ev.report.suppressed:
            out_headers.append((b"veil-suppressed", str(ev.report.suppressed).encode()))
        record = self.rec.decision(policy, ad, decision, "ok", decision_id, subject, ev.subjects, summary, facts,
                                   filtered=ev.filtered)
        if not await self._audit(record):
            await self._block(send, scope, policy, self._as_blocked(ad, "audit_unavailable"), decision_id, t0,
                              log_it=False)
            return
        count(ad.route.template, ad.purpose.name, decision, "ok", summary, ev.filtered)
        metrics.overhead(ad.route.template).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, resp.status, out_headers, out_body, head=scope["method"] == "HEAD")

    async def _filter_items(self, ad: Admitted, doc: Any, scope: Scope, facts: dict[str, str], lazy: bool = False
                            ) -> tuple[Any, list[str], int, str | None]:
        """Per-item consent: one batched lookup; items without consent (or without a subject) removed.
        NotLazy (from keep_items) sends a lazy document back to an orjson parse."""
        assert ad.route.each is not None
        doc, items, ids = list_items(doc, ad.route.each, lazy)
        if items is None:
            return doc, [], 0, None
        rule = ad.rule
        wanted = list(dict.fromkeys(i for i in ids if i is not None))
        states: dict[tuple[str, str], ConsentState] = {}
        if rule.consent_keys and wanted:
            try:
                states = await self.rt.store.current(wanted, rule.consent_keys)
            except (ConsentUnavailable, VeilError, OSError):
                return doc, [], 0, "consent_unavailable"
        verdicts = consent_reasons(rule, wanted, states, _now(), gpc="gpc" in facts, vendor=ad.caller.vendor)
        kept_ids, filtered = keep_items(items, ids, verdicts, ad.route.each[1], lazy)
        return doc, kept_ids, filtered, None

    async def _report_only_response(self, send: Any, scope: Scope, policy: CompiledPolicy,
                                    outcome: Admitted | Blocked, resp: UpstreamResponse, decision_id: str,
                                    t0: float, up_time: float, subject: str | None, facts: dict[str, str]
                                    ) -> None:
        """Decide, record and count as in enforce mode, but pass the upstream response through unchanged."""
        reason = outcome.reason if isinstance(outcome, Blocked) else "ok"
        decision = "block"
        if isinstance(outcome, Admitted):
            ev = await self._evaluate(outcome, resp, scope, facts)
            reason = ev.reason
            summary = self.rec.summary(policy, outcome.rule, ev.report)
            if reason == "ok":
                decision = ev.decision(summary)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "server", "date")]
        headers += [
            (b"veil-report-only", f"{decision}; reason={reason}".encode()),
            (b"veil-decision-id", decision_id.encode()),
            (b"veil-policy", policy.version.encode()),
        ]
        if isinstance(outcome, Admitted):
            route = outcome.route.template
            record = self.rec.decision(policy, outcome, decision, reason, decision_id, subject, ev.subjects,
                                       summary, facts, filtered=ev.filtered)
            count(route, outcome.purpose.name, decision, reason, summary, ev.filtered)
        else:
            route = outcome.route or "-"
            record = self.rec.block(policy, decision_id, reason, outcome.route, outcome.purpose, outcome.caller,
                                    subject, facts, [str(loc) for loc in outcome.locations])
            metrics.tally.inc(metrics.requests(route, outcome.purpose or "-", decision, reason))
        record["mode"] = "report-only"
        await self._audit(record)  # report-only never blocks on the log
        metrics.overhead(route).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, resp.status, headers, resp.body, head=scope["method"] == "HEAD")

    async def _upstream_status(self, send: Any, scope: Scope, policy: CompiledPolicy, ad: Admitted, status: int,
                               decision_id: str, t0: float, subject: str | None) -> None:
        """An upstream error status is passed on, its body is not (it was not written for this purpose)."""
        body = orjson.dumps({
            "type": "https://veil.dev/problems/upstream-status", "title": "Upstream error",
            "status": status, "detail": f"the upstream answered {status}", "reason": "upstream_status",
            "decision_id": decision_id,
        })
        headers = response_headers([], policy, "block", decision_id)
        headers.append((b"content-type", b"application/problem+json"))
        record = self.rec.decision(policy, ad, "block", "upstream_status", decision_id, subject, [],
                              self.rec.summary(policy, ad.rule, None), {})
        await self._audit(record)
        metrics.tally.inc(metrics.requests(ad.route.template, ad.purpose.name, "block", "upstream_status"))
        await send_response(send, status, headers, body, head=scope["method"] == "HEAD")

    # ------------------------------------------------------------------ step 7
    async def _audit(self, record: dict[str, Any]) -> bool:
        try:
            await self.rt.audit.append(record)
            return True
        except VeilError:
            return False

    async def _block(self, send: Any, scope: Scope, policy: CompiledPolicy | None, blocked: Blocked,
                     decision_id: str, t0: float, detail: str | None = None, *, subject: str | None = None,
                     consent: dict[str, str] | None = None, log_it: bool = True) -> None:
        route = blocked.route or "-"
        purpose = blocked.purpose or "-"
        if policy is not None and log_it:
            rec = self.rec.block(policy, decision_id, blocked.reason, blocked.route, blocked.purpose,
                                 blocked.caller, subject, consent, [str(loc) for loc in blocked.locations])
            await self._audit(rec)  # a block discloses nothing: it is sent even if the log is down
        metrics.tally.inc(metrics.requests(route, purpose, "block", blocked.reason))
        metrics.overhead(route).observe(time.perf_counter() - t0)
        await self._problem(send, blocked.reason, decision_id, policy, detail, head=scope["method"] == "HEAD")

    async def _problem(self, send: Any, reason: str, decision_id: str, policy: CompiledPolicy | None,
                       detail: str | None = None, *, head: bool = False) -> None:
        status, body = problem_body(reason, decision_id, detail)
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
