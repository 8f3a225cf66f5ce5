"""Shipping a replica's decision log to the store, off the request path.

The proxy keeps writing its local hash-chained log exactly as before (`AuditLog`); a `Shipper` per
chain reads the local files behind the writer (`_tail.ChainReader`) and copies records to PostgreSQL
in batches (`AuditStore.ship`: COPY, one transaction per batch). It runs as a task in the veil
process (`audit.ship.shipper: veil`) or on its own (`veil audit ship`, a sidecar), and:

- copies only what the writer made durable (`AuditLog.durable_seq` in-process; the head file, which
  follows the syncs, for a sidecar), so a crash never takes back a record the store already has;
- identifies a chain by its genesis (the mac of its first record), never by a host name alone, so a
  restarted pod continues its chain and a new log with a reused name starts a new one;
- resumes after a crash or restart from what the store has (the chain's row), reading its local
  cursor file (`<log>.ship`) only as a hint where in the files that is;
- while the store is unreachable keeps the batch and retries with backoff (0.2 s doubling to 10 s);
  the backlog stays on local disk and `Runtime` enforces its bound (`audit.ship.max_backlog`).

Lag, backlog, batches and errors are exported as metrics (`veil_audit_ship_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from veil import metrics
from veil.audit._chain import (
    chain_files,
    cursor_path,
    head_path,
    now_iso,
    pruned_path,
    read_head,
    read_json,
    write_head,
)
from veil.audit._tail import ChainReader, LocalChainError, Position, Record
from veil.audit.report import subjects_of
from veil.audit.retention import parse_time
from veil.audit.store import AuditStore, ChainMoved, ChainRow, Row, StoreUnavailable
from veil.keys import KeyRing

log = logging.getLogger("veil.audit.ship")

POLL = 0.1  # seconds between looks at the local log when there was nothing to ship
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0
LOCAL_RETRY = 30.0  # seconds before looking again at a local chain that could not be read
CURSOR_EVERY = 1.0  # seconds between cursor file updates
BATCH_BYTES = 4 * 1024 * 1024
SLICE = 200  # records read and converted per turn of the event loop
BACKLOG_EVERY = 0.25  # seconds between backlog measurements for the gauge
FUTURE_SLACK = timedelta(days=1)  # a record's time further ahead than this is taken as "now"


class StoreLink:
    """One lazily opened store (a pool) shared by the shippers of a process; migrates on first use."""

    def __init__(self, url: str, *, timeout: float, partition: str, migrate: bool = True) -> None:
        self.url, self.timeout, self.partition, self.migrate = url, timeout, partition, migrate
        self._store: AuditStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AuditStore:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                store = await AuditStore.connect(self.url, timeout=self.timeout, application="veil-audit-ship")
                try:
                    if self.migrate:
                        await store.migrate(self.partition)
                    else:
                        await store.open()
                except BaseException:
                    await store.close()
                    raise
                self._store = store
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._store.close(), self.timeout)
            self._store = None


@dataclass
class Cursor:
    """The shipper's local note of how far the store has the chain (a hint; the store decides)."""

    genesis: str
    seq: int
    mac: str
    pos: Position

    def to_json(self) -> dict[str, Any]:
        return {"genesis": self.genesis, "seq": self.seq, "mac": self.mac, "ino": self.pos.ino,
                "file": self.pos.name, "offset": self.pos.offset, "time": now_iso()}

    @classmethod
    def load(cls, active: Path) -> Cursor | None:
        try:
            data = read_json(cursor_path(active))
        except (ValueError, OSError):
            return None
        if data is None:
            return None
        try:
            return cls(str(data["genesis"]), int(data["seq"]), str(data["mac"]),
                       Position(int(data["ino"]), str(data["file"]), int(data["offset"])))
        except (KeyError, TypeError, ValueError):
            return None


def backlog_from_cursor(active: Path) -> int:
    """Unshipped bytes of a chain as its cursor file tells (for a veil whose shipper is a sidecar)."""
    cursor = Cursor.load(active)
    return ChainReader(active).backlog_bytes(cursor.pos if cursor else None)


