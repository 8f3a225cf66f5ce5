"""Benchmark the compiled field plan against an orjson round trip of the same bytes.

    .venv/bin/python scripts/bench_redact.py [--runs 2000]

Reports the median time of `plan.apply` (on a fresh parse of the body each run, so in-place edits
do not leak between runs; the parse is not timed) for a ~1 KB customer profile and for a
1,000-item list (~1 MB), each with the ratio to `orjson.loads + orjson.dumps` of the body.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import orjson

from veil.redact import Action, FieldPlan, FieldRule, compile_plan, parse_path
from veil.redact import transforms as tr

KEY = bytes(range(32))


def profile(i: int) -> dict[str, Any]:
    return {
        "id": f"cus_{i:08d}",
        "email": f"person{i}@example.com",
        "phone": f"+1-415-555-{i % 10000:04d}",
        "name": {"first": "Ada", "last": f"Lovelace{i}"},
        "birth_date": "1985-12-10",
        "ssn": "123-45-6789",
        "address": {"street": f"{i} Market St", "city": "San Francisco", "zip": "94107", "country": "US"},
        "preferences": {"newsletter": True, "language": "en", "categories": ["books", "garden", "music"]},
        "loyalty": {"tier": "gold", "points": 1234 + i, "since": "2019-04-01"},
        "purchase_history": [
            {"sku": f"SKU-{i}-{j}", "price": 19.99 + j, "qty": 1 + j % 3, "at": "2026-01-0{j}T10:00:00Z",
             "store": "sf-01"}
            for j in range(1, 4)
        ],
        "devices": [{"kind": "ios", "push_token": "tok" * 8}],
        "internal": {"risk_score": 0.12, "notes": "VIP; call before shipping"},
        "created_at": "2018-03-04T05:06:07Z",
        "last_ip": "203.0.113.77",
    }


def rules(prefix: str) -> list[FieldRule]:
    def r(path: str, action: Action, t: tr.Transform | None = None) -> FieldRule:
        return FieldRule(parse_path(prefix + path), action, t, rule_id=len(out))

    out: list[FieldRule] = []
    for p in ["id", "name.first", "preferences", "loyalty.tier", "loyalty.points", "address.city",
              "address.country", "purchase_history[*].sku", "purchase_history[*].qty", "created_at"]:
        out.append(r(p, Action.KEEP))
    out.append(r("preferences.newsletter", Action.DROP))
    out.append(r("ssn", Action.DROP))
    out.append(r("email", Action.TRANSFORM, tr.hash(KEY)))
    out.append(r("phone", Action.TRANSFORM, tr.mask(last=4)))
    out.append(r("address.zip", Action.TRANSFORM, tr.prefix(3)))
    return out


def bench(label: str, body: bytes, plan: FieldPlan, runs: int) -> tuple[float, float]:
    """Median apply and median orjson round trip, measured interleaved (fair on a busy machine)."""
    applies, trips = [], []
    for _ in range(runs):
        doc = orjson.loads(body)
        t0 = time.perf_counter_ns()
        plan.apply(doc)
        t1 = time.perf_counter_ns()
        orjson.dumps(orjson.loads(body))
        t2 = time.perf_counter_ns()
        applies.append(t1 - t0)
        trips.append(t2 - t1)
    apply, trip = statistics.median(applies) / 1000, statistics.median(trips) / 1000
    best = min(applies) / min(trips)
    print(f"{label}: {len(body) / 1024:7.1f} KiB  apply {apply:9.1f} µs   "
          f"orjson loads+dumps {trip:9.1f} µs   ratio {apply / trip:.2f} (of minima: {best:.2f})")
    return apply, trip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    one = orjson.dumps(profile(1))
    bench("profile   ", one, compile_plan(rules("")), args.runs)
    many = orjson.dumps({"items": [profile(i) for i in range(1000)], "next": None})
    bench("1000 items", many, compile_plan(rules("items[*].")), max(20, args.runs // 40))


if __name__ == "__main__":
    main()
