"""The running admin app against its OpenAPI document (src/veil/proxy/admin_openapi.yaml).

Everything is derived from the document: schemathesis generates requests for every operation in it
(no 5xx, status codes, content types and bodies as documented, schema-invalid input rejected), and
the scope test reads each operation's `x-veil-scope` and example values, so an endpoint added to the
admin app needs only its entry in the document to be tested here. A route missing from the document
(or documented but absent) fails `test_document_and_app_have_the_same_operations`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.e2e.conftest import Upstream, Veil, start_veil
from veil.config import TOKEN_SCOPES, load_config
from veil.proxy.admin import build_admin_app, openapi_document
from veil.proxy.runtime import Runtime

DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
METHODS = ("get", "put", "post", "delete", "patch")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in DOCUMENT["paths"].items()
            for method, op in item.items() if method in METHODS]


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    """A veil with a token for every scope (read included, so that every scoped endpoint is closed
    without one) and some consent recorded."""
    d = tmp_path_factory.mktemp("admin-api") / "veil"
    d.mkdir(parents=True)
    read = d / "read.token"
    read.write_text("read-" + "ab" * 16)
    read.chmod(0o600)
    v = start_veil(d, demo_upstream.url, overrides={"admin": {"tokens": {
        **{s: f"file:{d / f'{s}.token'}" for s in ("consent", "audit", "reload")}, "read": f"file:{read}"}},
        "discovery": {"state": str(d / "discovery.json")}})
    v.tokens["read"] = read.read_text()
    v.consent("c-000001", "personalization", notice_version=3)
    yield v
    v.stop()


def auth(v: Veil, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {v.tokens[scope]}"} if scope in v.tokens else {}


# Every default check but positive_data_acceptance: text fields must be printable (the consent
# importer's rule, which JSON Schema cannot state), so a schema-valid but unprintable subject or key
# gets the documented 400 with its field named (test_invalid_consent_bodies_get_precise_messages).
# Schema-invalid input must still be rejected (negative_data_rejection).
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_app_conforms_to_its_document(case: schemathesis.Case, admin: Veil) -> None:
    """A well-formed bearer token in a generated case becomes the operation's real token (so valid
    requests get past authorization); a missing or malformed one stays, and must be refused."""
    scope = case.operation.definition.raw["x-veil-scope"]
    headers = dict(case.headers or {})
    if str(headers.get("Authorization", "")).startswith("Bearer ") and scope in admin.tokens:
        headers.update(auth(admin, scope))
    case.headers = headers
    case.call_and_validate(base_url=admin.admin, excluded_checks=EXCLUDED)


def example_request(path: str, op: dict[str, Any], item: dict[str, Any]) -> tuple[str, dict[str, str], Any]:
    """The URL path, query and JSON body an operation's examples in the document make."""
    params = [*item.get("parameters", []), *op.get("parameters", [])]
    url = path
    query: dict[str, str] = {}
    for p in params:
        assert "example" in p, f"{path}: parameter {p['name']} needs an example"
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", str(p["example"]))
        elif p["in"] == "query" and p.get("required"):
            query[p["name"]] = str(p["example"])
    body = None
    if "requestBody" in op:
        body = op["requestBody"]["content"]["application/json"]["example"]
    return url, query, body


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, m, _ in operations()])
def test_scopes_are_enforced_on_every_operation(admin: Veil, path: str, method: str) -> None:
    item = DOCUMENT["paths"][path]
    op = item[method]
    scope = op["x-veil-scope"]
    assert scope == "open" or scope in TOKEN_SCOPES, f"{method.upper()} {path}: x-veil-scope {scope!r}"
    url, query, body = example_request(path, op, item)

    def call(headers: dict[str, str]) -> httpx.Response:
        return admin.client.request(method.upper(), admin.admin + url, params=query, json=body, headers=headers)

    if scope == "open":
        assert op["security"] == []
        assert call({}).status_code < 400 or path == "/readyz"
        return
    assert op["security"] == [{"bearer": []}]
    none = call({})
    assert none.status_code == 401 and none.json()["reason"] == "admin_unauthorized"
    for other in TOKEN_SCOPES:
        if other != scope:
            wrong = call(auth(admin, other))
            assert wrong.status_code == 403 and wrong.json()["reason"] == "admin_unauthorized", other
    forged = call({"Authorization": "Bearer " + "x" * 40})
    assert forged.status_code == 403
    ok = call(auth(admin, scope))
    assert ok.status_code < 400, ok.text