def _genesis(active: Path) -> str | None:
    """The chain's identity: the mac of its record seq 1 if that is still here; else what the cursor
    or the prune marker remembered; else the mac of the oldest record here. None: nothing written yet."""
    first: dict[str, Any] | None = None
    for path in chain_files(active):
        try:
            with open(path, "rb") as f:
                line = f.readline()
        except OSError:
            continue
        if line.endswith(b"\n"):
            with contextlib.suppress(orjson.JSONDecodeError):
                rec = orjson.loads(line)
                if isinstance(rec, dict) and isinstance(rec.get("mac"), str):
                    first = rec
                    break
    if first is not None and first.get("seq") == 1:
        return str(first["mac"])
    cursor = Cursor.load(active)
    if cursor is not None and cursor.genesis:
        return cursor.genesis
    with contextlib.suppress(ValueError, OSError):
        marker = read_json(pruned_path(active))
        if marker and isinstance(marker.get("genesis"), str) and marker["genesis"]:
            return str(marker["genesis"])
    return str(first["mac"]) if first is not None else None


class Shipper:
    """Ships one chain (`active`: its active file) to the store, forever: `await run()`."""

    def __init__(self, link: StoreLink, active: Path, ring: KeyRing, *, replica: str, chain_id: str,
                 durable: Callable[[], int] | None = None, written: Callable[[], int] | None = None,
                 batch_records: int = 1000,
                 batch_bytes: int = BATCH_BYTES, backlog_limit: int = 0) -> None:
        self.link, self.active, self.ring = link, active, ring
        self.replica, self.chain_id = replica, chain_id
        self._durable = durable
        self._written = written  # the writer's last seq (durable or not): what lag counts from
        self.batch_records, self.batch_bytes = batch_records, batch_bytes
        self.backlog_limit = backlog_limit
        self.reader = ChainReader(active)
        self.chain: ChainRow | None = None
        cursor = Cursor.load(active)
        self._shipped_pos: Position | None = cursor.pos if cursor else None
        self._known_seq = cursor.seq if cursor else 0  # shipped as far as we know (before the store says)
        self._pending: tuple[list[Record], list[Row], Position] | None = None  # (.., where it ends)
        self._cursor_at = 0.0
        self._cursor_dirty = False
        self.last_success = time.time()
        self.lag_records = 0
        self.lag_seconds = 0.0
        self.last_error: str | None = None
        SHIPPERS.add(self)

    # -- what the writer has made durable --------------------------------------------------------

    def durable_seq(self) -> int:
        if self._durable is not None:
            return self._durable()
        try:
            head = read_head(head_path(self.active))
        except (ValueError, OSError):
            head = None
        return int(head["seq"]) if head else 0

    def written_seq(self, durable: int) -> int:
        return max(durable, self._written()) if self._written is not None else durable

    def backlog_bytes(self) -> int:
        return self.reader.backlog_bytes(self._shipped_pos)

    @property
    def shipped_seq(self) -> int:
        return self.chain.shipped_seq if self.chain else self._known_seq

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                shipped = await self.step()
                backoff = BACKOFF_MIN
                if not shipped:
                    await asyncio.sleep(POLL)
            except StoreUnavailable as exc:
                self._failed(exc.reason, str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except ChainMoved as exc:
                self._failed("chain_moved", str(exc))
                self.chain, self._pending = None, None
            except LocalChainError as exc:
                self._failed("local_invalid", str(exc))
                self.chain, self._pending = None, None
                await asyncio.sleep(LOCAL_RETRY)
            finally:
                self._gauges()

    async def drain(self, timeout: float) -> bool:
        """Ship everything the writer has made durable, trying for at most `timeout` seconds (at
        shutdown). True when the store has it all."""
        deadline = time.monotonic() + timeout
        backoff = BACKOFF_MIN
        while time.monotonic() < deadline:
            try:
                if not await asyncio.wait_for(self.step(), max(0.1, deadline - time.monotonic())):
                    if self.shipped_seq >= self.durable_seq():
                        return True
                    await asyncio.sleep(POLL)
                continue
            except (StoreUnavailable, TimeoutError) as exc:
                self._failed(getattr(exc, "reason", "timeout"), str(exc) or "timed out")
            except ChainMoved as exc:
                self._failed("chain_moved", str(exc))
                self.chain, self._pending = None, None
            except LocalChainError as exc:
                self._failed("local_invalid", str(exc))
                return False
            finally:
                self._gauges()
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX)
        return self.shipped_seq >= self.durable_seq()

    async def step(self) -> int:
        """One attempt: resume if needed, read a batch, ship it. Returns the records shipped."""
        upto = self.durable_seq()
        self._lag(upto)
        if self.chain is None and not await self._resume():
            return 0
        assert self.chain is not None
        if self._pending is None:
            # read and convert in slices: in the veil process this runs on the event loop that serves
            # requests, so no slice may hold it long (about SLICE x 3 us)
            records: list[Record] = []
            rows: list[Row] = []
            size = 0
            while len(records) < self.batch_records and size < self.batch_bytes:
                chunk = self.reader.read(upto, min(SLICE, self.batch_records - len(records)), self.batch_bytes - size)
                if not chunk:
                    break
                records += chunk
                size += sum(len(r.line) + 1 for r in chunk)
                rows += self._rows(chunk, rows[-1][2] if rows else None)
                await asyncio.sleep(0)
            if not records:
                self._caught_up(upto)
                return 0
            self._pending = (records, rows, self.reader.position)
        records, rows, end = self._pending
        self._lag(upto)
        store = await self.link.get()
        self.chain = await store.ship(self.chain, rows, self.ring, self.replica)
        self._pending = None
        self._shipped_pos = end
        self._known_seq = self.chain.shipped_seq
        metrics.audit_ship_records_total.inc(len(records))
        metrics.audit_ship_batches_total.inc()
        self.last_error = None
        self._write_cursor()
        if self.chain.shipped_seq >= upto:
            self._caught_up(upto)
        return len(records)

    async def _resume(self) -> bool:
        """Find where the store has this chain and position the reader right after it."""
        genesis = _genesis(self.active)
        if genesis is None:
            return False  # nothing written yet
        store = await self.link.get()
        chain = await store.chain(genesis) or await store.register(genesis, self.replica, self.chain_id)
        cursor = Cursor.load(self.active)
        hint = cursor.pos if cursor and cursor.genesis == genesis and cursor.seq == chain.shipped_seq else None
        if not self.reader.seek(chain.shipped_seq, chain.shipped_mac, hint):
            raise LocalChainError(
                f"{self.active.name}: the store has chain {chain.label} up to seq {chain.shipped_seq}, and the "
                f"record after it is not in the local files (removed, or the log was replaced)")
        self.chain = chain
        self._shipped_pos = self.reader.position
        self._known_seq = chain.shipped_seq
        log.info("shipping %s from seq %d (chain %s)", self.active.name, chain.shipped_seq + 1, chain.label)
        return True

    def _rows(self, records: list[Record], after: datetime | None = None) -> list[Row]:
        """Store rows: the partition time never goes back within a chain (see _store_sql)."""
        assert self.chain is not None
        now = datetime.now(UTC)
        at = after or self.chain.shipped_at
        rows: list[Row] = []
        for r in records:
            prev_at = at if r.seq > 1 else None
            t = parse_time(r.rec.get("time"))
            t = now if t is None or t > now + FUTURE_SLACK else t
            at = t if at is None or t > at else at
            kind = r.rec.get("kind", "decision")
            subjects = subjects_of(r.rec)
            rows.append((self.chain.chain_no, r.seq, at, prev_at, kind if isinstance(kind, str) else "decision",
                         sorted(subjects) if subjects else None, r.line.decode("utf-8")))
        return rows

    def _lag(self, upto: int) -> None:
        """Lag in records (from what the writer wrote) and seconds (the oldest record not in the store:
        the pending batch's first; without one, since the last success), published at once."""
        self.lag_records = max(0, self.written_seq(upto) - self.shipped_seq)
        if self._pending is not None:
            self.lag_seconds = max(0.0, (datetime.now(UTC) - self._pending[1][0][2]).total_seconds())
        elif self.lag_records:
            self.lag_seconds = max(self.lag_seconds, time.time() - self.last_success)
        SHIPPERS.publish()

    def _caught_up(self, upto: int) -> None:
        if self._cursor_dirty:
            self._write_cursor()  # at most every CURSOR_EVERY: a later idle look writes what is left
        self.last_success = time.time()
        self.lag_records = max(0, self.written_seq(upto) - self.shipped_seq)
        self.lag_seconds = 0.0
        SHIPPERS.publish()

    def _failed(self, reason: str, message: str) -> None:
        metrics.audit_ship_errors_total.labels(reason).inc()
        if self.last_error != message:
            log.error("shipping %s: %s", self.active.name, message)
        self.last_error = message
        self._lag(self.durable_seq())

    def _write_cursor(self, force: bool = False) -> None:
        """Every CURSOR_EVERY while shipping; at once when caught up or closing (if it moved)."""
        now = time.monotonic()
        self._cursor_dirty = True
        if self.chain is None or self._shipped_pos is None or (not force and now - self._cursor_at < CURSOR_EVERY):
            return
        self._cursor_at, self._cursor_dirty = now, False
        cursor = Cursor(self.chain.genesis, self.chain.shipped_seq, self.chain.shipped_mac, self._shipped_pos)
        try:
            write_head(cursor_path(self.active), cursor.to_json(), sync=False)
        except OSError as exc:
            log.warning("cannot write %s: %s", cursor_path(self.active).name, exc.strerror)

    def _gauges(self) -> None:
        SHIPPERS.publish()

    def close(self) -> None:
        if self._cursor_dirty:
            self._write_cursor(force=True)
        self.reader.close()
        SHIPPERS.discard(self)


