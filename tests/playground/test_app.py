"""The playground's app over HTTP (starlette's test client): its guards, that it decides with the
engine of `veil explain` on the edited text, reports check errors at file:line:col like `veil check`,
and saves cases that `veil test` passes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from veil.cli import main
from veil.errors import Diagnostics
from veil.location import Location
from veil.playground.app import build_app
from veil.playground.workspace import Workspace, WorkspaceError
from veil.policy import load_policy
from veil.policy.explain import explain_request
from veil.policy.testing import case_from_dict, load_cases

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target, ignore=shutil.ignore_patterns("packs", "*.md"))
    return target


class Client:
    """The app over httpx's ASGI transport, called synchronously (one event loop per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, path, **kw)
        return asyncio.run(go())

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)


@pytest.fixture
def client(policies: Path) -> Client:
    app = build_app(Workspace([policies]), case_file=policies / "tests" / "playground.yaml",
                    hosts={"testserver"}, token=TOKEN)
    return Client(app)


@pytest.fixture
def post(client: Client) -> Callable[..., Any]:
    def send(endpoint: str, files: dict[str, str] | None = None, /, **example: Any) -> Any:
        return client.post(endpoint, json={"files": files or {}, "example": example},
                           headers={"X-Veil-Playground": TOKEN})
    return send


def _example(**kw: Any) -> dict[str, Any]:
    base = {"method": "GET", "path": "/customers/c-1", "caller": "storefront",
            "purpose": "personalize.recommendations", "consent": {"personalization": "given"},
            "body": '{"id": "c-1", "email": "a@example.com", "health": {"x": 1}, "segment": "s"}',
            "now": "2026-06-01T12:00:00+00:00", "name": "recommendations see a hashed email"}
    return {**base, **kw}


