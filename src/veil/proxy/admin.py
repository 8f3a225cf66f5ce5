"""The admin listener (its own port): health, readiness, metrics, consent API, notice, audit report,
reload. Scoped bearer tokens: `read` (metrics, notice), `consent`, `audit`, `reload`. Health and
readiness are open (probes). A scope with no configured token is closed, except `read`, which is
open when no read token is configured. Every admin action that reads or changes personal data is
written to the decision log (who, what, when; the subject as a pseudonym only).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from veil import metrics
from veil.audit.report import pseudonym, pseudonyms
from veil.consent.store import Action, ConsentEvent, ConsentState
from veil.errors import VeilError
from veil.keys import constant_time_equal
from veil.proxy.runtime import Runtime

log = logging.getLogger("veil.admin")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status, media_type="application/json")


def _problem(status: int, reason: str, detail: str) -> Response:
    body = {"type": f"https://veil.dev/problems/{reason.replace('_', '-')}", "title": detail,
            "status": status, "detail": detail, "reason": reason}
    return Response(orjson.dumps(body), status, media_type="application/problem+json")


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
        r = rt.readiness()
        return _json(r, 200 if r["ready"] else 503)

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
        try:
            data = orjson.loads(await request.body())
            key = data["key"]
            action = Action(data.get("action", "given"))
            if not isinstance(key, str) or not key:
                raise ValueError("key")
            ev = ConsentEvent(
                subject=subject, consent_key=key, action=action, at=datetime.now(UTC),
                source=str(data.get("source", "admin-api")), method=str(data.get("method", "api")),
                notice_version=data.get("notice_version"),
                expires_at=datetime.fromisoformat(data["expires_at"]) if data.get("expires_at") else None,
                jurisdiction=data.get("jurisdiction"), purposes=tuple(data.get("purposes", ())),
            )
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return _problem(400, "request_invalid",
                            'body must be JSON: {"key": "...", "action": "given"|"withdrawn", ...}')
        try:
            await rt.store.record([ev])
        except VeilError:
            return _problem(503, "consent_unavailable", "the consent store is unavailable")
        await admin_audit(request, f"consent.{action.value}", "consent", subject, {"consent_key": key})
        return _json({"recorded": True, "key": key, "action": action.value}, 201)

    async def audit_report(request: Request) -> Response:
        if (denied := authorize(request, "audit")) is not None:
            return denied
        subject = request.query_params.get("subject")
        if not subject:
            return _problem(400, "request_invalid", "query parameter subject is required")
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

    async def notice(request: Request) -> Response:
        if (denied := authorize(request, "read")) is not None:
            return denied
        try:
            from veil.notice import render_notice
        except ImportError:
            return _problem(404, "not_available", "notices are not built into this version")
        fmt = request.query_params.get("format", "html")
        policy = rt.policy.current
        if policy is None or fmt not in ("html", "md", "json"):
            return _problem(400, "request_invalid", "format must be html, md or json")
        text = render_notice(policy, fmt)
        media = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8",
                 "json": "application/json"}[fmt]
        return Response(text, media_type=media)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/consent/{subject}", consent_get, methods=["GET"]),
        Route("/consent/{subject}", consent_post, methods=["POST"]),
        Route("/audit/report", audit_report),
        Route("/reload", reload, methods=["POST"]),
        Route("/notice", notice),
    ])
