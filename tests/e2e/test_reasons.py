"""Every reason code the proxy can produce, over real sockets: status, problem+json, `reason`,
`decision_id` equal to the `Veil-Decision-Id` header, and no data. Codes asserted elsewhere are listed
in COVERED_ELSEWHERE; a new code in decision.REASONS fails `test_every_reason_code_is_accounted_for`
until a test asserts it (or it is listed as unreachable, with the reason)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.conftest import Veil
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, SubjectHasher
from veil.keys import KeyRing, load_secret
from veil.reasons import REASONS

REC = "personalize.recommendations"
ADS = "advertising.targeted"
SHIP = "orders.fulfillment"
HELPDESK_KEY = "reasons-helpdesk-key"  # tests/e2e/reason_policy/helpdesk.veil
PROBLEM_KEYS = {"type", "title", "status", "detail", "reason", "decision_id"}
CUSTOMER_FIELDS = ("email", "phone", "address", "birth_date", "preferences", "purchase_history", "payment")

# Reason codes asserted by other test files (or not producible by a running proxy), and where.
COVERED_ELSEWHERE: dict[str, str] = {
    "route_not_covered": "test_flow.py::test_reason_codes_before_upstream",
    "path_invalid": "test_hardening.py::test_path_tricks",
    "method_override": "test_hardening.py::test_method_override_refused",
    "unknown_caller": "tests/security/test_access.py",
    "key_ambiguous": "test_hardening.py::test_duplicate_and_odd_veil_headers",
    "purpose_missing": "test_flow.py::test_reason_codes_before_upstream",
    "purpose_ambiguous": "test_hardening.py::test_duplicate_and_odd_veil_headers",
    "purpose_not_allowed": "test_flow.py::test_reason_codes_before_upstream",
    "purpose_not_covered": "test_flow.py::test_reason_codes_before_upstream",
    "consent_unavailable": "test_faults.py (SQLite), test_postgres_outage.py (PostgreSQL)",
    "gpc_opt_out": "test_signals.py",
    "tcf_invalid": "test_signals.py::test_tcf_malformed_string_is_tcf_invalid",
    "upstream_unavailable": "test_hardening.py::test_upstream_down_then_recovering",
    "upstream_timeout": "test_hardening.py::test_hostile_bodies_fail_closed",
    "upstream_redirect": "test_hardening.py::test_hostile_bodies_fail_closed",
    "body_invalid": "test_hardening.py::test_hostile_bodies_fail_closed",
    "body_too_large": "test_hardening.py::test_hostile_bodies_fail_closed",
    "content_type_unsupported": "test_hardening.py::test_hostile_bodies_fail_closed",
    "encoding_unsupported": "test_hardening.py::test_hostile_bodies_fail_closed",
    "audit_unavailable": "test_faults.py::test_decision_log_down_fails_closed_and_recovers",
    "audit_backlog_full": "test_audit_fleet.py::test_over_the_bound_it_refuses_and_recovers",
    "rate_limited": "tests/security/test_access.py",
    "subject_unidentified": "test_subjects.py::test_subject_from_the_response_body",
    "request_body_invalid": "test_subjects.py::test_subject_from_the_request_body",
    "request_body_too_large": "test_subjects.py::test_subject_from_the_request_body, "
                              "test_client_bodies.py::test_too_large_bodies_are_refused",
    "request_aborted": "test_client_bodies.py::test_cut_off_chunked_body_is_never_completed_towards_the_upstream",
    "request_timeout": "test_slow_clients.py::test_stalled_clients_do_not_starve_the_others",
    "upgrade_refused": "test_protocol_edges.py::test_websocket_upgrade_is_refused_with_a_problem",
    "upstream_busy": "test_slow_clients.py::test_a_full_upstream_pool_answers_503_then_recovers",
    "upstream_status_invalid": "test_protocol_edges.py::test_a_status_outside_100_599_is_a_502_problem",
    # Not producible by a running proxy:
    "range_not_allowed": "unreachable: Range and If-Range are stripped on enforced routes "
                         "(test_range_is_ignored_on_enforced_routes)",
    "policy_unavailable": "unreachable: veil refuses to start without a valid policy and keeps the last good one",
    "internal_error": "unreachable without a bug: the catch-all in ProxyApp.__call__",
}
COVERED_HERE = {
    "consent_expired", "consent_stale", "consent_withdrawn", "consent_missing", "subject_missing",
    "caller_not_allowed", "blocked_by_rule", "purpose_unknown", "purpose_invalid", "headers_too_large",
    "upstream_status",
}


# ------------------------------------------------------------------ helpers (other modules import these)
def assert_problem(r: httpx.Response, status: int, reason: str, *secrets: str) -> dict[str, object]:
    """A block: the status, problem+json with the reason and the decision id, and nothing else."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["veil-decision"] == "block"
    assert "no-store" in r.headers["cache-control"]
    body: dict[str, object] = r.json()
    assert set(body) == PROBLEM_KEYS, body
    assert body["reason"] == reason
    assert body["status"] == status
    assert str(body["type"]).endswith("/" + reason.replace("_", "-"))
    if reason in REASONS:
        assert (status, body["title"]) == REASONS[reason]
    assert body["decision_id"] == r.headers["veil-decision-id"]
    assert len(body["decision_id"]) == 24
    for field in CUSTOMER_FIELDS:
        assert f'"{field}"' not in r.text
    for s in secrets:
        assert s not in r.text
    return body


