"""The fleet-wide decision log in PostgreSQL: the store every replica's shipper writes to, and that
verification, the per-subject report and retention read. Tables: see `veil.audit._store_sql`.

Writes come from `veil.audit.ship` only, one batch per transaction: the chain's row is locked, the
batch must continue exactly where the row says the chain stands (same seq, linked to the same mac),
the records are COPied in and the row advances with a new signed ship head. So a retry never
duplicates, two shippers of one chain cannot interleave, and a chain is stored in order.

Errors are translated at this boundary into `StoreUnavailable` (with a bounded `reason` used as a
metric label: unreachable, timeout, schema_missing, rejected) and `ChainMoved` (someone else moved
the chain: the shipper re-reads where it stands).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from veil.audit import _store_sql as q
from veil.audit._chain import now_iso, seal
from veil.consent.postgres import split_url
from veil.errors import VeilError
from veil.keys import KeyRing

PARTITION_WIDTHS = ("day", "week", "month")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PARTITION_NAME = re.compile(r"^audit_records_(\d{8})$")
_CONNECTION_FAILURES = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionError)

# One record ready for the store: (chain_no, seq, at, prev_at, kind, subjects or None, line).
Row = tuple[int, int, datetime, "datetime | None", str, "list[str] | None", str]


class StoreUnavailable(VeilError):
    code = "audit_store_unavailable"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ChainMoved(VeilError):
    """The chain's row is not where this shipper thought (another shipper advanced it)."""

    code = "audit_chain_moved"


@dataclass(frozen=True)
class ChainRow:
    chain_no: int
    genesis: str
    replica: str
    chain: str
    shipped_seq: int
    shipped_mac: str
    shipped_at: datetime | None
    head: dict[str, Any] | None
    first_ship: datetime
    last_ship: datetime | None

    @classmethod
    def of(cls, row: Any) -> ChainRow:
        head = orjson.loads(row["head"]) if row["head"] else None
        return cls(row["chain_no"], row["genesis"], row["replica"], row["chain"], row["shipped_seq"],
                   row["shipped_mac"], row["shipped_at"], head if isinstance(head, dict) else None,
                   row["first_ship"], row["last_ship"])

    @property
    def label(self) -> str:
        return f"{self.replica}/{self.chain}#{self.chain_no}"


def partition_of(at: datetime, width: str) -> tuple[str, date, date]:
    """(name, first day, first day after) of the partition holding time `at` (UTC)."""
    d = at.astimezone(UTC).date()
    lo = d if width == "day" else d - timedelta(days=d.weekday()) if width == "week" else d.replace(day=1)
    return f"audit_records_{lo:%Y%m%d}", lo, partition_end(lo, width)


def partition_end(lo: date, width: str) -> date:
    if width == "day":
        return lo + timedelta(days=1)
    if width == "week":
        return lo + timedelta(days=7)
    return date(lo.year + (lo.month == 12), lo.month % 12 + 1, 1)


