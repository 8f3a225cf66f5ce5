"""Access control: admin scopes, admin actions in the decision log, failed-authentication limits."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.e2e.conftest import KEYS, Veil
from veil.audit.report import pseudonym
from veil.keys import KeyRing, load_secret
from veil.proxy.runtime import AuthLimiter

REC = "personalize.recommendations"


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _read_token(directory: Path) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    tok = "read-" + secrets.token_hex(16)
    p = directory / "read-scope.token"
    p.write_text(tok)
    p.chmod(0o600)
    return tok, f"file:{p}"


def test_admin_scopes(veil_factory: Callable[..., Veil], tmp_path: Path) -> None:
    read, read_ref = _read_token(tmp_path / "v")
    # the harness writes the other scopes' tokens to <dir>/<scope>.token; add a read token to them
    refs = {s: f"file:{tmp_path / 'v' / f'{s}.token'}" for s in ("consent", "audit", "reload")}
    v = veil_factory("v", overrides={"admin": {"tokens": {**refs, "read": read_ref}}})
    tok = v.tokens
    c, a = v.client, v.admin
    report = f"{a}/audit/report?subject=c-000001"
    assert c.get(report).status_code == 401  # no token
    assert c.get(report, headers=_bearer(tok["consent"])).status_code == 403  # wrong scope
    assert c.get(report, headers=_bearer("audit-" + "0" * 32)).status_code == 403  # wrong token
    assert c.get(report, headers={"Authorization": tok["audit"]}).status_code == 401  # not a bearer
    assert c.get(report, headers=_bearer(tok["audit"])).status_code == 200
    assert c.post(f"{a}/consent/c-1", json={"key": "personalization"},
                  headers=_bearer(tok["audit"])).status_code == 403
    assert c.post(f"{a}/reload", headers=_bearer(tok["consent"])).status_code == 403
    # read scope: configured → required for metrics and the notice; probes stay open
    assert c.get(f"{a}/metrics").status_code == 401
    assert c.get(f"{a}/metrics", headers=_bearer(tok["consent"])).status_code == 403
    assert c.get(f"{a}/metrics", headers=_bearer(read)).status_code == 200
    assert c.get(f"{a}/healthz").status_code == 200 and c.get(f"{a}/readyz").status_code == 200
    failures = c.get(f"{a}/metrics", headers=_bearer(read)).text
    assert re.search(r'veil_auth_failures_total\{listener="admin",reason="no_token"\} [1-9]', failures)
    assert re.search(r'veil_auth_failures_total\{listener="admin",reason="bad_token"\} [1-9]', failures)


def _records(audit_dir: Path) -> list[dict[str, object]]:
    out = []
    for p in sorted(audit_dir.iterdir()):
        if p.is_file() and not p.name.endswith(".head"):
            out += [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
    return out


def test_admin_actions_are_in_the_decision_log(veil: Veil) -> None:
    subject = f"person-{secrets.token_hex(4)}"
    payload_marker = f"form-{secrets.token_hex(4)}"
    veil.consent(subject, "personalization", notice_version=3, source=payload_marker)
    h = _bearer(veil.tokens["consent"])
    assert veil.client.get(f"{veil.admin}/consent/{subject}", headers=h).status_code == 200
    assert veil.client.get(f"{veil.admin}/audit/report", params={"subject": subject},
                           headers=_bearer(veil.tokens["audit"])).status_code == 200
    assert veil.client.post(f"{veil.admin}/reload", headers=_bearer(veil.tokens["reload"])).status_code == 200
    veil.stop()
    ring = KeyRing.single(load_secret(f"file:{veil.dir / 'pseudonym.key'}"))
    admin = [r for r in _records(veil.dir / "audit") if r.get("kind") == "admin"]
    assert [(r["action"], r["scope"]) for r in admin] == [
        ("consent.given", "consent"), ("consent.read", "consent"), ("audit.report", "audit"),
        ("policy.reload", "reload"),
    ]
    ps = pseudonym(ring, subject)
    assert [r["subject"] for r in admin] == [ps, ps, ps, None]
    raw = b"".join(p.read_bytes() for p in (veil.dir / "audit").iterdir())
    assert subject.encode() not in raw and payload_marker.encode() not in raw  # never the payload


def _metric(v: Veil, name: str) -> float:
    m = re.search(rf'^{name}\{{listener="proxy"\}} (\S+)$', v.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def test_failed_authentications_are_rate_limited_per_address(veil_factory: Callable[..., Veil],
                                                             tmp_path: Path) -> None:
    # only consent and audit tokens: the reload scope has none and is closed
    refs = {s: f"file:{tmp_path / 'v' / f'{s}.token'}" for s in ("consent", "audit")}
    v = veil_factory("v", overrides={"limits": {"auth_failures_per_minute": 5}, "admin": {"tokens": refs}})
    r = v.client.post(f"{v.admin}/reload", headers=_bearer(v.tokens["reload"]))
    assert r.status_code == 403 and r.json()["reason"] == "admin_scope_closed"
    before = _metric(v, "veil_auth_rate_limited_total")
    for _ in range(5):
        r = v.get("/customers/c-000001", caller="not-a-key", purpose=REC)
        assert r.status_code == 401 and r.json()["reason"] == "unknown_caller"
    r = v.get("/customers/c-000001", caller="not-a-key", purpose=REC)
    assert r.status_code == 429 and r.json()["reason"] == "rate_limited"
    # the right key from the same address is refused too until the window passes
    r = v.get("/customers/c-000001", caller="storefront", purpose=REC)
    assert r.status_code == 429 and r.json()["reason"] == "rate_limited"
    assert KEYS["storefront"] not in r.text
    assert _metric(v, "veil_auth_rate_limited_total") == before + 2


def test_auth_limiter_window() -> None:
    lim = AuthLimiter(3, window=0.2)
    for _ in range(3):
        assert not lim.blocked("10.0.0.1")
        lim.failed("10.0.0.1")
    assert lim.blocked("10.0.0.1") and not lim.blocked("10.0.0.2")
    time.sleep(0.25)
    assert not lim.blocked("10.0.0.1")  # the window passed: a fresh start
    small = AuthLimiter(1, max_entries=2)
    for addr in ("a", "b", "c"):
        small.failed(addr)
    assert len(small._fails) <= 2  # bounded memory
