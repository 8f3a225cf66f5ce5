"""The request flow over real sockets: veil under uvicorn in front of the demo upstream."""

from __future__ import annotations

from tests.e2e.conftest import Veil

PROFILE = "/customers/c-000001"
REC = "personalize.recommendations"


def test_consent_missing_blocks_before_upstream(veil: Veil) -> None:
    r = veil.get(PROFILE, purpose=REC)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["reason"] == "consent_missing"
    assert body["decision_id"] == r.headers["veil-decision-id"]
    assert r.headers["veil-decision"] == "block"
    assert "c-000001" not in r.text


def test_same_customer_two_purposes(veil: Veil) -> None:
    veil.consent("c-000001", "personalization", notice_version=3)
    rec = veil.get(PROFILE, purpose=REC)
    assert rec.status_code == 200, rec.text
    assert rec.headers["veil-decision"] == "redact"
    doc = rec.json()
    assert doc["email"].startswith("ps_")
    assert "payment" not in doc and "health" not in doc and "phone" not in doc
    ship = veil.get(PROFILE, caller="warehouse", purpose="orders.fulfillment")
    assert ship.status_code == 200, ship.text
    sdoc = ship.json()
    assert sdoc["address"]["street"]
    assert sdoc["phone"].startswith("*") and "preferences" not in sdoc
    assert set(doc) != set(sdoc)


def test_withdrawal_takes_effect_on_next_request(veil: Veil) -> None:
    veil.consent("c-000002", "personalization", notice_version=3)
    assert veil.get("/customers/c-000002", purpose=REC).status_code == 200
    veil.consent("c-000002", "personalization", action="withdrawn")
    r = veil.get("/customers/c-000002", purpose=REC)
    assert r.status_code == 403 and r.json()["reason"] == "consent_withdrawn"


def test_gpc_opts_out_of_targeted_advertising(veil: Veil) -> None:
    veil.consent("c-000003", "advertising")
    ok = veil.get("/customers/c-000003", caller="ad_partner", purpose="advertising.targeted")
    assert ok.status_code == 200, ok.text
    r = veil.get("/customers/c-000003", caller="ad_partner", purpose="advertising.targeted",
                 headers={"Sec-GPC": "1"})
    assert r.status_code == 403 and r.json()["reason"] == "gpc_opt_out"


def test_reason_codes_before_upstream(veil: Veil) -> None:
    assert veil.get("/nope", purpose=REC).json()["reason"] == "route_not_covered"
    assert veil.get(PROFILE, caller="wrong-key", purpose=REC).status_code == 401
    assert veil.get(PROFILE, purpose=None).json()["reason"] == "purpose_missing"
    assert veil.get(PROFILE, purpose="orders.fulfillment").json()["reason"] == "purpose_not_allowed"
    r = veil.get(PROFILE, caller="analytics", purpose="analytics.segments")
    assert r.json()["reason"] == "purpose_not_covered"


def test_list_filters_items_without_consent(veil: Veil) -> None:
    for i in (0, 1, 2):
        veil.consent(f"c-00000{i}", "personalization", notice_version=3)
    r = veil.get("/customers?limit=10", purpose=REC)
    assert r.status_code == 200, r.text
    assert r.headers["veil-decision"] == "filter"
    ids = [it["id"] for it in r.json()["items"]]
    assert ids == ["c-000000", "c-000001", "c-000002"]
    assert all(set(it) <= {"id", "preferences", "segment", "email"} for it in r.json()["items"])
    assert r.headers["veil-filtered"] == "7"  # how many items were removed
    assert "veil-suppressed" not in r.headers
    everyone = veil.get("/customers?limit=3", purpose=REC)
    assert everyone.headers["veil-decision"] == "redact" and "veil-filtered" not in everyone.headers


def test_aggregate_guard_suppresses_small_groups(veil: Veil) -> None:
    r = veil.get("/segments/sizes", caller="analytics", purpose="analytics.segments")
    assert r.status_code == 200, r.text
    groups = r.json()["groups"]
    assert groups and all(g["count"] >= 10 for g in groups)
    assert int(r.headers["veil-suppressed"]) > 0
    assert "veil-filtered" not in r.headers  # groups suppressed, no list item filtered
