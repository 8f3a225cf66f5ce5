"""The admin listener (its own port): health, readiness, metrics, consent API, notice, audit report,
reload, the discovery report, and its own OpenAPI document (admin_openapi.yaml, at /openapi.json;
docs/admin-api.md). Scoped bearer tokens: `read` (metrics, notice, discovery report, readiness
details), `consent`, `audit`, `reload`. Health and readiness are open (probes): `/readyz` gives the
whole veil's status and reason codes only (veil.proxy.readiness); its per-worker details (checks,
policy version, a rejected policy's error with file names and source) need the read token, and are not
served when none is configured. A scope with no configured token is closed, except `read`, which is
open when no read token is configured. Every admin action that reads or changes personal data is
written to the decision log (who, what, when; the subject as a pseudonym only).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from veil import __version__, metrics
from veil.audit.report import pseudonym, pseudonyms
from veil.consent.importer import parse_row
from veil.consent.propagate import iso
from veil.consent.store import ConsentEvent, ConsentState
from veil.errors import VeilError
from veil.keys import constant_time_equal
from veil.proxy.readiness import aggregate, parse_tolerate
from veil.proxy.runtime import Runtime

log = logging.getLogger("veil.admin")
Endpoint = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status, media_type="application/json")


def _problem(status: int, reason: str, detail: str, errors: list[tuple[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"type": f"https://veil.dev/problems/{reason.replace('_', '-')}", "title": detail,
                            "status": status, "detail": detail, "reason": reason}
    if errors:
        body["errors"] = [{"field": f, "message": m} for f, m in errors]
    return Response(orjson.dumps(body), status, media_type="application/problem+json")


def _invalid(errors: list[tuple[str, str]]) -> Response:
    """400 request_invalid naming every field and its problem (never the value)."""
    return _problem(400, "request_invalid", "; ".join(f"{f}: {m}" for f, m in errors), errors)


# POST /consent/{subject}: field -> the JSON types it may have (None: null). The values are then
# checked by the consent importer's own rules (veil.consent.importer.parse_row): one set of rules
# for a consent record, whichever way it arrives.
_CONSENT_FIELDS: dict[str, tuple[type | None, ...]] = {
    "key": (str,), "action": (str,), "source": (str,), "method": (str,), "notice_version": (int, None),
    "expires_at": (str, None), "jurisdiction": (str, None), "purposes": (list,),
}
_TYPE_NAMES: dict[type | None, str] = {str: "a string", int: "a whole number", list: "a list of strings",
                                       None: "null"}


def consent_event(subject: str, body: bytes, now: datetime) -> ConsentEvent | list[tuple[str, str]]:
    """The event a POST /consent/{subject} body records, or (field, problem) for everything wrong."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [("body", "is not valid JSON")]
    if not isinstance(data, dict):
        return [("body", "must be a JSON object")]
    errors: list[tuple[str, str]] = []
    for name, value in data.items():
        allowed = _CONSENT_FIELDS.get(name)
        if allowed is None:
            errors.append((str(name)[:40], f"unknown field (expected: {', '.join(_CONSENT_FIELDS)})"))
        elif not any(value is None if t is None else isinstance(value, t) and not isinstance(value, bool)
                     for t in allowed):
            errors.append((name, "must be " + " or ".join(_TYPE_NAMES[t] for t in allowed)))
    if "key" not in data:
        errors.append(("key", "is required"))
    action = data.get("action", "given")
    if isinstance(action, str) and action not in ("given", "withdrawn"):
        errors.append(("action", 'must be "given" or "withdrawn"'))
    if errors:
        return errors
    raw = {
        "subject": subject, "consent_key": data["key"], "action": action, "at": now.isoformat(),
        "source": data.get("source") or "admin-api", "method": data.get("method") or "api",
        "notice_version": data.get("notice_version"), "expires_at": data.get("expires_at"),
        "jurisdiction": data.get("jurisdiction"), "purposes": data.get("purposes"),
    }
    parsed = parse_row(0, raw)
    if isinstance(parsed, ConsentEvent):
        return parsed
    names = {"consent_key": "key"}
    return [(names.get(e.column, e.column), e.problem.replace("is not after at", "is not after now (the time of "
                                                              "recording)")) for e in parsed]