def test_page_and_guards(client: Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and 'data-state="' in r.text and TOKEN in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/playground.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/", headers={"Host": "evil.example:8790"}).status_code == 421  # DNS rebinding
    assert client.post("/api/evaluate", json={}).status_code == 403  # no token: a cross-site form
    assert client.post("/api/evaluate", json={}, headers={"X-Veil-Playground": "wrong"}).status_code == 403


def test_decides_like_veil_explain(post: Callable[..., Any], policies: Path) -> None:
    data = post("/api/evaluate", **_example()).json()
    assert data["ok"] and data["decision"] == "redact" and data["reason"] == "ok"
    # the same case through explain_request, with the policy loaded as `veil explain` loads it
    case = case_from_dict(data["case"], Location("x", 0, 0))
    exp = explain_request(load_policy([policies]), case.request, case.consent, case.response, case.now)
    assert (exp.outcome.decision, exp.outcome.reason, exp.outcome.body) == ("redact", "ok", data["response"]["body"])
    assert [(f.path, f.fate) for f in exp.fields] == [(f["path"], f["fate"]) for f in data["fields"]]
    fates = {f["path"]: f for f in data["fields"]}
    assert fates["email"]["fate"] == "transformed" and fates["email"]["statement"] == "hash email"
    assert fates["email"]["location"]["file"] == str(policies / "routes.veil")
    assert fates["health"]["fate"] == "dropped"
    assert any(line.startswith('-  "email": "a@example.com"') for line in data["diff"])
    assert data["response"]["headers"]["Veil-Decision"] == "redact"


def test_edited_text_is_what_is_decided(post: Callable[..., Any], policies: Path) -> None:
    routes = str(policies / "routes.veil")
    text = (policies / "routes.veil").read_text(encoding="utf-8").replace("    hash email\n", "    keep email\n")
    data = post("/api/evaluate", {routes: text}, **_example()).json()
    assert data["response"]["body"]["email"] == "a@example.com"
    assert (policies / "routes.veil").read_text(encoding="utf-8").count("hash email") == 1  # disk untouched


def test_check_errors_at_line_and_column_like_veil_check(post: Callable[..., Any], policies: Path,
                                                         tmp_path: Path) -> None:
    routes = str(policies / "routes.veil")
    lines = (policies / "routes.veil").read_text(encoding="utf-8").splitlines()
    lines[7] = "    keep id, @nosuchcategory"
    broken = "\n".join(lines) + "\n"
    data = post("/api/evaluate", {routes: broken}, **_example()).json()
    assert data["ok"] is False
    (err,) = [d for d in data["diagnostics"] if d["severity"] == "error"]
    assert (err["file"], err["line"], err["code"]) == (routes, 8, "unknown_category")
    # `veil check` on the same text finds the same error at the same place
    copy = tmp_path / "copy"
    shutil.copytree(policies, copy)
    (copy / "routes.veil").write_text(broken, encoding="utf-8")
    with pytest.raises(Diagnostics) as info:
        load_policy([copy])
    (want,) = info.value.errors
    assert want.location is not None and (want.location.line, want.location.col) == (err["line"], err["col"])
    assert want.code == err["code"]


def test_signals_and_consent_states(post: Callable[..., Any]) -> None:
    ads = _example(caller="ad_partner", purpose="advertising.targeted", consent={"advertising": "given"})
    assert post("/api/evaluate", **ads).json()["decision"] == "redact"
    gpc = post("/api/evaluate", **{**ads, "headers": [["Sec-GPC", "1"]]}).json()
    assert (gpc["decision"], gpc["reason"], gpc["status"]) == ("block", "gpc_opt_out", 403)
    assert gpc["response"]["body"]["reason"] == "gpc_opt_out"
    withdrawn = post("/api/evaluate", **{**ads, "consent": {"advertising": "withdrawn"}}).json()
    assert withdrawn["reason"] == "consent_withdrawn"
    down = post("/api/evaluate", **{**ads, "consent_unavailable": True}).json()
    assert down["reason"] == "consent_unavailable"
    raw = post("/api/evaluate", **_example(body="{not json")).json()
    assert (raw["decision"], raw["reason"]) == ("block", "body_invalid")  # fails closed, like the proxy
    per = post("/api/evaluate", **_example(consent_subjects="c-1: {personalization: withdrawn}")).json()
    assert per["reason"] == "consent_withdrawn"
    bad = post("/api/evaluate", **_example(consent_subjects="c-1: [")).json()
    assert "YAML" in bad["example_error"]


def test_saved_case_passes_veil_test(post: Callable[..., Any], policies: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    r = post("/api/save-case", **_example())
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["file"] == str(policies / "tests" / "playground.yaml") and saved["unsaved_policy_edits"] == []
    (case,) = load_cases(saved["file"])
    assert case.name == "recommendations see a hashed email" and case.expect["decision"] == "redact"
    assert post("/api/save-case", **_example(path="/customers/c-2")).json()["cases"] == 1  # same name: replaced
    assert post("/api/save-case", **_example(name="second")).json()["cases"] == 2
    assert main(["test", str(policies)]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_saving_a_case_with_unsaved_policy_edits_says_so(post: Callable[..., Any], policies: Path) -> None:
    routes = str(policies / "routes.veil")
    text = (policies / "routes.veil").read_text(encoding="utf-8").replace("    hash email\n", "    keep email\n")
    saved = post("/api/save-case", {routes: text}, **_example()).json()
    assert saved["unsaved_policy_edits"] == [routes]
    assert post("/api/save-files", {routes: text}).json() == {"written": [routes]}
    assert (policies / "routes.veil").read_text(encoding="utf-8") == text
    assert main(["test", str(policies), "-k", "recommendations see a hashed email"]) == 0


def test_only_files_of_the_set_are_written(post: Callable[..., Any], tmp_path: Path) -> None:
    r = post("/api/save-files", {str(tmp_path / "elsewhere.veil"): "x"})
    assert r.status_code == 422 and not (tmp_path / "elsewhere.veil").exists()
    broken = post("/api/save-case", {}, **_example(method="GET"))
    assert broken.status_code == 200


def test_a_policy_with_errors_cannot_be_saved_as_a_case(post: Callable[..., Any], policies: Path) -> None:
    routes = str(policies / "routes.veil")
    r = post("/api/save-case", {routes: "route GET /a {"}, **_example())
    assert r.status_code == 422 and r.json()["reason"] == "policy_invalid"


def test_workspace_needs_policy_files(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError):
        Workspace([tmp_path])


def test_first_example_comes_from_the_policy(client: Client, policies: Path) -> None:
    import html
    import json
    import re

    state = json.loads(html.unescape(re.search(r'data-state="([^"]*)"', client.get("/").text).group(1)))  # type: ignore[union-attr]
    ex = state["example"]
    assert (ex["method"], ex["path"], ex["caller"], ex["purpose"]) == (
        "GET", "/customers/example-id", "storefront", "personalize.recommendations")
    assert state["open"] == str(policies / "routes.veil")
    assert set(state["consent_keys"]) == {"advertising", "personalization"}
    assert datetime.fromisoformat(ex["now"]).tzinfo == UTC or datetime.fromisoformat(ex["now"]).utcoffset() is not None
