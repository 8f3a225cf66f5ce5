"""What shipping the decision log to PostgreSQL costs, and how fast it goes (not a test).

    .venv/bin/python scripts/bench_ship.py [--rounds 6] [--duration 10] [--connections 16]
        [--url postgresql://postgres@127.0.0.1:5432/test] [--catchup 200000]

1. The request path: two veils side by side, the `veil bench` row 3 (enforce a 1 KB profile) without
   shipping and row 3s with `audit.ship` to PostgreSQL (its own schema), the same fast upstream, wrk
   with 16 connections. Rounds are interleaved (A B, B A, A B, ...) so that drift on this shared
   machine touches both alike; medians of requests/s, p50, p99 and CPU per request, and the ratio.
2. Lag under that load: during row 3s's rounds its /metrics is sampled every 0.25 s
   (veil_audit_ship_lag_records, veil_audit_ship_lag_seconds); records shipped per second over the
   round (veil_audit_ship_records_total) against decisions made.
3. Catch-up throughput: a local log of --catchup records (written offline) shipped by one Shipper,
   as `veil audit ship --once` would after an outage: records/s.

The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import asyncpg

from veil.audit.log import AuditLog
from veil.audit.ship import Shipper, StoreLink
from veil.bench import VeilCase, loadgen, servers
from veil.bench.veil_factory import factory
from veil.keys import KeyRing


def metric(admin: str, name: str) -> float:
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def sampler(admin: str, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            out.append((metric(admin, "veil_audit_ship_lag_records"), metric(admin, "veil_audit_ship_lag_seconds")))
        stop.wait(0.25)


async def catchup(url: str, n: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="veil-ship-catchup-"))
    ring = KeyRing.single(os.urandom(32), "k1")
    log = AuditLog(tmp / "decisions.log", ring, flush_interval=0, fsync="never")
    await log.start()
    rec = {"time": "", "caller": "storefront", "purpose": "personalize.recommendations", "basis": "consent",
           "route": "GET /customers/{id}", "decision": "redact", "reason": "ok",
           "fields": {"removed": ["address", "phone"], "dropped": ["health"], "transformed": ["email"]},
           "categories": ["contact", "health", "location.precise"], "consent": {"personalization": "given"},
           "policy": "77f51c7d4038a5c4", "rules": ["policies/routes.veil:6:3"]}
    for _ in range(n):
        await log.append({**rec, "id": os.urandom(12).hex(), "subject": os.urandom(16).hex(),
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
    await log.close()
    link = StoreLink(url, timeout=60, partition="month")
    shipper = Shipper(link, log.path, ring, replica="catchup", chain_id="main", batch_records=1000)
    await link.get()
    t = time.perf_counter()
    while await shipper.step():
        pass
    dt = time.perf_counter() - t
    shipper.close()
    await link.close()
    shutil.rmtree(tmp)
    return log.seq / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--url", default=os.environ.get("VEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--catchup", type=int, default=200_000)
    args = ap.parse_args()
    schema = f"veil_bench_ship_{os.getpid()}"
    os.environ["VEIL_BENCH_PG_URL"] = f"{args.url}?schema={schema}"
    tool = loadgen.choose_tool("auto")
    try:
        with tempfile.TemporaryDirectory(prefix="veil-bench-ship-") as tmp, servers.start_fast_upstream() as up:
            profile = str(servers.fast_profile()["id"])
            veils = {}
            for variant in ("enforce_small", "enforce_small_ship"):
                d = Path(tmp) / variant
                d.mkdir()
                aport = servers.free_port()
                made = factory(VeilCase(variant, up.url, d, servers.free_port(), aport, profile, ()))
                srv = servers.start_veil(made.config_path, env=made.env)
                veils[variant] = (srv, made, f"http://127.0.0.1:{aport}")
            results: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in veils}
            lag: list[tuple[float, float]] = []
            shipped_rates: list[tuple[float, float]] = []
            for r in range(args.rounds):
                order = list(veils) if r % 2 == 0 else list(reversed(veils))
                for variant in order:
                    srv, made, admin = veils[variant]
                    spec = loadgen.LoadSpec(srv.url + made.path, args.duration, args.connections, made.headers, 1.0)
                    pids = srv.pids()
                    box: dict[str, float] = {}

                    def start(pids: list[int] = pids, box: dict[str, float] = box,
                              admin: str = admin, variant: str = variant) -> None:
                        box["cpu"] = servers.cpu_seconds(pids)
                        if variant == "enforce_small_ship":
                            box["shipped"] = metric(admin, "veil_audit_ship_records_total")
                            box["t"] = time.monotonic()

                    stop = threading.Event()
                    th = None
                    if variant == "enforce_small_ship":
                        th = threading.Thread(target=sampler, args=(admin, stop, lag))
                        th.start()
                    res = loadgen.run_load(spec, tool, start)
                    cpu = servers.cpu_seconds(pids) - box["cpu"]
                    if th is not None:
                        shipped = metric(admin, "veil_audit_ship_records_total") - box["shipped"]
                        shipped_rates.append((shipped / (time.monotonic() - box["t"]), res.rps))
                        stop.set()
                        th.join()
                    results[variant].append((res.rps, res.p50_ms, res.p99_ms, cpu / res.requests * 1e6))
                    print(f"  round {r + 1} {variant}: {res.rps:,.0f} req/s p50 {res.p50_ms:.2f} "
                          f"p99 {res.p99_ms:.2f} ms, {res.non_2xx} non-2xx", flush=True)
            print(f"\n{tool}, {args.connections} connections, {args.rounds} x {args.duration:g} s, interleaved")
            med = {}
            for variant, rows in results.items():
                rps = [x[0] for x in rows]
                med[variant] = statistics.median(rps)
                print(f"{variant:22s} req/s {statistics.median(rps):>7,.0f} ({min(rps):,.0f}-{max(rps):,.0f})  "
                      f"p50 {statistics.median(x[1] for x in rows):.2f} ms  "
                      f"p99 {statistics.median(x[2] for x in rows):.2f} ms  "
                      f"CPU {statistics.median(x[3] for x in rows):,.0f} us/req")
            print(f"ratio shipped / not: {med['enforce_small_ship'] / med['enforce_small']:.3f}; per round pairs: "
                  + ", ".join(f"{b[0] / a[0]:.2f}" for a, b in zip(results['enforce_small'],
                                                                      results['enforce_small_ship'], strict=True)))
            if lag:
                recs = sorted(x[0] for x in lag)
                secs = sorted(x[1] for x in lag)
                print(f"lag under load ({len(lag)} samples): records median {statistics.median(recs):.0f}, "
                      f"p95 {recs[int(0.95 * (len(recs) - 1))]:.0f}, max {recs[-1]:.0f}; seconds median "
                      f"{statistics.median(secs):.2f}, p95 {secs[int(0.95 * (len(secs) - 1))]:.2f}, max {secs[-1]:.2f}")
            print("shipped records/s vs requests/s per round: "
                  + ", ".join(f"{s:,.0f}/{q:,.0f}" for s, q in shipped_rates))
            for srv, _, _ in veils.values():
                srv.stop()
        if args.catchup:
            rate = asyncio.run(catchup(f"{args.url}?schema={schema}", args.catchup))
            print(f"catch-up: {args.catchup:,} records shipped at {rate:,.0f} records/s (one shipper)")
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(args.url)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()

        asyncio.run(drop())
        print(f"schema {schema} dropped")


if __name__ == "__main__":
    main()