def _lock_id(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big", signed=True)


def _translate(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        return StoreUnavailable("the decision-log store has no tables: run `veil audit ship --migrate`",
                                "schema_missing")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return StoreUnavailable("the decision-log store did not answer in time", "timeout")
    if isinstance(exc, _CONNECTION_FAILURES):
        return StoreUnavailable(f"the decision-log store is unreachable ({type(exc).__name__})", "unreachable")
    return StoreUnavailable(f"the decision-log store refused the request ({type(exc).__name__})", "rejected")


class AuditStore:
    """A connection pool on the store's schema. `connect()`, then `migrate()` once (any replica may)."""

    def __init__(self, pool: Any, schema: str, timeout: float) -> None:
        self._pool = pool
        self.schema = schema
        self.timeout = timeout
        self._s = f'"{schema}"'
        self.width = "month"
        self._partitions: set[str] = set()

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 10.0, pool_size: int = 2,
                      application: str = "veil-audit") -> AuditStore:
        dsn, schema = split_url(url)
        name = schema or "public"
        if not _SCHEMA_NAME.match(name):
            raise VeilError("the audit store schema must be a lower-case SQL identifier", code="config_invalid")
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=0, max_size=pool_size, timeout=timeout, command_timeout=timeout,
                # the store's queries are index lookups of a few rows: starting parallel workers for them
                # costs more than it saves (measured: 60 ms to launch two on a busy machine)
                server_settings={"application_name": application, "max_parallel_workers_per_gather": "0"},
            )
        except ValueError as exc:
            raise VeilError("the audit store URL is not a valid postgresql:// URL", code="config_invalid") from exc
        except (asyncpg.PostgresError, *_CONNECTION_FAILURES, TimeoutError) as exc:
            raise _translate(exc) from exc
        return cls(pool, name, timeout)

    async def close(self) -> None:
        await self._pool.close()

    def _sql(self, template: str, **names: str) -> str:
        return template.replace("{s}", self._s).format(**names) if names else template.replace("{s}", self._s)

    async def _run(self, fn: Any) -> Any:
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                return await fn(conn)
        except (ChainMoved, VeilError):
            raise
        except (asyncpg.PostgresError, *_CONNECTION_FAILURES, TimeoutError) as exc:
            raise _translate(exc) from exc

    # -- schema ------------------------------------------------------------------------------------

    async def migrate(self, width: str = "month") -> str:
        """Create the tables (safe from many replicas at once); returns the store's partition width,
        which is fixed when the store is created (`width` applies only then)."""
        if width not in PARTITION_WIDTHS:
            raise VeilError(f"partition width must be one of {', '.join(PARTITION_WIDTHS)}", code="config_invalid")

        async def run(conn: Any) -> str:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id("veil-audit", self.schema))
                for stmt in q.CREATE:
                    await conn.execute(self._sql(stmt))
                await conn.execute(self._sql("INSERT INTO {s}.audit_meta VALUES ('version', $1), ('partition', $2) "
                                             "ON CONFLICT (key) DO NOTHING"), str(q.SCHEMA_VERSION), width)
            return await self._load_meta(conn)

        result: str = await self._run(run)
        return result

    async def open(self) -> None:
        """Read the partition width and the existing partitions (the tables must exist)."""
        await self._run(self._load_meta)

    async def _load_meta(self, conn: Any) -> str:
        width = await conn.fetchval(self._sql("SELECT value FROM {s}.audit_meta WHERE key = 'partition'"))
        self.width = width if width in PARTITION_WIDTHS else "month"
        self._partitions = {r["relname"] for r in await conn.fetch(q.PARTITIONS, self.schema)}
        return self.width

    async def partitions(self) -> list[tuple[str, date, date]]:
        """(name, first day, first day after) of every partition, oldest first."""
        names = await self._run(lambda conn: conn.fetch(q.PARTITIONS, self.schema))
        out = []
        for r in names:
            m = _PARTITION_NAME.match(r["relname"])
            if m:
                lo = datetime.strptime(m.group(1), "%Y%m%d").date()
                out.append((r["relname"], lo, partition_end(lo, self.width)))
        return sorted(out, key=lambda p: p[1])

    async def _ensure_partitions(self, conn: Any, times: Iterable[datetime]) -> None:
        """The partitions from the earliest to the latest of `times` exist (created if not)."""
        ts = list(times)
        if not ts:
            return
        first, last = min(ts), max(ts)
        wanted = [partition_of(first, self.width)]
        end = partition_of(last, self.width)
        while wanted[-1][0] != end[0]:
            lo = wanted[-1][2]
            wanted.append((f"audit_records_{lo:%Y%m%d}", lo, partition_end(lo, self.width)))
        missing = sorted(p for p in wanted if p[0] not in self._partitions)
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id("veil-audit-partition", self.schema))
            for name, lo, hi in missing:
                await conn.execute(self._sql(q.CREATE_PARTITION, name=name, lo=f"{lo} 00:00:00+00",
                                             hi=f"{hi} 00:00:00+00"))
        self._partitions.update(p[0] for p in missing)

    # -- chains ------------------------------------------------------------------------------------

    async def chain(self, genesis: str) -> ChainRow | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql(q.CHAIN_BY_GENESIS), genesis))
        return ChainRow.of(row) if row else None

    async def register(self, genesis: str, replica: str, chain_id: str) -> ChainRow:
        """The chain's row, created (shipped up to seq 0) if the store has never seen it."""

        async def run(conn: Any) -> ChainRow:
            await conn.execute(self._sql(q.REGISTER), genesis, replica, chain_id)
            return ChainRow.of(await conn.fetchrow(self._sql(q.CHAIN_BY_GENESIS), genesis))

        result: ChainRow = await self._run(run)
        return result

    async def chains(self) -> list[ChainRow]:
        rows = await self._run(lambda conn: conn.fetch(self._sql(q.CHAINS)))
        return [ChainRow.of(r) for r in rows]

    async def ship(self, chain: ChainRow, rows: Sequence[Row], ring: KeyRing, replica: str) -> ChainRow:
        """Store a batch continuing `chain` (rows in seq order, the first right after
        chain.shipped_seq), and advance the chain with a new signed ship head, in one transaction.
        Raises ChainMoved when the chain's row is not at chain.shipped_seq/shipped_mac."""
        if not rows:
            return chain
        last_seq, last_at, last_line = rows[-1][1], rows[-1][2], rows[-1][6]
        last_mac = orjson.loads(last_line)["mac"]
        head = seal(ring, {"kind": "shipped", "genesis": chain.genesis, "seq": last_seq, "head_mac": last_mac,
                           "time": now_iso()})
        head_text = orjson.dumps(head).decode()

        async def run(conn: Any) -> ChainRow:
            await self._ensure_partitions(conn, (rows[0][2], rows[-1][2]))  # `at` never goes back in a chain
            async with conn.transaction():
                cur = await conn.fetchrow(self._sql(q.CHAIN_FOR_UPDATE), chain.chain_no)
                if cur is None or cur["shipped_seq"] != chain.shipped_seq or cur["shipped_mac"] != chain.shipped_mac:
                    raise ChainMoved(f"chain {chain.label} moved while shipping")
                await conn.copy_records_to_table("audit_records", schema_name=self.schema,
                                                 columns=q.RECORD_COLUMNS, records=rows)
                return ChainRow.of(await conn.fetchrow(self._sql(q.ADVANCE), chain.chain_no, last_seq, last_mac,
                                                       last_at, head_text, replica))

        try:
            result: ChainRow = await self._run(run)
        except StoreUnavailable:
            self._partitions.clear()  # a partition dropped meanwhile: CREATE ... IF NOT EXISTS next time
            raise
        return result

    # -- reading -----------------------------------------------------------------------------------

    async def page(self, chain_no: int, after_seq: int, limit: int) -> list[tuple[int, str]]:
        rows = await self._run(lambda conn: conn.fetch(self._sql(q.PAGE), chain_no, after_seq, limit))
        return [(r["seq"], r["line"]) for r in rows]

    async def counts(self) -> dict[int, int]:
        rows = await self._run(lambda conn: conn.fetch(self._sql(q.COUNTS), timeout=max(self.timeout, 600)))
        return {r["chain_no"]: r["count"] for r in rows}

    async def markers(self) -> dict[int, tuple[int, dict[str, Any] | None, int]]:
        """chain_no → (through_seq, the latest marker, how many markers) of every pruned chain."""
        async def run(conn: Any) -> dict[int, tuple[int, dict[str, Any] | None, int]]:
            latest = await conn.fetch(self._sql(q.MARKERS))
            totals = {r["chain_no"]: r["count"] for r in await conn.fetch(self._sql(q.PRUNED_TOTALS))}
            out: dict[int, tuple[int, dict[str, Any] | None, int]] = {}
            for r in latest:
                try:
                    marker = orjson.loads(r["marker"])
                except orjson.JSONDecodeError:
                    marker = None
                out[r["chain_no"]] = (r["through_seq"], marker if isinstance(marker, dict) else None,
                                      totals.get(r["chain_no"], 1))
            return out

        result: dict[int, tuple[int, dict[str, Any] | None, int]] = await self._run(run)
        return result

    async def by_subject(self, pseudonyms: Sequence[str]) -> list[Any]:
        """Every record naming one of the pseudonyms (the GIN index), oldest first."""
        return list(await self._run(lambda conn: conn.fetch(self._sql(q.BY_SUBJECT), list(pseudonyms))))

    async def macs(self, keys: Sequence[tuple[int, int, datetime]]) -> dict[tuple[int, int], str | None]:
        """The macs of records by primary key (chain_no, seq, at). Each partition is asked directly
        (one UNION ALL, one round trip): probing the partitioned table once per key costs a partition
        pruning per key (measured: 35-70 ms for 420 keys against 2-3 ms this way)."""
        if not keys:
            return {}
        by_part: dict[str, tuple[list[int], list[int]]] = {}
        for chain_no, seq, at in keys:
            name = partition_of(at, self.width)[0]
            lists = by_part.setdefault(name, ([], []))
            lists[0].append(chain_no)
            lists[1].append(seq)

        async def run(conn: Any) -> list[Any]:
            known = {r["relname"] for r in await conn.fetch(q.PARTITIONS, self.schema)}
            parts: list[str] = []
            args: list[list[int]] = []
            for name, (chains, seqs) in sorted(by_part.items()):
                if name not in known or not _PARTITION_NAME.match(name):
                    continue  # dropped by retention: those records are not stored
                n = len(args)
                parts.append(self._sql(q.MACS_IN_PARTITION, name=name, a=f"${n + 1}", b=f"${n + 2}"))
                args += [chains, seqs]
            if not parts:
                return []
            return list(await conn.fetch(" UNION ALL ".join(parts), *args))

        rows = await self._run(run)
        return {(r["chain_no"], r["seq"]): r["mac"] for r in rows}

    async def explain_by_subject(self, pseudonyms: Sequence[str]) -> str:
        rows = await self._run(lambda conn: conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + self._sql(q.BY_SUBJECT),
                                                       list(pseudonyms)))
        return "\n".join(r[0] for r in rows)

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, before: datetime, ring: KeyRing, *, reason: str = "retention") -> list[dict[str, Any]]:
        """Drop every partition that ends at or before `before`, oldest first; for each chain with
        records in it, a signed marker (in the same transaction as the drop) says up to which seq and
        mac the chain was removed. Returns the markers written."""
        written: list[dict[str, Any]] = []
        for name, _lo, hi in await self.partitions():
            if datetime(hi.year, hi.month, hi.day, tzinfo=UTC) > before:
                break
            written += await self._drop(name, hi, ring, reason)
        return written

    async def _drop(self, name: str, hi: date, ring: KeyRing, reason: str) -> list[dict[str, Any]]:
        async def run(conn: Any) -> list[dict[str, Any]]:
            markers: list[dict[str, Any]] = []
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id("veil-audit-partition", self.schema))
                await conn.execute("SET LOCAL lock_timeout = '10s'")
                if await conn.fetchval("SELECT to_regclass($1)", f"{self._s}.{name}") is None:
                    return markers  # another replica dropped it
                await conn.execute(self._sql(q.LOCK_PARTITION, name=name))
                tails = await conn.fetch(self._sql(q.PARTITION_CHAINS, name=name))
                geneses = {r["chain_no"]: r["genesis"] for r in
                           await conn.fetch(self._sql(q.GENESES), [t["chain_no"] for t in tails])}
                for t in tails:
                    marker = seal(ring, {
                        "kind": "pruned", "genesis": geneses.get(t["chain_no"], ""), "through_seq": t["seq"],
                        "through_mac": orjson.loads(t["line"])["mac"], "records": t["count"],
                        "before": f"{hi}T00:00:00Z", "at": now_iso(), "reason": reason, "partition": name,
                    })
                    await conn.execute(self._sql(q.ADD_MARKER), t["chain_no"], t["seq"], orjson.dumps(marker).decode())
                    markers.append(marker)
                await conn.execute(self._sql(q.DROP_PARTITION, name=name))
            self._partitions.discard(name)
            return markers

        result: list[dict[str, Any]] = await self._run(run)
        return result