def write_consent(v: Veil, subject: str, key: str, at: datetime, *, notice_version: int | None = 3,
                  action: Action = Action.GIVEN, expires_at: datetime | None = None) -> None:
    """Record a consent event straight into the veil's SQLite store (e.g. one given long ago)."""
    hasher = SubjectHasher(KeyRing.single(load_secret(f"file:{v.dir / 'store.key'}")))

    async def go() -> None:
        store = SqliteConsentStore(v.dir / "consent.db", hasher)
        try:
            await store.record([ConsentEvent(subject, key, action, at, source="test", method="test",
                                             notice_version=notice_version, expires_at=expires_at)])
        finally:
            await store.close()

    asyncio.run(go())


# ------------------------------------------------------------------ the list is complete
def test_every_reason_code_is_accounted_for() -> None:
    assert not COVERED_HERE & set(COVERED_ELSEWHERE)
    assert set(REASONS) == COVERED_HERE | set(COVERED_ELSEWHERE), (
        set(REASONS) ^ (COVERED_HERE | set(COVERED_ELSEWHERE)))


# ------------------------------------------------------------------ consent from the store
def test_consent_missing(sv: Veil) -> None:
    assert_problem(sv.get("/customers/c-000100", purpose=REC), 403, "consent_missing", "c-000100")


def test_consent_expired_by_expires_at(sv: Veil) -> None:
    # the admin API refuses an expiry that is not after the time of recording: let a short one lapse
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    sv.consent("c-000101", "personalization", notice_version=3, expires_at=soon)
    time.sleep(1.2)
    assert_problem(sv.get("/customers/c-000101", purpose=REC), 403, "consent_expired", "c-000101")
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    sv.consent("c-000102", "personalization", notice_version=3, expires_at=future)
    assert sv.get("/customers/c-000102", purpose=REC).status_code == 200


def test_consent_expired_by_max_age(sv: Veil) -> None:
    """`consent_max_age 13 months`: a consent given 14 months ago has expired, 12 months ago has not."""
    now = datetime.now(UTC)
    write_consent(sv, "c-000103", "personalization", now - timedelta(days=14 * 30))
    write_consent(sv, "c-000104", "personalization", now - timedelta(days=12 * 30))
    assert_problem(sv.get("/customers/c-000103", purpose=REC), 403, "consent_expired", "c-000103")
    ok = sv.get("/customers/c-000104", purpose=REC)
    assert ok.status_code == 200 and ok.json()["id"] == "c-000104"
    # a fresh consent (through the admin API) replaces the old one
    sv.consent("c-000103", "personalization", notice_version=3)
    assert sv.get("/customers/c-000103", purpose=REC).status_code == 200


def test_consent_written_while_running_is_seen_after_the_cache_ttl(sv: Veil) -> None:
    assert sv.get("/customers/c-000105", purpose=REC).status_code == 403  # cached as missing
    write_consent(sv, "c-000105", "personalization", datetime.now(UTC))
    t0 = time.monotonic()
    while sv.get("/customers/c-000105", purpose=REC).status_code != 200:
        assert time.monotonic() - t0 < 3.0, "another writer's consent not seen within 3 s (cache_ttl 0.5 s)"
        time.sleep(0.1)


def test_consent_stale(sv: Veil) -> None:
    """`notice_version >= 2`: consent given to notice 1 is stale; to notice 2 it is enough."""
    sv.consent("c-000106", "personalization", notice_version=1)
    assert_problem(sv.get("/customers/c-000106", purpose=REC), 403, "consent_stale", "c-000106")
    sv.consent("c-000107", "personalization")  # no notice version at all counts as older than 2
    assert_problem(sv.get("/customers/c-000107", purpose=REC), 403, "consent_stale", "c-000107")
    sv.consent("c-000106", "personalization", notice_version=2)
    assert sv.get("/customers/c-000106", purpose=REC).status_code == 200


def test_consent_withdrawn(sv: Veil) -> None:
    sv.consent("c-000108", "advertising", notice_version=3)
    assert sv.get("/customers/c-000108", caller="ad_partner", purpose=ADS).status_code == 200
    sv.consent("c-000108", "advertising", action="withdrawn")
    r = sv.get("/customers/c-000108", caller="ad_partner", purpose=ADS)
    assert_problem(r, 403, "consent_withdrawn", "c-000108")


