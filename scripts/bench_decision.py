"""Benchmark the decision core on the example policy set (not a test).

    .venv/bin/python scripts/bench_decision.py [--rounds N]

Prints median microseconds for: admit (route match, key digest, purpose, rule), consent_reason (store
state given), admit + consent_reason together, a consent lookup of a cached subject (the SQLite store
behind its cache, as `veil serve` opens it), and plan.apply on a ~1 KB demo profile
(veil.demo.data.generate_customers) for each purpose of GET /customers/{id}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.consent.store import ConsentState, Status
from veil.demo.data import generate_customers, serialize
from veil.policy import load_policy
from veil.policy.decision import Admitted, admit, consent_reason

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def median_us(fn: Callable[[], object], rounds: int, inner: int = 200) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    policy = load_policy([ROOT / "policies"])
    key = ["demo-storefront-key"]
    purpose = ["personalize.recommendations"]
    given = datetime(2026, 1, 1, tzinfo=UTC)
    state = {"personalization": ConsentState("personalization", Status.GIVEN, given, 2)}
    ad = admit(policy, "GET", "/customers/c-000042", key, purpose)
    assert isinstance(ad, Admitted), ad
    rule = ad.rule

    def decide() -> object:
        a = admit(policy, "GET", "/customers/c-000042", key, purpose)
        assert isinstance(a, Admitted)
        return consent_reason(a.rule, state, NOW)

    calib: dict[str, int] = {"a": 1}
    results = {
        "(calibration: one dict.get)": median_us(lambda: calib.get("a"), args.rounds),
        "admit": median_us(lambda: admit(policy, "GET", "/customers/c-000042", key, purpose), args.rounds),
        "admit (list route)": median_us(lambda: admit(policy, "GET", "/customers", key, purpose),
                                        args.rounds),
        "consent_reason": median_us(lambda: consent_reason(rule, state, NOW), args.rounds),
        "admit + consent_reason": median_us(decide, args.rounds),
    }
    results["consent lookup, cached subject"] = median_us(_cached_lookup(), args.rounds)
    profile = generate_customers(1)[0]
    print(f"profile: {len(serialize(profile))} bytes")
    for name, r in policy.routes[0].rules.items():
        for _ in range(50):  # warm up: the plan compiles closures for the shapes it meets
            r.plan.apply(copy.deepcopy(profile))
        docs = [copy.deepcopy(profile) for _ in range(args.rounds * 20)]
        it = iter(docs)
        results[f"plan.apply {name}"] = median_us(lambda r=r, it=it: r.plan.apply(next(it)), args.rounds, 20)
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.2f} µs")


def _cached_lookup() -> Callable[[], object]:
    """`store.current([subject], keys)` on a warm cache. A hit never awaits, so the coroutine is driven
    by hand: the figure is the lookup, not the event loop."""
    import asyncio
    import os
    import tempfile

    from veil.consent.open import open_store
    from veil.consent.store import Action, ConsentEvent, SubjectHasher
    from veil.keys import KeyRing

    hasher = SubjectHasher(KeyRing.single(os.urandom(32)))
    db = Path(tempfile.mkdtemp()) / "consent.db"

    async def setup() -> object:
        store = await open_store(f"sqlite:///{db}", hasher, cache_ttl=3600, cache_size=100_000)
        await store.record([ConsentEvent("c-000042", "personalization", Action.GIVEN, NOW, notice_version=3)])
        await store.current(["c-000042"], ("personalization",))
        return store

    store: Any = asyncio.run(setup())
    keys = ("personalization",)

    def lookup() -> object:
        coro = store.current(["c-000042"], keys)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the cached lookup awaited: not a cache hit")

    return lookup


if __name__ == "__main__":
    main()
