"""Where the subject comes from, over real sockets: a subject read from the response body (consent is
judged after the upstream answers and before any byte leaves), from the JSON request body (judged
before the upstream is called; the body is forwarded as read), a purpose whose consent comes only from
the TCF string on a route that names no subject, and the guarantee that a consent-based rule never goes
without a subject (the checker refuses it; the proxy answers `subject_missing` should one be compiled).
Upstream: tests/e2e/orders_upstream.py, a service whose resources are keyed by order, not by customer."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conformance import asgi_call, config_for
from tests.e2e.conftest import POLICIES, Upstream, Veil, start_upstream, start_veil, stop
from tests.e2e.test_reasons import assert_problem
from tests.e2e.test_signals import TC_GRANTS, TC_NO_PURPOSE_3
from veil.policy.testing import caller_view
from veil.proxy.app import ProxyApp
from veil.proxy.runtime import Runtime
from veil.proxy.upstream import MemoryTransport, UpstreamResponse

REC = "personalize.recommendations"
SUBJECT_POLICY = Path(__file__).parent / "subject_policy"
CONTEXTUAL_KEY = "subjects-contextual-key"


@pytest.fixture(scope="module")
def orders() -> Iterator[Upstream]:
    up = start_upstream("tests.e2e.orders_upstream")
    yield up
    stop(up.proc)


@pytest.fixture(scope="module")
def ov(tmp_path_factory: pytest.TempPathFactory, orders: Upstream) -> Iterator[Veil]:
    directory = tmp_path_factory.mktemp("subjects") / "veil"
    policy_dir = directory / "policies"
    policy_dir.mkdir(parents=True)
    for name in ("callers.veil", "categories.veil", "purposes.veil"):
        shutil.copy(POLICIES / name, policy_dir / name)
    shutil.copy(SUBJECT_POLICY / "routes.veil", policy_dir / "routes.veil")
    v = start_veil(directory, orders.url, overrides={"limits": {"auth_failures_per_minute": 1000}})
    yield v
    v.stop()


def calls(orders: Upstream, path: str) -> int:
    got: dict[str, int] = httpx.get(orders.url + "/calls").json()
    return got.get(path, 0)


def test_subject_from_the_response_body(ov: Veil, orders: Upstream) -> None:
    ov.consent("c-000001", "personalization", notice_version=3)
    r = ov.get("/orders/o-1", purpose=REC)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer"]["id"] == "c-000001" and body["customer"]["email"].startswith("ps_")
    assert "Ada" not in r.text and "phone" not in r.text
    # no consent for the order's customer: the upstream was asked (it alone knows whose order it is),
    # nothing of its answer leaves
    before = calls(orders, "/orders/o-3")
    r = ov.get("/orders/o-3", purpose=REC)
    assert_problem(r, 403, "consent_missing", "Grace", "grace@example.com", "o-3", "42.5")
    assert calls(orders, "/orders/o-3") == before + 1
    ov.consent("c-000003", "personalization", action="withdrawn")
    assert_problem(ov.get("/orders/o-3", purpose=REC), 403, "consent_withdrawn", "Grace")
    # an answer that names no customer: veil cannot tell whose data it is
    assert_problem(ov.get("/orders/o-anon", purpose=REC), 502, "subject_unidentified", "guest")
    # the decision record names the subject found in the body (as a pseudonym)
    log = (ov.dir / "audit" / "decisions.log").read_text()
    assert "c-000001" not in log and "c-000003" not in log
    ov.consent("c-000001", "personalization", action="withdrawn")
    assert_problem(ov.get("/orders/o-1", purpose=REC), 403, "consent_withdrawn", "Ada")


def test_subject_from_the_request_body(ov: Veil, orders: Upstream) -> None:
    key = {"Veil-Key": "demo-storefront-key", "Veil-Purpose": REC}
    ov.consent("c-000001", "personalization", notice_version=3)
    r = ov.client.post(ov.url + "/recommendations", json={"customer_id": "c-000001", "page": "home"}, headers=key)
    assert r.status_code == 200, r.text
    assert r.json() == {"recommendations": ["sku-7", "sku-9"], "customer": {"id": "c-000001"}}
    # no consent: refused before the upstream is called
    before = calls(orders, "/recommendations")
    r = ov.client.post(ov.url + "/recommendations", json={"customer_id": "c-000003"}, headers=key)
    assert_problem(r, 403, "consent_withdrawn" if _withdrawn(ov, "c-000003") else "consent_missing", "Grace")
    r = ov.client.post(ov.url + "/recommendations", json={"page": "home"}, headers=key)
    assert_problem(r, 400, "subject_missing")
    r = ov.client.post(ov.url + "/recommendations", content=b"customer_id=c-000001", headers=key)
    assert_problem(r, 400, "request_body_invalid")
    r = ov.client.post(ov.url + "/recommendations", json={"customer_id": "c-000001", "pad": "x" * 1_100_000},
                       headers=key)
    assert_problem(r, 413, "request_body_too_large")
    assert calls(orders, "/recommendations") == before


def _withdrawn(v: Veil, subject: str) -> bool:
    r = v.client.get(f"{v.admin}/consent/{subject}", headers={"Authorization": f"Bearer {v.tokens['consent']}"})
    return any(s["status"] == "withdrawn" for s in r.json()["current"])


def test_consent_from_the_tcf_string_only_needs_no_subject_and_is_checked(ov: Veil, orders: Upstream) -> None:
    """A route without a subject for a TCF-only purpose: the string on the request decides (before, a
    route without a subject skipped consent altogether)."""
    h = {"Veil-Key": CONTEXTUAL_KEY, "Veil-Purpose": "advertising.contextual"}
    before = calls(orders, "/slots")
    assert_problem(ov.client.get(ov.url + "/slots", headers=h), 403, "consent_missing")
    r = ov.client.get(ov.url + "/slots", headers={**h, "Cookie": f"euconsent-v2={TC_NO_PURPOSE_3}"})
    assert_problem(r, 403, "consent_missing")
    assert_problem(ov.client.get(ov.url + "/slots", headers={**h, "Cookie": "euconsent-v2=CQa7"}), 403, "tcf_invalid")
    assert calls(orders, "/slots") == before  # judged on the request: the upstream never asked
    r = ov.client.get(ov.url + "/slots", headers={**h, "Cookie": f"euconsent-v2={TC_GRANTS}"})
    assert r.status_code == 200 and r.json() == {"slots": ["top-banner", "sidebar"]}


@pytest.mark.parametrize(("routes", "found"), [
    # forgetting `subject` cannot switch consent off
    ("route GET /customers/{id} {\n  for personalize.recommendations {\n    keep id\n  }\n}\n",
     "routes.veil:2:7: error[consent_without_subject]"),
    # a path inside a sensitive category is the category: never kept in clear without consent
    ("route GET /customers/{id} {\n  subject path.id\n  for orders.fulfillment {\n    keep id, payment.iban\n"
     "  }\n}\n", "routes.veil:4:5: error[sensitive_without_consent]"),
])
def test_a_policy_that_would_skip_consent_does_not_start(tmp_path: Path, orders: Upstream, routes: str,
                                                          found: str) -> None:
    """`veil serve` refuses the policy with the location (and `veil check` fails on it)."""
    policy_dir = tmp_path / "veil" / "policies"
    policy_dir.mkdir(parents=True)
    for name in ("callers.veil", "categories.veil", "purposes.veil"):
        shutil.copy(POLICIES / name, policy_dir / name)
    (policy_dir / "routes.veil").write_text(routes)
    with pytest.raises(RuntimeError) as err:
        start_veil(tmp_path / "veil", orders.url)
    assert found in str(err.value)
    check = subprocess.run([sys.executable, "-m", "veil", "check", "--strict", str(policy_dir)],
                           capture_output=True, text=True)
    assert check.returncode == 1 and found.split("error")[1] in check.stdout


def test_a_keep_a_drop_overrides_warns_and_the_field_stays_out(tmp_path: Path, orders: Upstream) -> None:
    """`keep x` + `drop x`: veil starts (a warning, logged at start) and x never leaves."""
    policy_dir = tmp_path / "veil" / "policies"
    policy_dir.mkdir(parents=True)
    for name in ("callers.veil", "categories.veil", "purposes.veil"):
        shutil.copy(POLICIES / name, policy_dir / name)
    (policy_dir / "routes.veil").write_text(
        "route GET /orders/{id} {\n  subject body.customer.id\n  for personalize.recommendations {\n"
        "    keep order_id, customer.id, customer.email\n    drop customer.email\n  }\n}\n")
    v = start_veil(tmp_path / "veil", orders.url)
    try:
        v.consent("c-000001", "personalization", notice_version=3)
        r = v.get("/orders/o-1", purpose=REC)
        assert r.status_code == 200 and r.json() == {"order_id": "o-1", "customer": {"id": "c-000001"}}
    finally:
        log = v.stop()
    assert "keep_overridden" in log and "keep customer.email has no effect" in log


def test_the_proxy_refuses_a_consent_rule_without_a_subject(tmp_path: Path) -> None:
    """Belt and braces: a policy compiled past the checker (never by veil's loader) still gets no data
    out — the flow answers subject_missing and the upstream is not called."""
    from veil.policy import ast
    from veil.policy.compile import compile_policy
    from veil.policy.load import load_sources

    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name in ("callers.veil", "categories.veil", "purposes.veil"):
        shutil.copy(POLICIES / name, policy_dir / name)
    (policy_dir / "routes.veil").write_text("route GET /customers/{id} { subject path.id\n"
                                            "  for personalize.recommendations { keep id } }\n")
    cfg = config_for(tmp_path / "rt", [policy_dir])
    transport = MemoryTransport(lambda req: UpstreamResponse(200, [("content-type", "application/json")],
                                                             b'{"id":"c-1","email":"a@example.com"}'))

    async def go() -> tuple[int, bytes]:
        rt = Runtime(cfg, transports={"case": transport}, clock=lambda: datetime.now(UTC))
        await rt.start()
        try:
            modules, _, _ = load_sources([policy_dir])
            stripped = [ast.Module(**{**m.__dict__, "routes": tuple(
                ast.Route(**{**r.__dict__, "subject": None}) for r in m.routes)}) for m in modules]
            unchecked = compile_policy(stripped, version="unchecked")
            view, token = caller_view(unchecked, "storefront")
            rt.policy.current = view
            assert token is not None
            status, _, body = await asgi_call(ProxyApp(rt), "GET", "/customers/c-1",
                                              [(b"veil-key", token.encode()), (b"veil-purpose", REC.encode())], b"")
            return status, body
        finally:
            await rt.close()

    status, body = asyncio.run(go())
    assert status == 400 and b'"reason":"subject_missing"' in body and b"a@example.com" not in body
    assert transport.requests == []
