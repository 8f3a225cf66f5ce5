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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from veil import metrics
from veil.consent import signals
from veil.consent.store import ConsentState
from veil.errors import ConsentUnavailable, VeilError
from veil.policy.compile import CompiledPolicy
from veil.policy.decision import Admitted, Blocked, admit, consent_reason
from veil.proxy.asgi import lifespan, request_body, send_response
from veil.proxy.enforce import EnforceError, check_depth, decode_content, find_list, parse_json, subject_of
from veil.proxy.headers import HOP_BY_HOP, OVERRIDE, VARY, forward_headers, response_headers
from veil.proxy.normalize import PathInvalid, normalize_path
from veil.proxy.problem import problem_body
from veil.proxy.records import Recorder, count
from veil.proxy.runtime import Runtime
from veil.proxy.upstream import UpstreamError, UpstreamResponse

log = logging.getLogger("veil.proxy")

Scope = dict[str, Any]
MAX_HEADER_BYTES = 32 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


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
        try:
            await self._handle(scope, receive, send, policy, decision_id, t0)
        except Exception:  # the last line of defence: never a stack trace, never data
            log.exception("internal error (decision %s)", decision_id)
            await self._problem(send, "internal_error", decision_id, policy)

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
            elif name.decode("latin-1") in OVERRIDE:
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
        cert = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_name")  # proxy/tlsinfo.py
        outcome = admit(policy, method, path, keys, purposes, cert_subject=cert)
        report_only = self._report_only(policy, outcome, method, path)
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
        route = outcome.route if isinstance(outcome, Admitted) else policy.match(method, path)
        upstream_name = route[0].upstream if isinstance(route, tuple) else (route.upstream if route else None)
        fwd_headers = forward_headers(scope, headers, enforced=not report_only)
        fwd_method = "GET" if method == "HEAD" else method  # a HEAD answer would have no body to enforce
        qs = ("?" + query_string.decode("latin-1")) if query_string else ""
        t_up = time.perf_counter()
        try:
            resp = await self.rt.upstreams.request(
                upstream_name, fwd_method, wire_path + qs, fwd_headers, request_body(scope, receive, headers),
                self.config.max_body_bytes,
            )
        except UpstreamError as exc:
            up = self.rt.upstreams.name(upstream_name)
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

    def _report_only(self, policy: CompiledPolicy, outcome: Admitted | Blocked, method: str, path: str) -> bool:
        """Global mode, unless the matched route sets its own (also when the request was blocked
        before admission: a route being rolled out in report-only passes unknown callers through too)."""
        if isinstance(outcome, Admitted):
            route_mode = outcome.route.mode
        else:
            found = policy.match(method, path) if outcome.route else None
            route_mode = found[0].mode if found else None
        return (route_mode or self.config.mode) == "report-only"

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

    # ------------------------------------------------------------------ step 5 helpers
    # ------------------------------------------------------------------ step 6
    async def _enforce(self, send: Any, scope: Scope, policy: CompiledPolicy, ad: Admitted,
                       resp: UpstreamResponse, decision_id: str, t0: float, up_time: float,
                       subject: str | None, facts: dict[str, str]) -> None:
        rule = ad.rule
        if 300 <= resp.status < 400:
            await self._block(send, scope, policy, self._as_blocked(ad, "upstream_redirect"), decision_id, t0,
                              subject=subject)
            return
        hdrs = {k.lower(): v for k, v in resp.headers}
        if resp.status >= 400:
            await self._upstream_status(send, scope, policy, ad, resp.status, decision_id, t0, subject)
            return
        subjects: list[str] = []
        filtered = 0
        try:
            body = decode_content(resp.body, hdrs.get("content-encoding"), self.config.max_body_bytes)
            if (not body.strip() and resp.status == 204) or (not body and resp.status in (200, 204)):
                out_body = b""
                report = None
            else:
                doc = parse_json(hdrs.get("content-type"), body)
                if ad.route.each is not None:
                    doc, subjects, filtered, why = await self._filter_items(ad, doc, scope, facts)
                    if why is not None:
                        await self._block(send, scope, policy, self._as_blocked(ad, why), decision_id, t0,
                                          subject=subject)
                        return
                doc, report = rule.plan.apply(doc)
                check_depth(doc, self.config.max_json_depth)  # what would leave; removed parts are never read
                out_body = orjson.dumps(doc)
        except EnforceError as exc:
            await self._block(send, scope, policy, self._as_blocked(ad, exc.reason), decision_id, t0,
                              detail=exc.detail, subject=subject)
            return
        except (RecursionError, orjson.JSONEncodeError, TypeError, VeilError):
            await self._block(send, scope, policy, self._as_blocked(ad, "body_invalid"), decision_id, t0,
                              detail="the document cannot be enforced (too deep or not JSON data)",
                              subject=subject)
            return
        summary = self.rec.summary(policy, rule, report)
        decision = "filter" if filtered else ("redact" if summary.changed else "allow")
        out_headers = response_headers(resp.headers, policy, decision, decision_id)
        out_headers.append((b"content-type", b"application/json"))
        if report is not None and report.suppressed:
            out_headers.append((b"veil-suppressed", str(report.suppressed).encode()))
        record = self.rec.decision(policy, ad, decision, "ok", decision_id, subject, subjects, summary, facts,
                              filtered=filtered)
        if not await self._audit(record):
            await self._block(send, scope, policy, self._as_blocked(ad, "audit_unavailable"), decision_id, t0,
                              log_it=False)
            return
        count(ad.route.template, ad.purpose.name, decision, "ok", summary, filtered)
        metrics.overhead(ad.route.template).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, resp.status, out_headers, out_body, head=scope["method"] == "HEAD")

    async def _filter_items(self, ad: Admitted, doc: Any, scope: Scope, facts: dict[str, str]
                            ) -> tuple[Any, list[str], int, str | None]:
        """Per-item consent: one batched lookup; items without consent (or without a subject) removed."""
        assert ad.route.each is not None
        list_path, subject_path = ad.route.each
        items = find_list(doc, list_path)
        if items is None:
            return doc, [], 0, None
        rule = ad.rule
        ids = [subject_of(item, subject_path) for item in items]
        wanted = sorted({i for i in ids if i is not None})
        states: dict[tuple[str, str], ConsentState] = {}
        if rule.consent_keys and wanted:
            try:
                states = await self.rt.store.current(wanted, rule.consent_keys)
            except (ConsentUnavailable, VeilError, OSError):
                return doc, [], 0, "consent_unavailable"
        gpc = "gpc" in facts
        now = _now()
        keep: list[Any] = []
        kept_ids: list[str] = []
        verdicts: dict[str, str | None] = {}
        for item, sid in zip(items, ids, strict=True):
            if sid is None:
                continue
            why = verdicts.get(sid, "?")
            if why == "?":
                per = {k: states[(sid, k)] for k in rule.consent_keys if (sid, k) in states}
                why = consent_reason(rule, per, now, gpc=gpc, vendor=ad.caller.vendor)
                verdicts[sid] = why
            if why is None:
                keep.append(item)
                kept_ids.append(sid)
        filtered = len(items) - len(keep)
        items[:] = keep
        return doc, kept_ids, filtered, None

    async def _report_only_response(self, send: Any, scope: Scope, policy: CompiledPolicy,
                                    outcome: Admitted | Blocked, resp: UpstreamResponse, decision_id: str,
                                    t0: float, up_time: float, subject: str | None, facts: dict[str, str]
                                    ) -> None:
        """Decide, record and count as in enforce mode, but pass the upstream response through unchanged."""
        decision, reason = ("block", outcome.reason) if isinstance(outcome, Blocked) else ("allow", "ok")
        report = None
        subjects: list[str] = []
        filtered = 0
        if isinstance(outcome, Admitted):
            decision, reason, report, subjects, filtered = await self._would_enforce(outcome, resp, scope,
                                                                                    facts)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "server", "date")]
        headers += [
            (b"veil-report-only", f"{decision}; reason={reason}".encode()),
            (b"veil-decision-id", decision_id.encode()),
            (b"veil-policy", policy.version.encode()),
        ]
        if isinstance(outcome, Admitted):
            route = outcome.route.template
            summary = self.rec.summary(policy, outcome.rule, report)
            record = self.rec.decision(policy, outcome, decision, reason, decision_id, subject, subjects, summary,
                                  facts, filtered=filtered)
            count(route, outcome.purpose.name, decision, reason, summary, filtered)
        else:
            route = outcome.route or "-"
            record = self.rec.block(policy, decision_id, reason, outcome.route, outcome.purpose, outcome.caller,
                                    subject, facts, [str(loc) for loc in outcome.locations])
            record["decision"] = decision
            metrics.requests(route, outcome.purpose or "-", decision, reason).inc()
        record["mode"] = "report-only"
        await self._audit(record)  # report-only never blocks on the log
        metrics.overhead(route).observe(time.perf_counter() - t0 - up_time)
        await send_response(send, resp.status, headers, resp.body, head=scope["method"] == "HEAD")

    async def _would_enforce(self, ad: Admitted, resp: UpstreamResponse, scope: Scope, facts: dict[str, str]
                             ) -> tuple[str, str, Any, list[str], int]:
        """What `_enforce` would decide for this response: (decision, reason, report, subjects, filtered)."""
        if 300 <= resp.status < 400:
            return "block", "upstream_redirect", None, [], 0
        if resp.status >= 400:
            return "block", "upstream_status", None, [], 0
        hdrs = {k.lower(): v for k, v in resp.headers}
        try:
            body = decode_content(resp.body, hdrs.get("content-encoding"), self.config.max_body_bytes)
            if (not body.strip() and resp.status == 204) or (not body and resp.status in (200, 204)):
                return "allow", "ok", None, [], 0
            doc = parse_json(hdrs.get("content-type"), body)
            subjects: list[str] = []
            filtered = 0
            if ad.route.each is not None:
                doc, subjects, filtered, why = await self._filter_items(ad, doc, scope, facts)
                if why is not None:
                    return "block", why, None, [], 0
            out, report = ad.rule.plan.apply(doc)
            check_depth(out, self.config.max_json_depth)
        except EnforceError as exc:
            return "block", exc.reason, None, [], 0
        except (RecursionError, TypeError):
            return "block", "body_invalid", None, [], 0
        changed = bool(report.removed or report.dropped or report.transformed or report.type_errors
                       or report.suppressed)
        decision = "filter" if filtered else ("redact" if changed else "allow")
        return decision, "ok", report, subjects, filtered

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
        metrics.requests(ad.route.template, ad.purpose.name, "block", "upstream_status").inc()
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
        metrics.requests(route, purpose, "block", blocked.reason).inc()
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
