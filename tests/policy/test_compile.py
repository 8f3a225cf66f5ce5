"""Compiled policy: route matching and specificity, caller keys, purpose hierarchy, decision reasons."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from veil.consent.store import ConsentState, Status
from veil.policy.compile import CompiledPolicy
from veil.policy.decision import Admitted, Blocked, admit, consent_reason
from veil.policy.load import load_policy
from veil.policy.testing import admit_as

KEY = "secret-test-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
BASE = f"""
purpose p {{ description "d" basis contract retention 1 year recipients "r" }}
purpose c.child {{ description "d" basis consent consent "k" consent_max_age 30 days notice_version >= 3
  retention 1 year recipients "r" }}
caller web {{ key sha256:{DIGEST} may p, c }}
"""
NOW = datetime(2026, 6, 1, tzinfo=UTC)

Load = Callable[[str], CompiledPolicy]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    def make(routes: str) -> CompiledPolicy:
        f = tmp_path / "p.veil"
        f.write_text(BASE + routes)
        return load_policy([f])

    return make


def _template(policy: CompiledPolicy, method: str, path: str) -> str | None:
    found = policy.match(method, path)
    return found[0].template if found else None


def test_specificity_static_beats_parameter(load: Load) -> None:
    p = load("""
route GET /a/{x}/c { for p { keep x } }
route GET /a/b/{y} { for p { keep x } }
route GET /{x}/{y}/{z} { for p { keep x } }
route GET /a/b { for p { keep x } }
route GET / { for p { keep x } }
""")
    assert _template(p, "GET", "/a/b/c") == "/a/b/{y}"  # the earlier static segment decides
    assert _template(p, "GET", "/a/z/c") == "/a/{x}/c"
    assert _template(p, "GET", "/q/r/s") == "/{x}/{y}/{z}"
    assert _template(p, "GET", "/a/b") == "/a/b"
    assert _template(p, "GET", "/") == "/"
    assert _template(p, "GET", "/a") is None
    assert _template(p, "POST", "/a/b") is None
    assert _template(p, "HEAD", "/a/b/c") == "/a/b/{y}"


def test_params_are_captured(load: Load) -> None:
    p = load("route GET /u/{id}/o/{oid} { for p { keep x } }")
    found = p.match("GET", "/u/7/o/9")
    assert found is not None and found[1] == {"id": "7", "oid": "9"}


def test_authentication_by_key_digest_and_cache(load: Load) -> None:
    p = load("route GET /a { for p { keep x } }")
    assert p.authenticate(KEY) is p.callers["web"]
    assert p.authenticate(KEY) is p.callers["web"]  # second time from the digest cache
    assert p.authenticate("wrong") is None
    assert "wrong" not in p._key_cache


def test_admit_as_names_callers_without_touching_the_policy(load: Load) -> None:
    p = load("route GET /a { for p { keep x } }")
    assert isinstance(admit_as(p, "GET", "/a", "web", ["p"]), Admitted)
    assert p._key_cache == {}
    out = admit_as(p, "GET", "/a", "nobody", ["p"])
    assert isinstance(out, Blocked) and out.reason == "unknown_caller"
    # the throw-away test key never authenticates against the real policy
    assert admit(p, "GET", "/a", ["veil-policy-test-caller:web"], ["p"]) == Blocked("unknown_caller", "/a")


def test_purpose_hierarchy(load: Load) -> None:
    p = load("route GET /a/{id} { subject path.id for c.child, p { keep x } }")
    web = p.callers["web"]
    assert web.may_claim("c.child") and web.may_claim("p") and not web.may_claim("q")
    assert web.claimable == frozenset({"p", "c.child"})


@pytest.mark.parametrize(("keys", "purposes", "reason"), [
    ([], ["p"], "unknown_caller"),
    ([KEY, KEY], ["p"], "key_ambiguous"),
    ([KEY], [], "purpose_missing"),
    ([KEY], ["p", "p"], "purpose_ambiguous"),
    ([KEY], ["p,c.child"], "purpose_ambiguous"),
    ([KEY], ["P!"], "purpose_invalid"),
    ([KEY], ["nope"], "purpose_unknown"),
])
def test_admission_reasons(load: Load, keys: list[str], purposes: list[str], reason: str) -> None:
    p = load("route GET /a { for p { keep x } }")
    out = admit(p, "GET", "/a", keys, purposes)
    assert isinstance(out, Blocked) and out.reason == reason


def test_block_locations_point_at_the_policy(load: Load) -> None:
    p = load('route GET /a { for p { keep x } }\nroute GET /b { for p { block "no" } }')
    out = admit(p, "GET", "/b", [KEY], ["p"])
    assert isinstance(out, Blocked) and out.reason == "blocked_by_rule"
    assert [(loc.line, loc.col) for loc in out.locations] == [(7, 16)]
    out = admit(p, "GET", "/a", [KEY], ["c.child"])
    assert isinstance(out, Blocked) and out.reason == "purpose_not_covered"
    assert [(loc.line, loc.col) for loc in out.locations] == [(6, 1)]


def _state(status: Status, at: datetime | None = NOW, notice: int | None = 3,
           expires: datetime | None = None) -> dict[str, ConsentState]:
    return {"k": ConsentState("k", status, at, notice, expires)}


@pytest.mark.parametrize(("states", "gpc", "reason"), [
    (_state(Status.GIVEN), False, None),
    ({}, False, "consent_missing"),
    (_state(Status.WITHDRAWN), False, "consent_withdrawn"),
    (_state(Status.EXPIRED), False, "consent_expired"),
    (_state(Status.GIVEN, expires=NOW), False, "consent_expired"),
    (_state(Status.GIVEN, at=NOW - timedelta(days=31)), False, "consent_expired"),
    (_state(Status.GIVEN, notice=2), False, "consent_stale"),
    (_state(Status.GIVEN), True, None),  # this purpose does not honour GPC
])
def test_consent_reasons(load: Load, states: dict[str, ConsentState], gpc: bool, reason: str | None) -> None:
    p = load("route GET /a/{id} { subject path.id for c.child { keep x } }")
    ad = admit(p, "GET", "/a/1", [KEY], ["c.child"])
    assert isinstance(ad, Admitted)
    assert consent_reason(ad.rule, states, NOW, gpc=gpc) == reason
