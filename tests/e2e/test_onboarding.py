"""Onboarding a legacy service end to end, on the second example API (examples/orders-api): its
OpenAPI document → `veil init` → a careless first rule → report-only with discovery in front of the
real app → `veil discover suggest --apply` → enforce. The card number (named just `number` in the
schema) is found by its values, not its name."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from tests.conftest import free_port
from tests.e2e.conftest import spawn, start_veil, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "orders-api"
KEY = "orders-test-key"


def veil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", *args], capture_output=True, text=True)


def test_spec_to_enforce(tmp_path: Path) -> None:
    work = tmp_path / "orders"
    work.mkdir()
    shutil.copy(EXAMPLE / "openapi.yaml", work / "openapi.yaml")
    policies = work / "policies"
    r = veil("init", "--openapi", str(work / "openapi.yaml"), "--out", str(policies))
    assert r.returncode == 0, r.stderr
    assert veil("check", str(policies)).returncode == 0
    # the author's first cut: a caller, and whole objects kept for support
    (policies / "callers.veil").write_text(
        f"caller support {{\n  key sha256:{hashlib.sha256(KEY.encode()).hexdigest()}\n  may service\n}}\n")
    routes = (policies / "routes.veil").read_text()
    first = "    # keep the fields this purpose needs; everything else is removed (see: veil coverage)\n"
    routes = routes.replace(first, "    keep id, status, customer, payment, shipping.carrier\n", 1)
    (policies / "routes.veil").write_text(routes)
    assert veil("check", str(policies)).returncode == 0
    cov = orjson.loads(veil("coverage", str(policies), "--format", "json").stdout)
    rows = {f["path"]: f for r in cov["rules"] if r["route"] == "GET /orders/{orderId}" for f in r["fields"]}
    assert rows["customer.email"]["fate"] == "kept" and rows["customer.email"]["category"] == "contact.email"
    assert rows["payment.number"]["fate"] == "kept" and rows["payment.number"]["personal"] is None  # a name
    # that tells nothing: only its values will

    port = free_port()
    app = spawn([sys.executable, str(EXAMPLE / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
                tmp_path / "app.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=app)
        up = f"http://127.0.0.1:{port}"
        overrides = {"mode": "report-only",
                     "discovery": {"sample": 1.0, "state": str(work / "discovery.json"), "flush_seconds": 0.2}}
        v = start_veil(tmp_path / "veil", up, policy_src=policies, overrides=overrides)
        h = {"Veil-Key": KEY, "Veil-Purpose": "service.orders_api"}
        cards = set()
        for n in range(12):
            direct = httpx.get(f"{up}/orders/ord_{n:06d}").json()
            got = v.client.get(f"{v.url}/orders/ord_{n:06d}", headers=h)
            assert got.status_code == 200 and got.json() == direct  # report-only: unchanged
            if direct["payment"]["type"] == "card":
                cards.add(direct["payment"]["number"])
        assert cards
        v.stop()
        state = (work / "discovery.json").read_text()
        assert not any(c in state for c in cards)

        shutil.copy(work / "openapi.yaml", v.dir / "openapi.yaml")  # the policy names ../openapi.yaml
        report = veil("discover", "report", str(work / "discovery.json"), "--policy", str(v.policy_dir))
        assert report.returncode == 1  # personal data leaves in clear
        assert "`payment.number`" in report.stdout and "card 100%" in report.stdout
        sug = veil("discover", "suggest", str(work / "discovery.json"), "--policy", str(v.policy_dir), "--apply")
        assert sug.returncode == 0, sug.stdout + sug.stderr
        assert "mask payment.number last 4" in sug.stdout
        assert "category payment.card = payment.number" in sug.stdout
        assert "hash customer.email" in sug.stdout
        assert veil("check", str(v.policy_dir)).returncode == 0
        assert veil("fmt", "--check", str(v.policy_dir)).returncode == 0

        enforced = start_veil(tmp_path / "veil", up, overrides={"mode": "enforce"})
        try:
            body = enforced.client.get(f"{enforced.url}/orders/ord_000000", headers=h).json()
            direct = httpx.get(f"{up}/orders/ord_000000").json()
            assert body["customer"]["email"].startswith("ps_")
            assert body["customer"]["email"] != direct["customer"]["email"]
            if direct["payment"]["type"] == "card":
                assert body["payment"]["number"].endswith(direct["payment"]["number"][-4:])
                assert body["payment"]["number"].startswith("*")
            assert "tracking" not in body.get("shipping", {})
            assert orjson.dumps(body).count(direct["customer"]["phone"].encode()) == 0
        finally:
            enforced.stop()
    finally:
        stop(app)
