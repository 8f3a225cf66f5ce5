"""The decision-log store at fleet scale (not a test): 10 million records from 20 replicas, then the
per-subject report and a whole-chain verification timed against it.

    .venv/bin/python scripts/audit_store_bench.py [--url postgresql://postgres@127.0.0.1/test]
        [--records 10000000] [--replicas 20] [--subjects 1000000] [--keep]

Everything lives in its own schema (`veil_audit_bench_<pid>`), dropped at the end unless --keep.
Records are real chains (start record, MACs, links, periodic checkpoints) over the last 13 months,
written the way the shipper writes them (COPY in batches, one transaction each): decision records of
a realistic shape (about 800 bytes), each naming one subject, 5% of them list responses naming 20
subjects; subjects drawn with a skew (a few customers are in many records, most in a few).

Measured: load time, table and index sizes, then for 200 subjects (a spread of record counts) the
wall time of `store_report` (index lookup, every record's MAC, the link to its predecessor, the
report rows) and of the bare index query, with EXPLAIN (ANALYZE, BUFFERS) of one; then
`verify_store` on one chain (records/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from veil.audit._chain import canonical, seal, sign
from veil.audit.report import pseudonym
from veil.audit.store import AuditStore
from veil.audit.store_report import store_report
from veil.audit.store_verify import _verify_chain
from veil.keys import KeyRing

CATS = ["behaviour", "contact", "demographics", "health", "location.precise", "payment", "uncategorized"]
PURPOSES = [("storefront", "personalize.recommendations", "consent"), ("warehouse", "orders.fulfillment", "contract"),
            ("ad_partner", "advertising.targeted", "consent"),
            ("analytics", "analytics.segments", "legitimate_interests")]
BATCH = 20_000


def subject_index(rng: random.Random, n: int) -> int:
    """Skewed: about 20% of records name the top 1% of subjects."""
    if rng.random() < 0.2:
        return rng.randrange(max(1, n // 100))
    return rng.randrange(n)


class Chain:
    def __init__(self, no: int, replica: str, ring: KeyRing, start: datetime) -> None:
        self.no, self.replica, self.ring = no, replica, ring
        self.seq, self.prev, self.since = 0, "", 0
        self.genesis = ""
        self.at = start
        self.prev_at: datetime | None = None

    def seal(self, rec: dict[str, Any]) -> tuple[int, str]:
        self.seq += 1
        body = {**rec, "seq": self.seq, "prev": self.prev, "kid": self.ring.current_id}
        mac = sign(self.ring.current, canonical(body))
        body["mac"] = mac
        self.prev = mac
        if self.seq == 1:
            self.genesis = mac
        return self.seq, canonical(body).decode()


def iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


async def reconnect(url: str) -> Any:
    """The shared server is sometimes restarted by others' tests: wait for it."""
    for _ in range(600):
        try:
            return await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(1)
    raise RuntimeError("the server did not come back")


async def copy_retrying(conn: Any, url: str, schema: str, rows: list[Any]) -> Any:
    """COPY one batch (one transaction); after a lost connection, reconnect and COPY it again (a
    batch the server committed before the connection went is found by its primary key)."""
    while True:
        try:
            await conn.copy_records_to_table("audit_records", schema_name=schema,
                                             columns=("chain_no", "seq", "at", "prev_at", "kind", "subjects", "line"),
                                             records=rows)
            return conn
        except asyncpg.UniqueViolationError:
            return conn
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError) as exc:
            print(f"  connection lost ({type(exc).__name__}); waiting for the server", flush=True)
            conn.terminate()
            conn = await reconnect(url)


