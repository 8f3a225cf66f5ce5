"""Benchmark discovery's work per response in process (not a test).

    .venv/bin/python scripts/bench_discovery.py [--rounds N]

Prints median microseconds per response of `Discovery.observe` (JSON parse, shape walk, detectors;
what the proxy runs after a sampled report-only response has been sent) for a ~1 KB demo profile
and for an order of the example orders API, in three states: the first responses of a route (every
value through the detectors), steady state (well-known paths: every 8th value), and the walk alone
(detectors off). Also each detector's cost per value for a positive and a plain string.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from veil.demo.data import generate_customers
from veil.discovery.detectors import Detect
from veil.discovery.recorder import Discovery, Settings
from veil.redact.reading import decode_content, is_json_type

ROOT = Path(__file__).resolve().parents[1]
JSON = [("content-type", "application/json")]


def _orders() -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("orders_app", ROOT / "examples" / "orders-api" / "app.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.build()[1].values())


def per_call(fn: Callable[[], None], n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


class _Off(Detect):
    def __call__(self, value: Any) -> str | None:
        return None


def _fresh(detect: Detect | None = None) -> Discovery:
    d = Discovery(Settings(True, sample=1.0), decode=decode_content, is_json=is_json_type)
    if detect is not None:
        d.observer.detect = detect
    return d


def _run(d: Discovery, bodies: list[bytes]) -> None:
    for b in bodies:
        d.observe("GET", "/r/{id}", "p", 200, JSON, b)


def measure(label: str, docs: list[Any], rounds: int) -> None:
    bodies = [orjson.dumps(d) for d in docs]
    size = statistics.median(len(b) for b in bodies)
    n = len(bodies)
    first = per_call(lambda: _run(_fresh(), bodies), n, rounds)  # a fresh state each round
    steady_d = _fresh()
    for _ in range(5):
        _run(steady_d, bodies)
    steady = per_call(lambda: _run(steady_d, bodies), n, rounds)
    walk_d = _fresh(_Off())
    walk = per_call(lambda: _run(walk_d, bodies), n, rounds)
    parse = per_call(lambda: [orjson.loads(b) for b in bodies] and None, n, rounds)
    print(f"{label} ({size:.0f} B): first responses {first:.0f} us, steady {steady:.0f} us, "
          f"walk only {walk:.0f} us, of which orjson parse {parse:.0f} us")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=7)
    rounds = p.parse_args().rounds
    measure("demo profile", generate_customers(200), rounds)
    measure("orders API order", _orders(), rounds)
    det = Detect()
    for value in ("jane.roe@example.org", "+44 20 7946 0958", "(415) 555-2671", "DE89370400440532013000",
                  "4111 1111 1111 1111", "536-90-4399", "1988-01-03", "203.0.113.7", "SW1A 1AA", "Via Roma 57",
                  "c-000123", "2024-03-13"):
        us = per_call(lambda v=value: [det(v) for _ in range(1000)] and None, 1000, rounds)  # type: ignore[misc]
        print(f"  detect {value!r:28} -> {det(value)!s:12} {us:6.1f} us")


if __name__ == "__main__":
    main()
