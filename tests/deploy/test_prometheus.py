"""Prometheus alerts, recording rules and the Grafana dashboard: they parse, they are valid PromQL
(promtool: skipped without it, failed under CI=true), the alert unit tests pass, and every metric and
label they use is one veil actually exports (src/veil/metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from veil import metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
RULES = PROM / "rules.yml"
ALERT_TESTS = PROM / "tests" / "alerts_test.yml"
FRESH_START_TESTS = PROM / "tests" / "fresh_start_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "veil-dashboard.json"

# The metrics contract (name -> labels), as documented for operators. metrics.py must match it.
CONTRACT: dict[str, tuple[str, ...]] = {
    "veil_requests_total": ("route", "purpose", "decision", "reason"),
    "veil_fields_total": ("category", "action"),
    "veil_consent_lookups_total": ("result", "cache"),
    "veil_consent_store_lookup_duration_seconds": (),
    "veil_consent_store_up": (),
    "veil_overhead_duration_seconds": ("route",),
    "veil_upstream_request_duration_seconds": ("upstream",),
    "veil_upstream_errors_total": ("upstream", "kind"),
    "veil_policy_reloads_total": ("result",),
    "veil_policy_info": ("version",),
    "veil_route_mode": ("route", "mode"),
    "veil_policy_last_reload_successful": (),
    "veil_policy_last_reload_success_timestamp_seconds": (),
    "veil_build_info": ("version", "python"),
    "veil_audit_records_total": (),
    "veil_audit_write_errors_total": (),
    "veil_audit_up": (),
    "veil_audit_ship_lag_records": (),
    "veil_audit_ship_lag_seconds": (),
    "veil_audit_ship_backlog_bytes": (),
    "veil_audit_ship_backlog_limit_bytes": (),
    "veil_audit_ship_backlog_full": (),
    "veil_audit_ship_records_total": (),
    "veil_audit_ship_batches_total": (),
    "veil_audit_ship_errors_total": ("reason",),
    "veil_audit_ship_last_success_timestamp_seconds": (),
    "veil_audit_unrecorded_total": (),
    "veil_audit_pruned_total": ("where",),
    "veil_auth_failures_total": ("listener", "reason"),
    "veil_auth_rate_limited_total": ("listener",),
    "veil_client_errors_total": ("listener", "reason"),
    # the standard process metrics (multiprocess mode adds a `worker` label: veil._process_metrics)
    "process_cpu_seconds_total": (),
    "process_resident_memory_bytes": (),
    "process_virtual_memory_bytes": (),
    "process_start_time_seconds": (),
    "process_open_fds": (),
    "process_max_fds": (),
    "veil_consent_circuit_open": (),
    "veil_consent_circuit_trips_total": (),
    "veil_consent_propagation_duration_seconds": (),
    "veil_consent_propagation_incomplete_total": (),
}
HISTOGRAMS = (
    "veil_consent_store_lookup_duration_seconds", "veil_overhead_duration_seconds",
    "veil_upstream_request_duration_seconds", "veil_consent_propagation_duration_seconds",
)
TARGET_LABELS = ("instance", "job")  # added by Prometheus at scrape time
KNOWN_VALUES = {
    ("veil_requests_total", "decision"): {"allow", "redact", "filter", "block"},
    ("veil_policy_reloads_total", "result"): {"ok", "error"},
}
# Labels an alert may print: bounded codes and target names, never anything about a subject.
PRINTABLE_LABELS = {"reason", "instance", "upstream", "listener", "job"}

METRIC_RE = re.compile(r"\b(?:veil|process)_[a-zA-Z0-9_]+")
SELECTOR_RE = re.compile(r"\b((?:veil|process)_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def exposed_names() -> dict[str, str]:
    """Every series name /metrics can expose -> its metric (from the registry, not from this file)."""
    names: dict[str, str] = {}
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            base = family.name + "_total"
            names[base] = base
        elif family.type == "histogram":
            base = family.name
            for suffix in ("_bucket", "_sum", "_count"):
                names[base + suffix] = base
        else:
            base = family.name
            names[base] = base
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "expr" in t]
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            exprs.append(query)
    return exprs


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables so promtool can parse the expression."""
    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?[a-zA-Z_]+\}?", ".*", expr)