def _query_parameters(doc: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(path, method) -> the query parameter names the document declares for it."""
    out: dict[tuple[str, str], frozenset[str]] = {}
    for path, item in doc["paths"].items():
        shared = [p for p in item.get("parameters", []) if p.get("in") == "query"]
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                params = shared + [p for p in op.get("parameters", []) if p.get("in") == "query"]
                out[(path, method)] = frozenset(p["name"] for p in params)
    return out


def openapi_document() -> dict[str, Any]:
    """The admin API's OpenAPI document (admin_openapi.yaml, shipped in the package)."""
    text = resources.files("veil.proxy").joinpath("admin_openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    doc["info"]["version"] = __version__
    return doc


def state_json(st: ConsentState) -> dict[str, Any]:
    return {
        "key": st.consent_key, "status": st.status.value, "at": st.at, "notice_version": st.notice_version,
        "expires_at": st.expires_at, "source": st.source,
    }


def event_json(ev: ConsentEvent) -> dict[str, Any]:
    return {
        "event_id": ev.event_id, "subject": ev.subject, "consent_key": ev.consent_key,
        "action": ev.action.value, "at": ev.at, "source": ev.source, "method": ev.method,
        "notice_version": ev.notice_version, "expires_at": ev.expires_at, "jurisdiction": ev.jurisdiction,
        "purposes": list(ev.purposes),
    }


def build_admin_app(rt: Runtime) -> Starlette:
    tokens: dict[str, list[str]] = {}
    for scope, spec in rt.config.admin_tokens.items():
        ring = spec.resolve(f"admin.tokens.{scope}")
        # a hex token is decoded to bytes by load_secret: accept its text form and its raw form
        tokens[scope] = [k.hex() for k in ring.keys.values()] + [k.decode("latin-1") for k in ring.keys.values()]

    def authorize(request: Request, scope: str) -> Response | None:
        wanted = tokens.get(scope)
        if wanted is None:
            if scope == "read":
                return None
            return _problem(403, "admin_scope_closed", f"no token is configured for the {scope} scope")
        auth = request.headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        ok = False
        for t in wanted:  # constant time against every accepted token
            ok |= constant_time_equal(presented, t)
        if not ok:
            metrics.auth_failures_total.labels("admin", "bad_token" if presented else "no_token").inc()
            return _problem(401 if not presented else 403, "admin_unauthorized",
                            f"a bearer token for the {scope} scope is required")
        return None

    async def admin_audit(request: Request, action: str, scope: str, subject: str | None = None,
                          extra: dict[str, Any] | None = None) -> None:
        rec = {
            "kind": "admin", "id": os.urandom(12).hex(), "time": datetime.now(UTC).isoformat(),
            "action": action, "scope": scope, "client": request.client.host if request.client else None,
            "subject": pseudonym(rt.pseudonym_ring, subject) if subject else None, **(extra or {}),
        }
        try:
            await rt.audit.append(rec)
        except VeilError:
            log.error("admin action %s not written to the decision log", action)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            tolerate = parse_tolerate(request.query_params.getlist("tolerate"))
        except ValueError as exc:
            return _problem(400, "request_invalid", str(exc))
        details = "authorization" in request.headers
        if details:
            if "read" not in tokens:
                return _problem(403, "admin_scope_closed",
                                "readiness details need a read token; none is configured")
            if (denied := authorize(request, "read")) is not None:
                return denied
        state = aggregate(await rt.readiness_all())
        return _json(state.detailed_json() if details else state.open_json(), state.http_status(tolerate))

    async def metrics_endpoint(request: Request) -> Response:
        if (denied := authorize(request, "read")) is not None:
            return denied
        flush = getattr(rt.store, "flush_metrics", None)  # the cache batches its hit/miss counts
        if flush is not None:
            flush()
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def consent_get(request: Request) -> Response:
        if (denied := authorize(request, "consent")) is not None:
            return denied
        subject = request.path_params["subject"]
        policy = rt.policy.current
        keys = sorted({p.consent_key for p in policy.purposes.values() if p.consent_key}) if policy else []
        try:
            states = await rt.store.current([subject], keys) if keys else {}
            history = await rt.store.history(subject)
        except VeilError:
            return _problem(503, "consent_unavailable", "the consent store is unavailable")
        await admin_audit(request, "consent.read", "consent", subject)
        return _json({
            "subject": pseudonym(rt.pseudonym_ring, subject),
            "current": [state_json(states[(subject, k)]) for k in keys if (subject, k) in states],
            "history": [event_json(e) for e in history],
        })

    async def consent_post(request: Request) -> Response:
        if (denied := authorize(request, "consent")) is not None:
            return denied
        subject = request.path_params["subject"]
        ev = consent_event(subject, await request.body(), datetime.now(UTC))
        if not isinstance(ev, ConsentEvent):
            return _invalid(ev)
        try:
            done = await rt.record_consent([ev])
        except VeilError:
            return _problem(503, "consent_unavailable", "the consent store is unavailable")
        await admin_audit(request, f"consent.{ev.action.value}", "consent", subject,
                          {"consent_key": ev.consent_key, "propagation": "complete" if done.complete else "pending"})
        # 201: every worker and every live replica has dropped the subject; 202: recorded, and those
        # named in `pending` honour it by `effective_by` at the latest (docs/deploy.md, "Consistency")
        resp = _json({"recorded": True, "key": ev.consent_key, "action": ev.action.value,
                      "propagation": done.to_json()}, 201 if done.complete else 202)
        resp.headers["Veil-Consent-Effective-By"] = iso(done.effective_by)
        return resp

    async def consent(request: Request) -> Response:
        return await (consent_post(request) if request.method == "POST" else consent_get(request))

    async def audit_report(request: Request) -> Response:
        if (denied := authorize(request, "audit")) is not None:
            return denied
        subject = request.query_params.get("subject")
        if not subject:
            return _invalid([("subject", "query parameter is required")])
        from veil.audit.report import report

        audit_dir = Path(rt.config.audit_path).parent
        try:
            # reading and verifying the log is file work: off the event loop that serves the proxy
            rep = await asyncio.to_thread(report, [audit_dir], rt.audit_ring, pseudonyms(rt.pseudonym_ring, subject),
                                          require_head=False)
        except VeilError as exc:
            return _problem(500, exc.code, "the decision log cannot be read")
        await admin_audit(request, "audit.report", "audit", subject)
        return _json(rep.to_dict())

    async def reload(request: Request) -> Response:
        if (denied := authorize(request, "reload")) is not None:
            return denied
        done = await rt.reload()
        from veil.proxy.supervisor import reload_all_workers

        reload_all_workers()  # under `veil serve --workers N` this request reached one worker only
        await admin_audit(request, "policy.reload", "reload", None, {"ok": done.ok})
        # 200: everything the files say is in effect; 422: the policy or the config file is invalid (the
        # last good one stays); 409: valid, but some changed settings need a restart (named in the answer)
        status = 422 if (not done.policy_ok or done.config_error) else 409 if done.restart_required else 200
        return _json(done.to_json(rt.settings.mode), status)

    notice_cache: dict[tuple[str, str, str], str] = {}  # (policy version, format, language) → text

    async def notice(request: Request) -> Response:
        if (denied := authorize(request, "read")) is not None:
            return denied
        try:
            from veil.notice import render_notice
        except ImportError:
            return _problem(404, "not_available", "notices are not built into this version")
        from veil.notice import available, negotiate

        fmt = request.query_params.get("format", "html")
        policy = rt.policy.current
        if fmt not in ("html", "md", "json"):
            return _invalid([("format", "must be html, md or json")])
        if policy is None:
            return _problem(503, "policy_unavailable", "no valid policy is loaded")
        # the reader's language: ?lang= wins, else Accept-Language, else English
        lang = request.query_params.get("lang") or negotiate(request.headers.get("accept-language"))
        if lang not in available():
            return _invalid([("lang", "must be one of " + ", ".join(available()))])
        key = (policy.version, fmt, lang)
        text = notice_cache.get(key)
        if text is None:
            text = render_notice(policy, fmt, lang)
            if len(notice_cache) >= 16:
                notice_cache.clear()  # a reload changes the version: old pages are never asked again
            notice_cache[key] = text
        media = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8",
                 "json": "application/json"}[fmt]
        # the page has no scripts and loads nothing: say so to the browser
        headers = {"Content-Language": lang, "Vary": "Accept-Language", "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"}
        return Response(text, media_type=media, headers=headers)

    async def discovery_report(request: Request) -> Response:
        """What report-only discovery saw (this process, plus its sibling workers' saved counts)."""
        if (denied := authorize(request, "read")) is not None:
            return denied
        if rt.discovery is None:
            return _problem(404, "discovery_off", "discovery is not enabled (discovery: in veil.yaml)")
        policy = rt.policy.current
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "md"):
            return _invalid([("format", "must be json or md")])
        if policy is None:
            return _problem(503, "policy_unavailable", "no valid policy is loaded")
        try:
            min_rate = float(request.query_params.get("min_rate", "0.5"))
        except ValueError:
            min_rate = -1.0
        if not 0.0 < min_rate <= 1.0:
            return _invalid([("min_rate", "must be a number in (0, 1]")])
        from veil.discovery.report import build_report, markdown, to_json

        state = rt.discovery.snapshot()  # a copy, taken on the event loop
        reports = await asyncio.to_thread(build_report, policy, state, min_rate=min_rate)
        if fmt == "md":
            return Response(markdown(reports, state), media_type="text/markdown; charset=utf-8")
        return _json({**to_json(reports, state), "policy_version": policy.version, "errors": rt.discovery.errors})

    api = openapi_document()
    document = orjson.dumps(api)
    declared = _query_parameters(api)

    def checked(path: str, endpoint: Endpoint) -> Endpoint:
        """The endpoint, refusing query parameters the document does not declare for it (a misspelt
        `?fromat=md` is an error, not a silent default)."""

        async def guarded(request: Request) -> Response:
            allowed = declared.get((path, request.method.lower()), frozenset())
            unknown = sorted({name for name in request.query_params if name not in allowed})
            if unknown:
                return _invalid([(name[:40], "unknown query parameter") for name in unknown[:10]])
            return await endpoint(request)

        return guarded

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _problem(404, "not_found", "no such admin endpoint (GET /openapi.json lists them)")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        allow = getattr(exc, "headers", None) or {}
        response = _problem(405, "method_not_allowed", f"{request.method} is not allowed here")
        response.headers.update(allow)
        return response

    routes: list[tuple[str, Endpoint, list[str]]] = [
        ("/healthz", healthz, ["GET"]),
        ("/openapi.json", openapi, ["GET"]),
        ("/readyz", readyz, ["GET"]),
        ("/metrics", metrics_endpoint, ["GET"]),
        ("/consent/{subject}", consent, ["GET", "POST"]),  # one route: a 405 lists both in Allow
        ("/audit/report", audit_report, ["GET"]),
        ("/reload", reload, ["POST"]),
        ("/notice", notice, ["GET"]),
        ("/discovery/report", discovery_report, ["GET"]),
    ]
    return Starlette(exception_handlers={404: not_found, 405: not_allowed},
                     routes=[Route(path, checked(path, fn), methods=methods) for path, fn, methods in routes])
