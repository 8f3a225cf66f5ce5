"""Prometheus metrics. Labels are bounded: route templates, purpose names, decisions, reason codes,
category names and actions. Never raw paths, subject ids, keys or field values.

Several worker processes: set PROMETHEUS_MULTIPROC_DIR before start (`veil serve --workers N` does)
and `/metrics` aggregates with prometheus-client's multiprocess collector.
"""

from __future__ import annotations

import os
import platform
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from veil import __version__

# Sub-millisecond to seconds.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)

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
    "veil_consent_store_latency_seconds", "Latency of one batched consent store lookup.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
consent_store_up = Gauge(
    "veil_consent_store_up", "1 when the consent store answered its last check.",
    registry=REGISTRY, multiprocess_mode="min",
)
overhead_seconds = Histogram(
    "veil_overhead_seconds", "Time spent in veil per request, excluding the upstream.",
    ["route"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
upstream_latency = Histogram(
    "veil_upstream_latency_seconds", "Upstream response time (to the end of the body).",
    ["upstream"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
upstream_errors_total = Counter(
    "veil_upstream_errors_total", "Upstream failures by kind.",
    ["upstream", "kind"], registry=REGISTRY,
)
policy_reloads_total = Counter(
    "veil_policy_reloads_total", "Policy reloads by result.", ["result"], registry=REGISTRY,
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


def set_route_modes(modes: dict[str, str]) -> None:
    """The effective mode of each route template (after a policy or config reload)."""
    route_mode.clear()
    for route, mode in sorted(modes.items()):
        route_mode.labels(route, mode).set(1)
        route_mode.labels(route, "report-only" if mode == "enforce" else "enforce").set(0)


def exposition() -> bytes:
    """The text exposition for /metrics (aggregated across workers in multiprocess mode)."""
    tally.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def set_policy_version(version: str) -> None:
    policy_info.clear()
    policy_info.labels(version).set(1)


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