def all_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression we ship."""
    out = [(f"alerts.yml:{r['alert']}", r["expr"]) for r in rules_of(ALERTS)]
    out += [(f"rules.yml:{r['record']}", r["expr"]) for r in rules_of(RULES)]
    out += [("veil-dashboard.json", e) for e in dashboard_exprs()]
    return out


PROMTOOL = "promtool (apt-get install prometheus)"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    require(exe is not None, PROMTOOL)  # skips here without it; fails under CI=true
    assert exe is not None
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


# --- the metric contract ------------------------------------------------------------------------


def test_registry_matches_the_documented_metrics() -> None:
    assert set(exposed_names().values()) == set(CONTRACT)


def test_histograms_follow_the_naming_convention_and_alert_thresholds_are_bucket_bounds() -> None:
    assert all(h.endswith("_duration_seconds") for h in HISTOGRAMS)
    buckets = {h._name: h._upper_bounds for h in (metrics.overhead_seconds, metrics.upstream_latency,
                                                  metrics.consent_store_latency, metrics.consent_propagation_seconds)}
    assert set(buckets) == set(HISTOGRAMS)
    alerts = {r["alert"]: r["expr"] for r in rules_of(ALERTS)}
    for alert, metric in (("VeilOverheadOverBudget", "veil_overhead_duration_seconds"),
                          ("VeilConsentStoreSlow", "veil_consent_store_lookup_duration_seconds")):
        threshold = float(re.findall(r">\s*([0-9.]+)\s*$", alerts[alert].strip())[-1])
        assert threshold in buckets[metric], f"{alert}: {threshold} is not a bucket bound of {metric}"


def test_client_error_reasons_are_the_ones_the_protocol_counts() -> None:
    """init_series creates veil_client_errors_total at 0 for metrics.CLIENT_ERROR_REASONS: those must be
    exactly the reasons veil's HTTP protocol counts, or a new one would appear only at its first error."""
    source = (ROOT / "src" / "veil" / "proxy" / "h1server.py").read_text()
    counted = set(re.findall(r'client_errors\(self\.listener, "(\w+)"\)', source))
    assert counted == set(metrics.CLIENT_ERROR_REASONS)
    server = (ROOT / "src" / "veil" / "proxy" / "server.py").read_text()
    assert set(re.findall(r'limits, "(\w+)"\)', server)) == set(metrics.CLIENT_ERROR_LISTENERS)


def test_no_created_series() -> None:
    """`_created` series are switched off (veil.metrics says why)."""
    metrics.requests("/x", "p", "allow", "ok").inc(0)
    assert "_created" not in metrics.exposition().decode()


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=lambda v: str(v)[:60])
def test_every_metric_used_is_exported_by_veil(where: str, expr: str) -> None:
    names = exposed_names()
    unknown = sorted({m for m in METRIC_RE.findall(expr) if m not in names})
    assert not unknown, f"{where}: not a veil metric: {unknown}"


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=lambda v: str(v)[:60])
def test_label_names_and_values_exist(where: str, expr: str) -> None:
    names = exposed_names()
    used = {names[m] for m in METRIC_RE.findall(expr) if m in names}
    allowed = set(TARGET_LABELS)
    for metric in used:
        allowed.update(CONTRACT[metric])
        if metric in HISTOGRAMS:
            allowed.add("le")
    for metric, matchers in SELECTOR_RE.findall(expr):
        base = names.get(metric, metric)
        own = set(CONTRACT.get(base, ())) | set(TARGET_LABELS) | ({"le"} if base in HISTOGRAMS else set())
        for label, op, value in MATCHER_RE.findall(matchers):
            assert label in own, f"{where}: {metric} has no label {label!r}"
            known = KNOWN_VALUES.get((base, label))
            if op == "=" and known is not None:
                assert value in known, f"{where}: {label}={value!r} is never exported"
    for group in GROUPING_RE.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in allowed, f"{where}: grouping by {label!r}, which none of {sorted(used)} has"


def test_the_label_checker_catches_mistakes() -> None:
    bad = 'sum by (subject) (rate(veil_requests_total{decision="blocked"}[5m]))'
    with pytest.raises(AssertionError):
        test_label_names_and_values_exist("example", bad)
    with pytest.raises(AssertionError, match="not a veil metric"):
        test_every_metric_used_is_exported_by_veil("example", "rate(veil_request_total[5m])")


# --- alerts and rules ---------------------------------------------------------------------------


def test_alert_rules_are_complete() -> None:
    alerts = {r["alert"]: r for r in rules_of(ALERTS)}
    required = {
        "VeilBlockSpike": "veil_requests_total",
        "VeilConsentStoreDown": "veil_consent_store_up",
        "VeilPolicyReloadFailed": "veil_policy_reloads_total",
        "VeilPolicyStale": "veil_policy_last_reload_successful",
        "VeilDecisionLogDown": "veil_audit_up",
        "VeilDecisionLogWriteErrors": "veil_audit_write_errors_total",
        "VeilOverheadOverBudget": "veil_overhead_duration_seconds_bucket",
        "VeilUpstreamErrors": "veil_upstream_errors_total",
        "VeilDecisionLogShippingBehind": "veil_audit_ship_lag_seconds",
        "VeilDecisionLogBacklogFull": "veil_audit_ship_backlog_full",
        "VeilDecisionLogUnrecorded": "veil_audit_unrecorded_total",
    }
    for name, metric in required.items():
        assert name in alerts, f"missing alert {name}"
        assert metric in alerts[name]["expr"]
    assert alerts["VeilConsentStoreDown"]["for"] == "1m"
    assert "[1h]" in alerts["VeilBlockSpike"]["expr"], "block spikes compare with a 1h baseline"
    assert "> 0.01" in alerts["VeilOverheadOverBudget"]["expr"]
    assert "histogram_quantile(0.99" in alerts["VeilOverheadOverBudget"]["expr"]
    assert 'result="error"' in alerts["VeilPolicyReloadFailed"]["expr"]


