"""Report-only mode, global (config) and per route (policy): the upstream response passes unchanged,
`Veil-Report-Only` says what enforce mode would have done, and the decision is logged and counted
exactly as in enforce mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import POLICIES, Upstream, Veil, start_veil
from veil.audit import verify
from veil.keys import KeyRing, load_secret

REC = "personalize.recommendations"
# (path, caller, purpose): a consent block, a redaction, a filtered list, an upstream 404, gzip, no route
TRAFFIC = [
    ("/customers/c-000010", "storefront", REC),
    ("/customers/c-000011", "storefront", REC),
    ("/customers?limit=5", "storefront", REC),
    ("/customers/c-999999", "warehouse", "orders.fulfillment"),
    ("/customers/c-000011?gzip=1", "storefront", REC),
    ("/customers/c-000010", "warehouse", "orders.fulfillment"),
    ("/nope", "storefront", REC),
]
COUNTED = ("veil_requests_total", "veil_fields_total")


def counters(v: Veil) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(v.metrics()):
        for s in family.samples:
            if s.name in COUNTED:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: n - before.get(k, 0.0) for k, n in after.items() if n != before.get(k, 0.0)}


def decisions(v: Veil) -> list[dict[str, Any]]:
    """The request decisions in the veil's decision log (after checking the chain)."""
    ring = KeyRing.single(load_secret(f"file:{v.dir / 'audit.key'}"), "k1")
    assert verify([v.dir / "audit"], ring, require_head=False).ok
    out = []
    for line in (v.dir / "audit" / "decisions.log").read_bytes().splitlines():
        rec = orjson.loads(line)
        if "decision" in rec:
            out.append(rec)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[tuple[Veil, Veil]]:
    base = tmp_path_factory.mktemp("report-only")
    enforce = start_veil(base / "enforce", demo_upstream.url)
    report = start_veil(base / "report", demo_upstream.url, overrides={"mode": "report-only"})
    yield enforce, report
    enforce.stop()
    report.stop()


def test_global_report_only_passes_data_and_counts_as_enforce(pair: tuple[Veil, Veil],
                                                              demo_upstream: Upstream) -> None:
    enforce, report = pair
    before = [counters(enforce), counters(report)]
    logged = [len(decisions(enforce)), len(decisions(report))]
    for v in pair:
        for sid in ("c-000011", "c-000000", "c-000002"):
            v.consent(sid, "personalization", notice_version=3)
    with httpx.Client(timeout=10.0) as direct:
        for path, caller, purpose in TRAFFIC:
            e = enforce.get(path, caller=caller, purpose=purpose)
            r = report.get(path, caller=caller, purpose=purpose)
            up = direct.get(demo_upstream.url + path, headers={"Accept-Encoding": "identity"})
            # the data passes unchanged: status, body bytes, encoding
            assert (r.status_code, r.read()) == (up.status_code, up.read()), path
            assert r.headers.get("content-encoding") == up.headers.get("content-encoding")
            assert "veil-decision" not in r.headers and r.headers["veil-decision-id"]
            # ... and the header says what enforce mode did
            e_reason = e.json()["reason"] if e.headers["veil-decision"] == "block" else "ok"
            assert r.headers["veil-report-only"] == f"{e.headers['veil-decision']}; reason={e_reason}", path
    assert delta(counters(report), before[1]) == delta(counters(enforce), before[0])
    e_log, r_log = decisions(enforce)[logged[0]:], decisions(report)[logged[1]:]
    assert len(r_log) == len(TRAFFIC) and all(rec["mode"] == "report-only" for rec in r_log)
    keys = ("route", "purpose", "caller", "decision", "reason", "fields", "filtered")
    def shape(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: rec.get(k) for k in keys} for rec in log]

    assert shape(r_log) == shape(e_log)
    by_reason = {rec["reason"]: rec["decision"] for rec in r_log}
    assert by_reason["consent_missing"] == "block" and by_reason["upstream_status"] == "block"
    assert {rec["decision"] for rec in r_log} == {"block", "redact", "filter"}


def test_route_mode_switches_on_reload(pair: tuple[Veil, Veil], demo_upstream: Upstream) -> None:
    v, _ = pair
    routes = v.policy_dir / "routes.veil"
    original = routes.read_text()
    blocked = v.get("/customers/c-000020", purpose=REC)
    assert blocked.status_code == 403 and blocked.json()["reason"] == "consent_missing"
    before = counters(v)
    try:
        head = "route GET /customers/{id} {"
        routes.write_text(original.replace(head, head + "\n  mode report-only"))
        deadline = time.monotonic() + 4.0
        while (r := v.get("/customers/c-000020", purpose=REC)).status_code != 200:
            assert time.monotonic() < deadline, "the route's mode change was not picked up"
            time.sleep(0.05)
        assert r.headers["veil-report-only"] == "block; reason=consent_missing"
        assert r.content == httpx.get(demo_upstream.url + "/customers/c-000020").content
        assert r.headers["veil-policy"] != blocked.headers["veil-policy"]
        other = v.get("/customers?limit=3", purpose=REC)  # another route stays enforced
        assert other.headers["veil-decision"] in ("filter", "allow", "redact")
        assert "veil-report-only" not in other.headers
        key = ("veil_requests_total", (("decision", "block"), ("purpose", REC), ("reason", "consent_missing"),
                                       ("route", "/customers/{id}")))
        assert delta(counters(v), before)[key] >= 1  # counted as the block it would have been
    finally:
        routes.write_text(original)
        assert v.client.post(f"{v.admin}/reload",
                             headers={"Authorization": f"Bearer {v.tokens['reload']}"}).status_code == 200
    again = v.get("/customers/c-000020", purpose=REC)
    assert again.status_code == 403 and again.headers["veil-policy"] == blocked.headers["veil-policy"]


def test_report_only_policy_is_the_shipped_one(pair: tuple[Veil, Veil]) -> None:
    """Both veils run the example policy unchanged (the comparison above is like for like)."""
    for v in pair:
        assert {p.name: p.read_text() for p in v.policy_dir.glob("*.veil")} == {
            p.name: p.read_text() for p in Path(POLICIES).glob("*.veil")}