class _Shippers:
    """The shippers of this process, for the summed gauges."""

    def __init__(self) -> None:
        self._all: list[Shipper] = []
        self._backlog_at = 0.0

    def add(self, s: Shipper) -> None:
        self._all.append(s)

    def discard(self, s: Shipper) -> None:
        with contextlib.suppress(ValueError):
            self._all.remove(s)
        self.publish()

    def live(self) -> list[Shipper]:
        return list(self._all)

    def publish(self) -> None:
        all_ = self._all
        metrics.audit_ship_lag_records.set(sum(s.lag_records for s in all_))
        metrics.audit_ship_lag_seconds.set(max((s.lag_seconds for s in all_), default=0.0))
        now = time.monotonic()
        if now - self._backlog_at >= BACKLOG_EVERY:  # a directory listing and a stat per file: not per step
            self._backlog_at = now
            metrics.audit_ship_backlog_limit_bytes.set(sum(s.backlog_limit for s in all_))
            metrics.audit_ship_backlog_bytes.set(sum(s.backlog_bytes() for s in all_))
        if all_:
            metrics.audit_ship_last_success.set(min(s.last_success for s in all_))


SHIPPERS = _Shippers()


def chains_to_ship(path: Path) -> list[tuple[str, Path]]:
    """(chain id, active file) of every chain of the configured log `path` (`decisions.log` is chain
    main, `decisions-w0.log` chain w0: see veil.audit._chain.active_path)."""
    from veil.audit._chain import chains_in_dir, valid_chain_id

    out: list[tuple[str, Path]] = []
    prefix = f"{path.stem}-"
    if not path.parent.is_dir():
        return out
    for active in chains_in_dir(path.parent):
        if active == path:
            out.append(("main", active))
        elif active.suffix == path.suffix and active.stem.startswith(prefix) \
                and valid_chain_id(active.stem[len(prefix):]):
            out.append((active.stem[len(prefix):], active))
    return out


def replica_name(configured: str | None) -> str:
    return configured or os.environ.get("VEIL_REPLICA") or os.uname().nodename
