"""/metrics after known traffic: exact counter values, histogram counts, bounded labels (no raw path
or subject id ever appears), and a scrape that promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, require
from tests.e2e.conftest import POLICIES, Upstream, Veil, start_veil
from veil.proxy.upstream import ERROR_KINDS

REC = "personalize.recommendations"
PROFILE = "/customers/{id}"
DEAD_ROUTE = """
route GET /orders/{id} {
  upstream unreachable
  for orders.fulfillment {
    keep id
  }
}
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def mv(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    """A fresh veil (no traffic yet) with a second upstream that nothing listens on (the config is
    written with sorted keys: the default upstream, the first, stays `demo`)."""
    d = tmp_path_factory.mktemp("metrics") / "veil"
    shutil.copytree(POLICIES, d / "policies", ignore=shutil.ignore_patterns("tests", "*.yaml", "*.md"))
    (d / "policies" / "orders.veil").write_text(DEAD_ROUTE)
    v = start_veil(d, demo_upstream.url, overrides={
        "upstreams": {"unreachable": {"url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 1.0}},
        "consent": {"cache_ttl": 60},  # long enough that hits and misses below are exact
    })
    yield v
    v.stop()


def fresh_start_series(m: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> list[tuple[str, dict[str, str]]]:
    """The series an operator's alerts need from the first scrape: each at 0 (veil.metrics.init_series)."""
    want: list[tuple[str, dict[str, str]]] = [("veil_policy_reloads_total", {"result": r}) for r in ("ok", "error")]
    for up in ("demo", "unreachable"):
        want += [("veil_upstream_errors_total", {"upstream": up, "kind": k}) for k in ERROR_KINDS]
        want.append(("veil_upstream_request_duration_seconds_count", {"upstream": up}))
    want += [("veil_auth_failures_total", {"listener": "proxy", "reason": r}) for r in ("unknown_key", "no_key")]
    want += [("veil_auth_failures_total", {"listener": "admin", "reason": r}) for r in ("bad_token", "no_token")]
    want += [("veil_auth_rate_limited_total", {"listener": "proxy"}), ("veil_audit_write_errors_total", {})]
    want += [("veil_client_errors_total", {"listener": listener, "reason": r}) for listener in ("proxy", "admin")
             for r in ("header_timeout", "header_too_large", "body_discard_timeout")]
    return want


def test_error_series_exist_at_zero_from_the_start(mv: Veil) -> None:
    """Before any traffic (this test runs first on a fresh veil): every error series is there at 0, so
    `increase(...[10m]) > 0` fires on the first failure; health and reload gauges are set; process_*
    are exported; no `_created` series."""
    text = mv.metrics()
    m = samples(text)
    for name, labels in fresh_start_series(m):
        assert (name, frozenset(labels.items())) in m, f"{name}{labels} is missing"
        assert value(m, name, **labels) == 0, f"{name}{labels}"
    assert value(m, "veil_policy_last_reload_successful") == 1
    assert abs(value(m, "veil_policy_last_reload_success_timestamp_seconds") - time.time()) < 120
    assert value(m, "veil_audit_up") == 1 and value(m, "veil_consent_store_up") == 1
    assert value(m, "process_cpu_seconds_total") > 0 and value(m, "process_resident_memory_bytes") > 0
    assert value(m, "process_open_fds") > 0 and value(m, "process_start_time_seconds") > 0
    assert "_created" not in text


def test_exact_values_after_known_traffic(mv: Veil) -> None:
    for _ in range(3):
        assert mv.get("/customers/c-000001", purpose=REC).status_code == 403  # miss, then 2 hits
    mv.consent("c-000001", "personalization", notice_version=3)  # invalidates the cached entry
    for _ in range(2):
        r = mv.get("/customers/c-000001", purpose=REC)
        assert r.status_code == 200, r.text  # miss, then 1 hit
    dead = mv.get("/orders/o-c-000001", caller="warehouse", purpose="orders.fulfillment")
    assert dead.status_code == 502 and dead.json()["reason"] == "upstream_unavailable"
    assert mv.get("/nope/c-000001", purpose=REC).json()["reason"] == "route_not_covered"

    text = mv.metrics()
    assert "c-000001" not in text and "/nope" not in text and "o-c-" not in text
    m = samples(text)
    req = "veil_requests_total"
    assert value(m, req, route=PROFILE, purpose=REC, decision="block", reason="consent_missing") == 3
    assert value(m, req, route=PROFILE, purpose=REC, decision="redact", reason="ok") == 2
    assert value(m, req, route="/orders/{id}", purpose="orders.fulfillment", decision="block",
                 reason="upstream_unavailable") == 1
    assert value(m, req, route="-", purpose="-", decision="block", reason="route_not_covered") == 1
    assert sum(n for (name, _), n in m.items() if name == req) == 7

    # per redacted profile: email hashed, birth date generalized, payment and health dropped, phone removed
    fields = "veil_fields_total"
    assert value(m, fields, category="contact", action="transformed") == 2
    assert value(m, fields, category="demographics", action="transformed") == 2
    assert value(m, fields, category="payment", action="dropped") == 2
    assert value(m, fields, category="health", action="dropped") == 2
    assert value(m, fields, category="contact", action="removed") == 2  # phone: kept by no rule
    assert value(m, fields, category="location.precise", action="removed") == 4  # location, last_ip
    assert all(n % 2 == 0 for (name, _), n in m.items() if name == fields)  # two identical responses

    lookups = "veil_consent_lookups_total"
    assert value(m, lookups, result="missing", cache="miss") == 1
    assert value(m, lookups, result="missing", cache="hit") == 2
    assert value(m, lookups, result="given", cache="miss") == 1
    assert value(m, lookups, result="given", cache="hit") == 1
    assert sum(n for (name, _), n in m.items() if name == lookups) == 5
    assert value(m, "veil_consent_store_lookup_duration_seconds_count") == 2  # store round trips: the misses

    assert value(m, "veil_overhead_duration_seconds_count", route=PROFILE) == 5
    assert value(m, "veil_overhead_duration_seconds_count", route="/orders/{id}") == 1
    assert value(m, "veil_upstream_request_duration_seconds_count", upstream="demo") == 2
    assert value(m, "veil_upstream_request_duration_seconds_count", upstream="unreachable") == 0
    assert value(m, "veil_upstream_errors_total", upstream="unreachable", kind="connect") == 1

    assert value(m, "veil_policy_info", version=r.headers["veil-policy"]) == 1
    assert sum(1 for (name, _), n in m.items() if name == "veil_policy_info" and n == 1) == 1
    assert any(name == "veil_build_info" and n == 1 for (name, _), n in m.items())
    assert value(m, "veil_audit_up") == 1
    assert value(m, "veil_consent_store_up") == 1
    assert value(m, "veil_audit_records_total") >= 7


def test_promtool_accepts_the_scrape(mv: Veil) -> None:
    require(shutil.which("promtool") is not None, "promtool")
    mv.get("/customers/c-000002", purpose=REC)
    text = mv.metrics()
    run = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=30)
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()


def test_metrics_token_when_configured(mv: Veil) -> None:
    """Without a read token (as here) /metrics is open; the content type is Prometheus text."""
    r = mv.client.get(f"{mv.admin}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
