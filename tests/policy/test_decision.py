"""consent_reasons (a list response's subjects at once) agrees with consent_reason one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from veil.consent.store import ConsentState, Status
from veil.policy import load_policy
from veil.policy.decision import consent_reason, consent_reasons

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy([ROOT / "policies"])
RULES = [r for route in POLICY.routes for r in route.rules.values()]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SUBJECTS = ["s1", "s2", "s3", "s4"]
KEYS = sorted({k for r in RULES for k in r.consent_keys})

times = st.integers(-800, 400).map(lambda d: NOW + timedelta(days=d))
states = st.builds(
    ConsentState, st.sampled_from(KEYS), st.sampled_from(list(Status)), st.none() | times,
    st.none() | st.integers(0, 5), st.none() | times,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RULES), st.dictionaries(st.tuples(st.sampled_from(SUBJECTS), st.sampled_from(KEYS)), states),
       st.booleans(), st.none() | st.integers(1, 900))
def test_consent_reasons_equal_consent_reason_per_subject(
    rule: object, found: dict[tuple[str, str], ConsentState], gpc: bool, vendor: int | None
) -> None:
    found = {(s, k): ConsentState(k, v.status, v.at, v.notice_version, v.expires_at) for (s, k), v in found.items()}
    got = consent_reasons(rule, SUBJECTS, found, NOW, gpc=gpc, vendor=vendor)  # type: ignore[arg-type]
    want = {s: consent_reason(rule, {k: found[(s, k)] for k in rule.consent_keys if (s, k) in found},  # type: ignore[attr-defined]
                              NOW, gpc=gpc, vendor=vendor) for s in SUBJECTS}
    assert got == want



def test_upstream_status_rule() -> None:
    from veil.policy.decision import status_reason
    from veil.reasons import Reason

    assert [status_reason(s) for s in (200, 201, 204, 299)] == [None] * 4
    assert [status_reason(s) for s in (300, 302, 304, 399)] == [Reason.UPSTREAM_REDIRECT] * 4
    assert [status_reason(s) for s in (400, 404, 500, 599)] == [Reason.UPSTREAM_STATUS] * 4
    assert [status_reason(s) for s in (0, 99, 100, 101, 199, 600, 999)] == [Reason.UPSTREAM_STATUS_INVALID] * 7


def test_empty_2xx_responses_have_nothing_to_enforce() -> None:
    from veil.policy.decision import no_content

    assert all(no_content(s, b"") for s in (200, 201, 202, 203, 204, 205, 206))
    assert no_content(204, b"anything") and no_content(205, b" ")
    assert not any(no_content(s, b" ") for s in (200, 201, 202))  # a byte is a body: enforced or refused


def test_the_flow_treats_empty_odd_and_upgrade_requests_alike_everywhere() -> None:
    """`veil test` runs the proxy's flow: empty 2xx pass empty, odd statuses and WebSocket upgrades are
    refused with their reasons."""
    from veil.policy.cases import Request, Response
    from veil.policy.testing import evaluate

    req = Request(method="GET", path="/customers/c-1", caller="warehouse", purposes=("orders.fulfillment",))
    for status in (200, 201, 202, 204, 205):
        out = evaluate(POLICY, req, {}, Response(status=status), NOW)
        assert (out.decision, out.reason, out.status, out.body) == ("allow", "ok", status, None)
    out = evaluate(POLICY, req, {}, Response(status=201, raw=b" "), NOW)
    assert (out.decision, out.reason) == ("block", "body_invalid")
    out = evaluate(POLICY, req, {}, Response(status=600, body={"id": "c-1"}, has_body=True), NOW)
    assert (out.decision, out.reason, out.status) == ("block", "upstream_status_invalid", 502)
    ws = Request(method="GET", path="/customers/c-1", caller="warehouse", purposes=("orders.fulfillment",),
                 headers=(("Connection", "Upgrade"), ("Upgrade", "websocket")))
    out = evaluate(POLICY, ws, {}, Response(status=200, body={"id": "c-1"}, has_body=True), NOW)
    assert (out.decision, out.reason, out.status) == ("block", "upgrade_refused", 400)