def test_require_consent_needs_every_key(rv: Veil) -> None:
    """`require consent "advertising"` on top of the purpose's own key: both are needed."""
    rv.consent("c-000110", "personalization", notice_version=3)
    assert_problem(rv.get("/customers/c-000110", purpose=REC), 403, "consent_missing", "c-000110")
    rv.consent("c-000110", "advertising")  # the purpose's `notice_version >= 2` applies to every key
    assert_problem(rv.get("/customers/c-000110", purpose=REC), 403, "consent_stale")
    rv.consent("c-000110", "advertising", notice_version=2)
    ok = rv.get("/customers/c-000110", purpose=REC)
    assert ok.status_code == 200 and set(ok.json()) <= {"id", "segment"}, ok.text
    rv.consent("c-000110", "advertising", action="withdrawn")
    assert_problem(rv.get("/customers/c-000110", purpose=REC), 403, "consent_withdrawn")


# ------------------------------------------------------------------ admission
def test_subject_missing(rv: Veil) -> None:
    """`subject query.owner`: absent, empty or repeated → no subject; a single value → served."""
    for qs in ("", "?owner=", "?owner=c-1&owner=c-2", "?other=c-1"):
        r = rv.get("/segments/sizes" + qs, caller="analytics", purpose="analytics.segments")
        assert_problem(r, 400, "subject_missing")
    ok = rv.get("/segments/sizes?owner=c-000111", caller="analytics", purpose="analytics.segments")
    assert ok.status_code == 200, ok.text
    assert all(g["count"] >= 10 for g in ok.json()["groups"])


def test_caller_not_allowed(rv: Veil) -> None:
    """helpdesk may claim orders.fulfillment, but the rule says `require caller warehouse`."""
    r = rv.get("/customers/c-000112", caller=HELPDESK_KEY, purpose=SHIP)
    assert_problem(r, 403, "caller_not_allowed", "c-000112")
    assert rv.get("/customers/c-000112", caller="warehouse", purpose=SHIP).status_code == 200


def test_blocked_by_rule(rv: Veil) -> None:
    r = rv.get("/customers/c-000113", caller="analytics", purpose="analytics.segments")
    body = assert_problem(r, 403, "blocked_by_rule", "c-000113")
    assert "never reads single profiles" not in str(body)  # the block text is for policy readers


@pytest.mark.parametrize("purpose", ["marketing.email", "personalize", "personalize.recommendations.x"])
def test_purpose_unknown(sv: Veil, purpose: str) -> None:
    assert_problem(sv.get("/customers/c-000114", purpose=purpose), 403, "purpose_unknown")


@pytest.mark.parametrize("purpose", ["Personalize.Recommendations", "personalize..x", "1st.purpose",
                                     "personalize recommendations", "personalize.recommendations;x"])
def test_purpose_invalid(sv: Veil, purpose: str) -> None:
    assert_problem(sv.get("/customers/c-000114", purpose=purpose), 400, "purpose_invalid")


def test_headers_too_large(sv: Veil) -> None:
    """More than 32 KiB of request headers in total (each one small) → 431 before anything else."""
    headers = {f"X-Pad-{i}": "a" * 1000 for i in range(40)}
    assert_problem(sv.get("/customers/c-000115", purpose=REC, headers=headers), 431, "headers_too_large")


def test_range_is_ignored_on_enforced_routes(sv: Veil) -> None:
    """No 206 of unenforced bytes: Range is stripped, the whole enforced body comes back."""
    sv.consent("c-000116", "personalization", notice_version=3)
    r = sv.get("/customers/c-000116", purpose=REC, headers={"Range": "bytes=0-10", "If-Range": "x"})
    assert r.status_code == 200 and r.json()["id"] == "c-000116"
    assert "content-range" not in r.headers


# ------------------------------------------------------------------ upstream status
def test_upstream_status_passes_without_its_body(sv: Veil) -> None:
    """The upstream's 404 is passed on as problem+json `upstream_status`; its own body is not."""
    r = sv.get("/customers/c-999999", caller="warehouse", purpose=SHIP)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert set(body) == PROBLEM_KEYS and body["reason"] == "upstream_status" and body["status"] == 404
    assert body["decision_id"] == r.headers["veil-decision-id"] and r.headers["veil-decision"] == "block"
    assert "c-999999" not in r.text
    # a consent purpose is checked first: no consent, no upstream call, 403 (not the upstream's 404)
    assert_problem(sv.get("/customers/c-999999", purpose=REC), 403, "consent_missing")


def test_every_block_is_in_the_decision_log(sv: Veil) -> None:
    r = sv.get("/customers/c-000117", purpose="marketing.email")
    decision_id = r.headers["veil-decision-id"]
    log = (sv.dir / "audit" / "decisions.log").read_text()
    line = next(x for x in log.splitlines() if decision_id in x)
    assert '"reason":"purpose_unknown"' in line and "c-000117" not in line

