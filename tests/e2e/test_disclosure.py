"""What left veil, over real sockets: the per-customer access report (GDPR Art. 15) after the README's
two example requests lists exactly the categories the responses carried, in the form they carried them;
and settings in veil.yaml that a reload applies (mode) or reports as needing a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Upstream, Veil, start_veil
from tests.e2e.test_reload import reload, sample, wait_for
from veil.policy.load import load_policy

REC = "personalize.recommendations"
SHIP = "orders.fulfillment"


def leaves(doc: Any, at: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, (*at, k))
    elif isinstance(doc, list):
        for v in doc:
            yield from leaves(v, (*at, 0))
    elif doc is not None:
        yield at, doc


def report(v: Veil, subject: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "veil", "audit", "report", "--config", str(v.config_path),
                          "--subject", subject, "--json"], capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_access_report_lists_what_the_responses_carried(sv: Veil) -> None:
    sv.consent("c-000001", "personalization", notice_version=3)
    shop = sv.get("/customers/c-000001", purpose=REC)
    ship = sv.get("/customers/c-000001", caller="warehouse", purpose=SHIP)
    assert shop.status_code == ship.status_code == 200
    rep = report(sv, "c-000001")
    assert rep["verified"]
    got = {(r["caller"], r["purpose"]): r["categories"] for r in rep["recipients"]}
    assert got[("storefront", REC)] == {
        "behaviour": ["clear"], "contact": ["hash"], "contact.address": ["generalize"],
        "demographics": ["generalize"], "identity": ["clear"],
    }
    assert got[("warehouse", SHIP)] == {
        "behaviour": ["clear"], "contact": ["mask"], "contact.address": ["clear"], "identity": ["clear"],
    }
    # cross-check with the bodies themselves: every category listed is one whose fields the body holds,
    # and every categorized field of the body is listed (one rule of membership: the policy's index)
    index = load_policy([sv.policy_dir]).category_index
    for resp, key in ((shop, ("storefront", REC)), (ship, ("warehouse", SHIP))):
        in_body = {index.of(path) for path, _ in leaves(resp.json())} - {None}
        assert set(got[key]) == in_body
    assert "health" not in got[("storefront", REC)] and "payment" not in got[("storefront", REC)]


@pytest.fixture
def report_only_veil(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    v = start_veil(tmp_path_factory.mktemp("mode") / "veil", demo_upstream.url, overrides={"mode": "report-only"})
    yield v
    v.stop()


def set_config(v: Veil, **changes: Any) -> None:
    cfg = yaml.safe_load(v.config_path.read_text())
    for path, value in changes.items():
        node = cfg
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    v.config_path.write_text(yaml.safe_dump(cfg))


def test_mode_reloads_and_other_settings_say_they_need_a_restart(report_only_veil: Veil) -> None:
    v = report_only_veil
    r = v.get("/customers/c-000007", purpose=REC)  # no consent: report-only passes it on
    assert r.status_code == 200 and r.headers["veil-report-only"].startswith("block; reason=consent_")
    assert v.client.get(f"{v.admin}/readyz").json()["mode"] == "report-only"
    assert sample(v.metrics(), "veil_route_mode", route="/customers/{id}", mode="report-only") == 1
    # mode: enforce, then POST /reload: in effect at once, and said so
    set_config(v, mode="enforce")
    done = reload(v)
    assert done.status_code == 200, done.text
    assert done.json()["ok"] is True and done.json()["mode"] == "enforce"
    assert done.json()["config"] == {"applied": ["mode"], "restart_required": [], "error": None}
    r = v.get("/customers/c-000007", purpose=REC)
    assert r.status_code == 403 and "veil-report-only" not in r.headers
    assert v.client.get(f"{v.admin}/readyz").json()["mode"] == "enforce"
    metrics = v.metrics()
    assert sample(metrics, "veil_route_mode", route="/customers/{id}", mode="enforce") == 1
    assert sample(metrics, "veil_route_mode", route="/customers/{id}", mode="report-only") == 0
    # a setting that needs a restart: not claimed as applied
    set_config(v, consent__cache_size=5)
    done = reload(v)
    assert done.status_code == 409
    assert done.json()["ok"] is False
    assert done.json()["config"]["restart_required"] == ["consent.cache_size"]
    # an invalid file changes nothing
    set_config(v, mode="sometimes")
    done = reload(v)
    assert done.status_code == 422 and "mode" in done.json()["config"]["error"]
    assert v.get("/customers/c-000007", purpose=REC).status_code == 403
    # SIGHUP reloads the config too
    set_config(v, mode="report-only")
    v.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: v.client.get(f"{v.admin}/readyz").json()["mode"] == "report-only", what="mode after SIGHUP")
    assert v.get("/customers/c-000007", purpose=REC).status_code == 200
