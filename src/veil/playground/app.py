"""The playground's web app: one page and a small JSON API, for one user on this machine.

    GET  /                 the page (the policy files, the first example, a per-run token)
    GET  /static/{file}    its script and style sheet (from the package: works offline)
    POST /api/evaluate     {files, example} → diagnostics, or the decision and every field's fate
    POST /api/save-case    {files, example} → the example appended to the case file as a `veil test` case
    POST /api/save-files   {files} → the edited policy files written back

Guards: the Host header must name the address the server listens on (a DNS-rebinding page cannot talk
to it), and every API call carries the page's per-run token in `X-Veil-Playground` (a cross-site page
cannot read it, nor send the header without a CORS preflight, which is refused).
"""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from veil.errors import VeilError
from veil.location import Location
from veil.playground.example import STATES, ExampleError, consent_keys, defaults, evaluate, save_case
from veil.playground.workspace import Workspace

MAX_REQUEST = 4 * 1024 * 1024
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_STATIC = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _problem(status: int, reason: str, detail: str) -> Response:
    return Response(orjson.dumps({"status": status, "reason": reason, "detail": detail}), status,
                    media_type="application/problem+json")


def _static(name: str) -> str:
    return resources.files("veil.playground").joinpath("static", name).read_text(encoding="utf-8")


def build_app(workspace: Workspace, *, case_file: Path, hosts: set[str], token: str | None = None) -> Starlette:
    """The playground for `workspace`; `hosts` are the Host header values accepted (host:port)."""
    token = token or secrets.token_urlsafe(24)

    def guard(handler: Callable[[Request], Awaitable[Response]], api: bool
              ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            if request.headers.get("host", "") not in hosts:
                return _problem(421, "host_not_allowed", "this playground answers only on its own address")
            if api:
                presented = request.headers.get("x-veil-playground", "")
                if not secrets.compare_digest(presented.encode(), token.encode()):
                    return _problem(403, "token_invalid", "reload the playground page")
                if int(request.headers.get("content-length") or 0) > MAX_REQUEST:
                    return _problem(413, "request_too_large", "the request is too large")
            response = await handler(request)
            response.headers["Content-Security-Policy"] = _CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            return response
        return wrapped

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_REQUEST:
            raise ExampleError("the request is too large")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ExampleError("the request body is not JSON") from exc
        if not isinstance(data, dict):
            raise ExampleError("the request body is a JSON object")
        files = data.get("files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ExampleError("files maps a file name to its text")
        return data

    async def page(request: Request) -> Response:
        compiled = workspace.compile({})
        policy = compiled.policy
        example = defaults(policy, datetime.now(UTC))
        route_file = compiled.where(Location(example.pop("file", ""), 0, 0))
        state = {
            "token": token,
            "open": route_file.file if route_file else "",
            "files": workspace.files(),
            "example": example,
            "callers": sorted(policy.callers) if policy else [],
            "purposes": sorted(policy.purposes) if policy else [],
            "consent_keys": consent_keys(policy) if policy else [],
            "states": list(STATES),
            "case_file": str(case_file),
        }
        text = _static("index.html").replace(
            "{{STATE}}", html.escape(json.dumps(state, ensure_ascii=False), quote=True))
        return Response(text, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _problem(404, "not_found", "no such file")
        return Response(_static(name), media_type=_STATIC[name])

    async def api_evaluate(request: Request) -> Response:
        try:
            data = await body_of(request)
            compiled = workspace.compile(data.get("files") or {})
            return _json(evaluate(compiled, data.get("example") or {}))
        except VeilError as exc:
            return _json({"ok": True, "example_error": exc.message, "diagnostics": []})

    async def api_save_case(request: Request) -> Response:
        try:
            data = await body_of(request)
            compiled = workspace.compile(data.get("files") or {})
            result = evaluate(compiled, data.get("example") or {})
            if not result["ok"]:
                return _problem(422, "policy_invalid", "fix the policy errors before saving a case")
            saved = save_case(case_file, result["case"])
        except VeilError as exc:
            return _problem(422, exc.code, exc.message)
        except OSError as exc:
            return _problem(500, "case_unwritable", f"cannot write {case_file}: {exc.strerror}")
        edited = {n: t for n, t in (data.get("files") or {}).items() if workspace.disk.get(n) != t}
        return _json({**saved, "unsaved_policy_edits": sorted(edited)})

    async def api_save_files(request: Request) -> Response:
        try:
            data = await body_of(request)
            written = workspace.save(data.get("files") or {})
        except VeilError as exc:
            return _problem(422, exc.code, exc.message)
        except OSError as exc:
            return _problem(500, "file_unwritable", f"cannot write: {exc.strerror}")
        return _json({"written": written})

    return Starlette(routes=[
        Route("/", guard(page, api=False)),
        Route("/static/{name}", guard(static, api=False)),
        Route("/api/evaluate", guard(api_evaluate, api=True), methods=["POST"]),
        Route("/api/save-case", guard(api_save_case, api=True), methods=["POST"]),
        Route("/api/save-files", guard(api_save_files, api=True), methods=["POST"]),
    ])


__all__ = ["build_app"]