def test_alerts_are_actionable_and_print_no_personal_data() -> None:
    for rule in rules_of(ALERTS):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        for text in annotations.values():
            for label in re.findall(r"\$labels\.([a-zA-Z_]+)", text):
                assert label in PRINTABLE_LABELS, f"{name} prints label {label}"


def test_recording_rules_follow_the_naming_convention() -> None:
    for rule in rules_of(RULES):
        assert re.fullmatch(r"veil:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def fired(path: Path, prefix: str = "") -> set[str]:
    return {
        case["alertname"]
        for test in load_yaml(path)["tests"] if test["name"].startswith(prefix)
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }


def test_every_alert_has_a_promtool_unit_test() -> None:
    assert {r["alert"] for r in rules_of(ALERTS)} <= fired(ALERT_TESTS) | fired(FRESH_START_TESTS)


def test_every_alert_fires_from_a_fresh_start() -> None:
    """Each alert has a case in which a new instance's series begin with no history (`_`) and the
    alert fires; every counter of that instance starts at 0, as veil.metrics.init_series creates them
    (a route's overhead histogram and veil_requests_total appear with their first request)."""
    assert {r["alert"] for r in rules_of(ALERTS)} <= fired(FRESH_START_TESTS, "fresh start:")
    for test in load_yaml(FRESH_START_TESTS)["tests"]:
        if not test["name"].startswith("fresh start:"):
            continue
        new = [s for s in test["input_series"] if 'instance="veil-new:' in s["series"]]
        assert new, f"{test['name']}: no series of the new instance (veil-new)"
        for series in new:
            name = series["series"].split("{", 1)[0]
            values = series["values"].split()
            assert values[0] == "_", f"{test['name']}: {name} must begin with no history"
            first = next(v for v in values if v != "_")
            if name.endswith(("_total", "_bucket", "_count")) and name != "veil_requests_total" \
                    and "veil_overhead_duration_seconds" not in name:
                assert first.split("+")[0].split("x")[0] == "0", f"{test['name']}: {name} must start at 0"


def test_prometheus_config_loads_the_rule_files() -> None:
    config = load_yaml(PROM / "prometheus.yml")
    for name in config["rule_files"]:
        assert (PROM / name).is_file(), name
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["veil"]["metrics_path"] == "/metrics"
    assert jobs["veil"]["static_configs"][0]["targets"] == ["veil:8081"]  # the admin listener


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS), str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS), str(FRESH_START_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the dashboard ------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    dash = dashboard()
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"]
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["type"] and panel["title"], panel
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        targets = panel["targets"]
        assert targets, panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in targets), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"


def test_dashboard_covers_the_operator_questions() -> None:
    exprs = dashboard_exprs()

    def panel_with(*needles: str) -> bool:
        return any(all(n in e for n in needles) for e in exprs)

    assert panel_with("veil_requests_total", "by (purpose, decision)")
    assert panel_with("veil_requests_total", 'decision="block"', "by (reason)")
    assert panel_with("veil_fields_total", "by (category")
    for metric in ("veil_overhead_duration_seconds_bucket", "veil_upstream_request_duration_seconds_bucket"):
        assert panel_with("histogram_quantile(0.50", metric)
        assert panel_with("histogram_quantile(0.99", metric)
    assert panel_with("veil_consent_lookups_total", 'cache="hit"')
    assert panel_with("veil_policy_reloads_total")
    assert panel_with("veil_audit_up")
    assert panel_with("veil_audit_write_errors_total")
    assert panel_with("veil_audit_ship_lag_seconds")
    assert panel_with("veil_audit_ship_backlog_bytes") and panel_with("veil_audit_ship_backlog_limit_bytes")
    assert panel_with("veil_audit_ship_errors_total", "by (reason)")
    assert panel_with("veil_audit_ship_last_success_timestamp_seconds")


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    require(shutil.which("promtool") is not None, PROMTOOL)
    rules = [
        {"record": f"veil:dashboard:q{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())
        if not expr.startswith("label_values(")  # a Grafana function, not PromQL
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