async def load(conn: Any, schema: str, store: AuditStore, args: argparse.Namespace, ring: KeyRing,
               pring: KeyRing) -> tuple[list[Chain], list[str], Any]:
    rng = random.Random(18)
    names = [pseudonym(pring, f"c-{i:07d}") for i in range(args.subjects)]
    end = datetime.now(UTC)
    begin = end - timedelta(days=396)
    per_chain = args.records // args.replicas
    step = (end - begin) / per_chain
    chains = [Chain(i + 1, f"veil-{i:02d}", ring, begin) for i in range(args.replicas)]
    for c in chains:  # the rows a shipper's register() makes
        await conn.execute(f'INSERT INTO "{schema}".audit_chains (genesis, replica, chain) VALUES ($1, $2, $3)',
                           f"pending-{c.no}", c.replica, "main")
    total, started = 0, time.monotonic()
    # every partition first (the shipper creates them as it meets them)
    t = begin
    while t <= end + timedelta(days=31):
        await store._ensure_partitions(conn, [t])
        t += timedelta(days=28)
    while total < per_chain * args.replicas:
        rows: list[tuple[Any, ...]] = []
        for c in chains:
            for _ in range(BATCH // args.replicas):
                t = c.at + step
                c.prev_at, c.at = (c.at if c.seq else None), t
                if c.seq == 0:
                    rec: dict[str, Any] = {"kind": "start", "chain": "main", "time": iso(t), "pid": 1,
                                           "version": "0.1.0", "resumed_from": 0, "nonce": os.urandom(8).hex()}
                    seq, line = c.seal(rec)
                    rows.append((c.no, seq, t, c.prev_at, "start", None, line))
                    continue
                if c.since >= 1000:
                    seq, line = c.seal({"kind": "checkpoint", "chain": "main", "time": iso(t), "reason": "periodic",
                                        "count": c.seq, "head": c.prev})
                    c.since = 0
                    rows.append((c.no, seq, t, c.prev_at, "checkpoint", None, line))
                    continue
                caller, purpose, basis = PURPOSES[rng.randrange(len(PURPOSES))]
                subject = names[subject_index(rng, args.subjects)]
                rec = {"id": os.urandom(12).hex(), "time": iso(t), "caller": caller, "purpose": purpose,
                       "basis": basis, "route": "GET /customers/{id}", "subject": subject,
                       "decision": "redact", "reason": "ok",
                       "fields": {"removed": ["address", "phone"], "dropped": ["health"], "transformed": ["email"]},
                       "categories": rng.sample(CATS, 3), "disclosed_categories": rng.sample(CATS, 4),
                       "consent": {"personalization": "given"} if basis == "consent" else {},
                       "policy": "77f51c7d4038a5c4", "rules": ["policies/routes.veil:6:3", "policies/routes.veil:9:5"]}
                subjects = [subject]
                if rng.random() < 0.05:
                    subjects = [names[subject_index(rng, args.subjects)] for _ in range(20)]
                    rec.update(route="GET /customers", subject=None, subjects=subjects, decision="filter", filtered=3)
                seq, line = c.seal(rec)
                c.since += 1
                rows.append((c.no, seq, t, c.prev_at, "decision", sorted(set(subjects)), line))
        conn = await copy_retrying(conn, args.url, schema, rows)
        total += len(rows)
        if total % 500_000 < len(rows):
            print(f"  {total:>10,} records  {total / (time.monotonic() - started):,.0f}/s", flush=True)
    for c in chains:
        head = seal(ring, {"kind": "shipped", "genesis": c.genesis, "seq": c.seq, "head_mac": c.prev,
                           "time": iso(end)})
        await conn.execute(f'UPDATE "{schema}".audit_chains SET genesis = $2, shipped_seq = $3, shipped_mac = $4, '
                           f'shipped_at = $5, head = $6, last_ship = now() WHERE chain_no = $1',
                           c.no, c.genesis, c.seq, c.prev, c.at, orjson.dumps(head).decode())
    print(f"loaded {total:,} records in {time.monotonic() - started:.0f}s")
    return chains, names, conn


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("VEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--replicas", type=int, default=20)
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--partition", default="month")
    ap.add_argument("--keep", action="store_true", help="keep the schema (and its keys in SCHEMA.keys.json)")
    ap.add_argument("--reuse", metavar="SCHEMA", help="measure a schema kept by an earlier --keep run (no load)")
    args = ap.parse_args()
    schema = args.reuse or f"veil_audit_bench_{os.getpid()}"
    keyfile = Path(tempfile.gettempdir()) / f"{schema}.keys.json"
    if args.reuse:
        saved = orjson.loads(keyfile.read_bytes())
        ring = KeyRing.single(bytes.fromhex(saved["audit"]), "k1")
        pring = KeyRing.single(bytes.fromhex(saved["pseudonym"]), "p1")
        args.keep = True
    else:
        ring = KeyRing.single(os.urandom(32), "k1")
        pring = KeyRing.single(os.urandom(32), "p1")
        keyfile.write_bytes(orjson.dumps({"audit": ring.current.hex(), "pseudonym": pring.current.hex()}))
        keyfile.chmod(0o600)
    store = await AuditStore.connect(f"{args.url}?schema={schema}", timeout=600)
    conn = await asyncpg.connect(args.url, timeout=30)
    try:
        await store.migrate(args.partition)
        if args.reuse:
            names = [pseudonym(pring, f"c-{i:07d}") for i in range(args.subjects)]
            per_chain = int(await conn.fetchval(f'SELECT shipped_seq FROM "{schema}".audit_chains WHERE chain_no = 1'))
            print(f"schema {schema} reused: {per_chain:,} records in its first chain")
        else:
            print(f"schema {schema}: {args.records:,} records, {args.replicas} replicas, {args.subjects:,} "
                  f"subjects, {args.partition} partitions")
            chains, names, conn = await load(conn, schema, store, args, ring, pring)
            per_chain = chains[0].seq
            await conn.execute(f'ANALYZE "{schema}".audit_records')
        sizes = await conn.fetchrow(
            "SELECT pg_size_pretty(sum(pg_table_size(c.oid))) AS tables, pg_size_pretty(sum(pg_indexes_size(c.oid))) "
            "AS indexes, count(*) AS partitions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE p.relname = 'audit_records' AND n.nspname = $1", schema)
        gin = await conn.fetchval(
            "SELECT pg_size_pretty(sum(pg_relation_size(indexrelid))) FROM pg_index x JOIN pg_class c ON "
            "c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND "
            "c.relname LIKE '%subjects%'", schema)
        print(f"sizes: tables {sizes['tables']}, indexes {sizes['indexes']} (GIN on subjects {gin}), "
              f"{sizes['partitions']} partitions")

        rng = random.Random(7)
        counts: dict[str, int] = {}
        picks = [names[i] for i in rng.sample(range(len(names) // 100), 50)]  # popular
        picks += [names[i] for i in rng.sample(range(len(names)), 150)]  # anyone
        plain, full = [], []
        for _ in range(2):
            plain_r, full_r = [], []
            for p in picks:
                t = time.perf_counter()
                rows = await store.by_subject([p])
                plain_r.append((time.perf_counter() - t) * 1000)
                counts[p] = len(rows)
                t = time.perf_counter()
                rep = await store_report(store, ring, {p})
                full_r.append((time.perf_counter() - t) * 1000)
                assert rep.verification.ok, rep.verification.render()
            plain.append(plain_r)
            full.append(full_r)
        n = sorted(counts.values())
        print(f"subjects: {len(picks)}, records each: median {statistics.median(n)}, max {n[-1]}, min {n[0]}")
        for label, runs in (("index query", plain), ("store_report (query + MACs + links + rows)", full)):
            for rnd, r in enumerate(runs):
                qs = statistics.quantiles(r, n=20)
                print(f"{label}, pass {rnd + 1}: median {statistics.median(r):.1f} ms, p95 {qs[18]:.1f} ms, "
                      f"max {max(r):.1f} ms")
        top = max(picks, key=lambda p: counts[p])
        if os.environ.get("BENCH_PROFILE"):
            for _ in range(3):
                t0 = time.perf_counter()
                rows = await store.by_subject([top])
                t1 = time.perf_counter()
                await store.macs([(r["chain_no"], r["seq"] - 1, r["prev_at"]) for r in rows if r["prev_at"]])
                t2 = time.perf_counter()
                await store_report(store, ring, {top})
                t3 = time.perf_counter()
                print(f"profile {counts[top]} records: by_subject {1000 * (t1 - t0):.1f} ms, predecessors "
                      f"{1000 * (t2 - t1):.1f} ms, store_report {1000 * (t3 - t2):.1f} ms")
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) for a subject with {counts[top]} records:")
        print(await store.explain_by_subject([top]))

        chain = next(c for c in await store.chains() if c.chain_no == 1)
        t = time.perf_counter()
        verdict = await _verify_chain(store, chain, ring, None, per_chain, None, 10_000)
        dt = time.perf_counter() - t
        print(f"\nverify one chain: {verdict.records:,} records in {dt:.1f}s = {verdict.records / dt:,.0f} records/s "
              f"({'ok' if verdict.ok else verdict.problem})")
    finally:
        if args.keep:
            print(f"schema {schema} kept: measure again with --reuse {schema} (--subjects {args.subjects})")
        else:  # on a fresh connection: the server may have dropped ours
            drop = await reconnect(args.url)
            await drop.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await drop.close()
            keyfile.unlink(missing_ok=True)
            print(f"schema {schema} dropped")
        conn.terminate()
        store._pool.terminate()


if __name__ == "__main__":
    asyncio.run(main())