def test_document_and_app_have_the_same_operations(admin: Veil) -> None:
    app = build_admin_app(Runtime(load_config(admin.config_path)))
    routes = {(r.path, m.lower()) for r in app.routes for m in (getattr(r, "methods", None) or ()) if m != "HEAD"}
    assert routes == {(p, m) for p, m, _ in operations()}


def test_the_document_is_served(admin: Veil) -> None:
    r = admin.client.get(f"{admin.admin}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == DOCUMENT


def post(admin: Veil, body: Any, *, raw: bytes | None = None) -> httpx.Response:
    kw: dict[str, Any] = {"content": raw} if raw is not None else {"json": body}
    return admin.client.post(f"{admin.admin}/consent/c-000002", headers=auth(admin, "consent"), **kw)


@pytest.mark.parametrize(("body", "errors"), [
    ({"key": "personalization", "action": "granted"}, [("action", 'must be "given" or "withdrawn"')]),
    ({"action": "given"}, [("key", "is required")]),
    ({"key": 7}, [("key", "must be a string")]),
    ({"key": ""}, [("key", "is required")]),
    ({"key": "personalization", "notice_version": "3"}, [("notice_version", "must be a whole number or null")]),
    ({"key": "personalization", "notice_version": -1}, [("notice_version", "is out of range")]),
    ({"key": "personalization", "expires_at": "tomorrow"},
     [("expires_at", "is not an ISO 8601 date or date-time")]),
    ({"key": "personalization", "expires_at": "2001-01-01T00:00:00Z"},
     [("expires_at", "is not after now (the time of recording)")]),
    ({"key": "personalization", "purposes": "a;b"}, [("purposes", "must be a list of strings")]),
    ({"key": "personalization", "expire_at": "2030-01-01"}, [("expire_at", "unknown field (expected: key, action, "
                                                           "source, method, notice_version, expires_at, "
                                                           "jurisdiction, purposes)")]),
    ({"key": "k", "action": "nope", "jurisdiction": 3}, [("jurisdiction", "must be a string or null"),
                                                          ("action", 'must be "given" or "withdrawn"')]),
    ([1, 2], [("body", "must be a JSON object")]),
])
def test_invalid_consent_bodies_get_precise_messages(admin: Veil, body: Any, errors: list[tuple[str, str]]) -> None:
    r = post(admin, body)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["reason"] == "request_invalid"
    assert [(e["field"], e["message"]) for e in problem["errors"]] == errors
    assert problem["detail"] == "; ".join(f"{f}: {m}" for f, m in errors)
    for value in ("granted", "tomorrow", "a;b"):
        assert value not in r.text  # the problem names fields, never values


def test_not_json_and_a_valid_record(admin: Veil) -> None:
    r = post(admin, None, raw=b"{not json")
    assert r.status_code == 400 and r.json()["detail"] == "body: is not valid JSON"
    ok = post(admin, {"key": "personalization", "action": "withdrawn", "source": "preference-center",
                      "notice_version": 3, "expires_at": "2099-01-01", "purposes": ["personalize.recommendations"]})
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert {k: body[k] for k in ("recorded", "key", "action")} == {
        "recorded": True, "key": "personalization", "action": "withdrawn"}
    assert body["propagation"]["complete"] is True and body["propagation"]["pending"] == []
    assert ok.headers["veil-consent-effective-by"] == body["propagation"]["effective_by"]
    got = admin.client.get(f"{admin.admin}/consent/c-000002", headers=auth(admin, "consent")).json()
    [event] = got["history"]
    assert event["source"] == "preference-center" and event["method"] == "api" and event["notice_version"] == 3
    assert re.match(r"2099-01-01T00:00:00(\+00:00|Z)", event["expires_at"])


def test_undeclared_query_parameters_are_refused(admin: Veil) -> None:
    r = admin.client.get(f"{admin.admin}/notice", params={"fromat": "md"}, headers=auth(admin, "read"))
    assert r.status_code == 400 and r.json()["errors"] == [{"field": "fromat", "message": "unknown query parameter"}]
    r = admin.client.get(f"{admin.admin}/notice", params={"format": "md"}, headers=auth(admin, "read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")


def test_unknown_paths_and_methods_are_problems(admin: Veil) -> None:
    r = admin.client.get(f"{admin.admin}/nope")
    assert r.status_code == 404 and r.json()["reason"] == "not_found"
    r = admin.client.delete(f"{admin.admin}/reload")
    assert r.status_code == 405 and r.json()["reason"] == "method_not_allowed" and "POST" in r.headers["allow"]


def test_admin_api_doc_lists_every_operation() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "admin-api.md").read_text()
    for path, method, _ in operations():
        assert f"`{method.upper()} {path}`" in doc, f"docs/admin-api.md does not describe {method.upper()} {path}"
