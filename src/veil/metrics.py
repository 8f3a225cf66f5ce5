"""Prometheus metrics. Labels are bounded: route templates, purpose names, decisions, reason codes,
category names and actions. Never raw paths, subject ids, keys or field values.

Several worker processes: set PROMETHEUS_MULTIPROC_DIR before start (`veil serve --workers N` does)
and `/metrics` aggregates with prometheus-client's multiprocess collector.

Error counters exist from the start: `init_series` creates every known label combination at 0 (the
upstream names come from the config, the rest are fixed codes), so `increase(...) > 0` alerts fire on
the first failure after a restart instead of the second. No `_created` series: prometheus-client
would add one gauge per labelled child in the text format, doubling the series count, and only
OpenMetrics/protobuf scrapes with created-timestamp ingestion could use them; multiprocess mode never
exports them, so with them a pod's series would differ between `workers: 1` and `workers: 2`.
Latency histograms are `*_duration_seconds`, with buckets chosen from measured latencies (below).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from veil import __version__
from veil._process_metrics import WorkerProcessCollector

disable_created_metrics()  # type: ignore[no-untyped-call]

# Buckets from latencies measured on loopback (2-core shared machine, wrk, the demo upstream, SQLite
# consent; figures in docs/metrics.md): veil's own time for a profile was 0.3-0.8 ms at p50 under
# light load and up to 37 ms at p99 when saturated, for a 1 MB list 18-230 ms; a consent store round
# trip 0.4 ms at p50 (one subject) to 20-230 ms (a batch of 1,000 under load); upstream calls from
# 0.4 ms (loopback profile) to the read timeout (10 s by default). The alert thresholds (0.01 for
# overhead, 0.05 for consent lookups) are bucket bounds, so histogram_quantile is exact there.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONSENT_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REGISTRY = CollectorRegistry(auto_describe=True)

requests_total = Counter(
    "veil_requests_total", "Requests decided by veil.",
    ["route", "purpose", "decision", "reason"], registry=REGISTRY,
)
fields_total = Counter(
    "veil_fields_total", "Response fields removed, dropped, transformed or suppressed, by data category.",
    ["category", "action"], registry=REGISTRY,
)
consent_lookups_total = Counter(
    "veil_consent_lookups_total", "Consent lookups by result and cache outcome.",
    ["result", "cache"], registry=REGISTRY,
)
consent_store_latency = Histogram(
    "veil_consent_store_lookup_duration_seconds", "Duration of one batched consent store lookup (cache misses).",
    buckets=CONSENT_BUCKETS, registry=REGISTRY,
)
consent_store_up = Gauge(
    "veil_consent_store_up", "1 when the consent store answered its last check.",
    registry=REGISTRY, multiprocess_mode="min",
)
overhead_seconds = Histogram(
    "veil_overhead_duration_seconds", "Time spent in veil per request, excluding the upstream call.",
    ["route"], buckets=OVERHEAD_BUCKETS, registry=REGISTRY,
)
upstream_latency = Histogram(
    "veil_upstream_request_duration_seconds", "Duration of one upstream call (to the end of the body).",
    ["upstream"], buckets=UPSTREAM_BUCKETS, registry=REGISTRY,
)
upstream_errors_total = Counter(
    "veil_upstream_errors_total", "Upstream failures by kind.",
    ["upstream", "kind"], registry=REGISTRY,
)
policy_reloads_total = Counter(
    "veil_policy_reloads_total", "Policy reloads by result.", ["result"], registry=REGISTRY,
)
policy_last_reload_successful = Gauge(
    "veil_policy_last_reload_successful",
    "1 when the last policy load (start-up, file change, SIGHUP or POST /reload) succeeded, else 0.",
    registry=REGISTRY, multiprocess_mode="min",
)
policy_last_reload_success_timestamp = Gauge(
    "veil_policy_last_reload_success_timestamp_seconds",
    "When the policy in force was last loaded successfully (Unix time).",
    registry=REGISTRY, multiprocess_mode="min",
)
policy_info = Gauge(
    "veil_policy_info", "The active policy version (hash).", ["version"], registry=REGISTRY,
    multiprocess_mode="max",
)
build_info = Gauge(
    "veil_build_info", "veil build information.", ["version", "python"], registry=REGISTRY,
    multiprocess_mode="max",
)
audit_records_total = Counter(
    "veil_audit_records_total", "Decision log records written.", registry=REGISTRY,
)
audit_write_errors_total = Counter(
    "veil_audit_write_errors_total", "Decision log write failures.", registry=REGISTRY,
)
audit_up = Gauge(
    "veil_audit_up", "1 when the decision log is writable.", registry=REGISTRY, multiprocess_mode="min",
)
# Shipping the decision log to the store (veil.audit.ship). Gauges are summed (or maxed) over the
# chains this process ships; across worker processes by the multiprocess mode.
audit_ship_lag_records = Gauge(
    "veil_audit_ship_lag_records", "Decision-log records written locally and not yet in the store.",
    registry=REGISTRY, multiprocess_mode="livesum",
)
audit_ship_lag_seconds = Gauge(
    "veil_audit_ship_lag_seconds", "Age of the oldest decision-log record not yet in the store (0: none).",
    registry=REGISTRY, multiprocess_mode="livemax",
)
audit_ship_backlog_bytes = Gauge(
    "veil_audit_ship_backlog_bytes", "Bytes of local decision log not yet shipped to the store.",
    registry=REGISTRY, multiprocess_mode="livesum",
)
audit_ship_backlog_limit_bytes = Gauge(
    "veil_audit_ship_backlog_limit_bytes", "The configured bound on unshipped bytes (audit.ship.max_backlog).",
    registry=REGISTRY, multiprocess_mode="livesum",
)
audit_ship_backlog_full = Gauge(
    "veil_audit_ship_backlog_full", "1 while the unshipped backlog is over its bound (audit.ship.on_full applies).",
    registry=REGISTRY, multiprocess_mode="livemax",
)
audit_ship_records_total = Counter(
    "veil_audit_ship_records_total", "Decision-log records shipped to the store.", registry=REGISTRY,
)
audit_ship_batches_total = Counter(
    "veil_audit_ship_batches_total", "Batches of decision-log records committed to the store.", registry=REGISTRY,
)
audit_ship_errors_total = Counter(
    "veil_audit_ship_errors_total", "Failed shipping attempts by reason.", ["reason"], registry=REGISTRY,
)
audit_ship_last_success = Gauge(
    "veil_audit_ship_last_success_timestamp_seconds",
    "When the store last had every record this process had written (a batch committed, or nothing to ship).",
    registry=REGISTRY, multiprocess_mode="livemin",
)
audit_unrecorded_total = Counter(
    "veil_audit_unrecorded_total",
    "Decisions served but not recorded because the unshipped backlog was full (audit.ship.on_full: serve).",
    registry=REGISTRY,
)
audit_pruned_total = Counter(
    "veil_audit_pruned_total", "Decision-log records removed by retention or after shipping, by where.",
    ["where"], registry=REGISTRY,
)

auth_failures_total = Counter(
    "veil_auth_failures_total", "Failed caller or admin authentications.", ["listener", "reason"],
    registry=REGISTRY,
)
auth_rate_limited_total = Counter(
    "veil_auth_rate_limited_total", "Requests refused because their address failed authentication too often.",
    ["listener"], registry=REGISTRY,
)

client_errors_total = Counter(
    "veil_client_errors_total",
    "Client connections cut off by veil's HTTP protocol: a request head too slow (header_timeout) or too "
    "large (header_too_large), an unread request body too slow (body_discard_timeout).",
    ["listener", "reason"], registry=REGISTRY,
)

route_mode = Gauge(
    "veil_route_mode", "1 for the effective mode of each policy route (enforce or report-only; the route's "
    "own `mode`, else the config's).", ["route", "mode"], registry=REGISTRY, multiprocess_mode="max",
)

build_info.labels(__version__, platform.python_version()).set(1)
ProcessCollector(registry=REGISTRY)  # process_*: this process (multiprocess mode: see exposition)

# Label values of the error counters other than upstream names (those come from the config).
AUTH_FAILURE_REASONS = {"proxy": ("unknown_key", "no_key"), "admin": ("bad_token", "no_token")}
RATE_LIMITED_LISTENERS = ("proxy",)
RELOAD_RESULTS = ("ok", "error")
# veil_client_errors_total: the listeners veil's HTTP protocol serves (veil.proxy.server) and why it cut
# a connection off (veil.proxy.h1server).
CLIENT_ERROR_LISTENERS = ("proxy", "admin")
CLIENT_ERROR_REASONS = ("header_timeout", "header_too_large", "body_discard_timeout")


# Why a shipping attempt failed (veil.audit.ship; the store's StoreUnavailable.reason and the shipper's own).
AUDIT_SHIP_ERROR_REASONS = ("unreachable", "timeout", "schema_missing", "rejected", "chain_moved", "local_invalid")


def init_ship_series() -> None:
    """The decision-log shipping counters at 0 for every reason (so `increase()` sees the first error
    after a start), where shipping runs (a veil with audit.ship, `veil audit ship`)."""
    for reason in AUDIT_SHIP_ERROR_REASONS:
        audit_ship_errors_total.labels(reason)
    for where in ("local", "store"):
        audit_pruned_total.labels(where)


def init_series(upstreams: Iterable[str], upstream_error_kinds: Iterable[str]) -> None:
    """Create every known label combination of the error counters at 0 (in multiprocess mode each
    worker writes them to its file, so the aggregate has them too), and each upstream's call-duration
    histogram. Bounded: upstreams x kinds plus a few fixed codes. Not `veil_requests_total`: its
    combinations are routes x purposes x reasons (thousands), and the alert on it is rate-based."""
    for result in RELOAD_RESULTS:
        policy_reloads_total.labels(result)
    kinds = tuple(upstream_error_kinds)
    for name in upstreams:
        for kind in kinds:
            upstream_errors_total.labels(name, kind)
        # the denominator of the upstream error ratio: without it an upstream that is down from the
        # start has no `_count` series and `errors / (calls + errors)` is empty (the alert never fires)
        upstream_seconds(name)
    for listener, reasons in AUTH_FAILURE_REASONS.items():
        for reason in reasons:
            auth_failures_total.labels(listener, reason)
    for listener in RATE_LIMITED_LISTENERS:
        auth_rate_limited_total.labels(listener)
    for listener in CLIENT_ERROR_LISTENERS:
        for reason in CLIENT_ERROR_REASONS:
            client_errors(listener, reason)


_routes_with_mode: set[str] = set()


def set_route_modes(modes: dict[str, str]) -> None:
    """The effective mode of each route template (after a policy or config reload). A route no longer
    in the policy is set to 0 in both modes (clear() is not implemented in multiprocess mode)."""
    for gone in _routes_with_mode - set(modes):
        route_mode.labels(gone, "enforce").set(0)
        route_mode.labels(gone, "report-only").set(0)
    _routes_with_mode.clear()
    _routes_with_mode.update(modes)
    for route, mode in sorted(modes.items()):
        route_mode.labels(route, mode).set(1)
        route_mode.labels(route, "report-only" if mode == "enforce" else "enforce").set(0)


def exposition() -> bytes:
    """The text exposition for /metrics (aggregated across workers in multiprocess mode, with the
    process_* metrics of every worker, labelled by worker)."""
    tally.flush()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(WorkerProcessCollector(directory))
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def set_policy_version(version: str) -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # not implemented there (it warns): the policy
        policy_info.clear()  # holder sets a replaced version to 0 instead
    policy_info.labels(version).set(1)


def policy_loaded(ok: bool) -> None:
    """A policy load finished: the last-reload gauges (Prometheus' own `*_last_reload_*` convention)."""
    policy_last_reload_successful.set(1 if ok else 0)
    if ok:
        policy_last_reload_success_timestamp.set(time.time())


M = TypeVar("M", Counter, Histogram)


class Children(Generic[M]):
    """Label children of one metric, looked up once and reused (`labels()` costs a lock and a
    tuple build per call; the request path calls it several times per request). Bounded."""

    def __init__(self, metric: M, limit: int = 10_000) -> None:
        self._metric: M = metric
        self._limit = limit
        self._cache: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._cache.get(labels)
        if child is None:
            child = self._metric.labels(*labels)
            if len(self._cache) < self._limit:
                self._cache[labels] = child
        return child

    def clear(self) -> None:
        self._cache.clear()


requests = Children(requests_total)
fields = Children(fields_total)
overhead = Children(overhead_seconds)
upstream_seconds = Children(upstream_latency)
client_errors = Children(client_errors_total)


class Tally:
    """Counter increments from the request path, summed in plain dicts and added to the Prometheus
    counters in one go by `flush`: every FLUSH_INTERVAL (a runtime task), before every /metrics
    exposition of this process, and at shutdown. A locked `inc` costs about 1 µs per labelled child
    and a request makes about ten; a dict update costs a tenth of that. Event loop thread only.

    Other workers' counts reach a multiprocess scrape at their next flush: at most FLUSH_INTERVAL late.
    """

    FLUSH_INTERVAL = 0.5

    def __init__(self) -> None:
        self._one: dict[Counter, float] = {}
        self._many: dict[tuple[tuple[Counter, int], ...], int] = {}

    def inc(self, child: Counter, amount: float = 1) -> None:
        one = self._one
        one[child] = one.get(child, 0) + amount

    def inc_all(self, increments: tuple[tuple[Counter, int], ...]) -> None:
        """Several (child, amount) increments that always occur together (a cached field summary)."""
        if increments:
            many = self._many
            many[increments] = many.get(increments, 0) + 1

    def flush(self) -> None:
        one, many = self._one, self._many
        self._one, self._many = {}, {}
        for child, amount in one.items():
            child.inc(amount)
        for increments, times in many.items():
            for child, n in increments:
                child.inc(n * times)


tally = Tally()

# -- consent store availability and propagation (issue 21) ---------------------------------------------
consent_circuit_open = Gauge(
    "veil_consent_circuit_open", "1 while the consent store's circuit is open (requests needing consent fail at once).",
    registry=REGISTRY, multiprocess_mode="max",
)
consent_circuit_trips_total = Counter(
    "veil_consent_circuit_trips_total", "Times the consent store's circuit opened.", registry=REGISTRY,
)
consent_propagation_seconds = Histogram(
    "veil_consent_propagation_duration_seconds",
    "From a consent write's commit to the acknowledgement of every worker and live replica (or the wait's end).",
    buckets=CONSENT_BUCKETS, registry=REGISTRY,
)
consent_propagation_incomplete_total = Counter(
    "veil_consent_propagation_incomplete_total",
    "Consent writes answered before every worker and live replica acknowledged (HTTP 202).", registry=REGISTRY,
)
