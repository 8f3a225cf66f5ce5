"""The decision log's life after it is written, inside a veil process: shipping it to the store
(`audit.ship`), bounding the unshipped backlog, and retention (local segments; store partitions).

Backlog bound: every BACKLOG_CHECK seconds the unshipped bytes of this process's chain (from the
in-process shipper, or from the cursor file a sidecar shipper keeps) are compared with
`audit.ship.max_backlog`. Over the bound the log is held (`AuditLog.hold`) in the configured mode:
`refuse` fails closed (disclosures are refused with reason `audit_backlog_full`, readiness fails),
`serve` keeps serving and counts decisions not recorded (`veil_audit_unrecorded_total`, and an
`unrecorded` record in the chain once writing resumes). Writing resumes below 90% of the bound.
Between two measurements the writer adds what it writes to the last one (`AuditLog.bound`) and holds
itself after the batch that crosses the bound: the bound is exceeded by at most one write batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from veil import metrics
from veil.audit.log import AuditLog
from veil.audit.retention import parse_time, prune_local, retention_days
from veil.audit.ship import Cursor, Shipper, StoreLink, backlog_from_cursor, replica_name
from veil.audit.store import AuditStore, StoreUnavailable
from veil.config import Config
from veil.keys import KeyRing

log = logging.getLogger("veil.audit")

BACKLOG_CHECK = 0.25  # seconds
RESUME_BELOW = 0.9  # of the bound
HOUSEKEEPING = 60.0  # seconds between local retention passes
ROTATE_AFTER = timedelta(days=1)  # the active file is rotated once its first record is this old: only
# rotated segments are removed, so a quiet replica's records outlive retention by at most this much
STORE_RETENTION = 3600.0  # seconds between store retention passes (any replica may; one drops at a time)


class ShipControl:
    def __init__(self, config: Config, audit: AuditLog, ring: KeyRing, chain_id: str, *,
                 retentions: Callable[[], list[str | None]]) -> None:
        self.config, self.audit, self.ring, self.chain_id = config, audit, ring, chain_id
        self.ship = config.audit_ship
        self._retentions = retentions
        self.shipper: Shipper | None = None
        self.link: StoreLink | None = None
        self.full = False
        self.refusal: str | None = None
        self._store_pruned_at = 0.0

    def start(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._housekeeping(), name="veil-audit-housekeeping")]
        ship = self.ship
        if ship is None:
            return tasks
        metrics.audit_ship_backlog_limit_bytes.set(ship.max_backlog_bytes)
        metrics.init_ship_series()
        self.audit.on_hold = self._full
        if ship.shipper == "veil":
            self.link = StoreLink(ship.url, timeout=ship.timeout, partition=ship.partition)
            self.shipper = Shipper(
                self.link, self.audit.path, self.ring, replica=replica_name(ship.replica), chain_id=self.chain_id,
                durable=lambda: self.audit.durable_seq, written=lambda: self.audit.seq,
                batch_records=ship.batch_records,
                backlog_limit=ship.max_backlog_bytes,
            )
            tasks.append(asyncio.create_task(self.shipper.run(), name=f"veil-audit-ship-{self.chain_id}"))
        tasks.append(asyncio.create_task(self._watch(), name="veil-audit-backlog"))
        return tasks

    # -- backlog bound -----------------------------------------------------------------------------

    def backlog(self) -> int:
        if self.shipper is not None:
            return self.shipper.backlog_bytes()
        return backlog_from_cursor(self.audit.path)

    def check_backlog(self) -> int:
        """Measure the backlog, compare it with its bound; hold or release the log. Between two
        measurements the writer itself adds what it writes (`AuditLog.bound`). Returns the backlog."""
        ship = self.ship
        assert ship is not None
        backlog = self.backlog()
        limit = ship.max_backlog_bytes
        if not self.full and (backlog >= limit or self.audit.held is not None):
            self.audit.hold(ship.on_full)
            self._full(backlog)
        elif self.full and backlog < limit * RESUME_BELOW:
            self.full = False
            self.refusal = None
            self.audit.release()
            log.warning("decision log: backlog %d bytes, under the bound again: recording resumes", backlog)
        if not self.full:
            self.audit.bound(backlog, limit, ship.on_full)
        metrics.audit_ship_backlog_full.set(1 if self.full else 0)
        if self.shipper is not None:
            metrics.audit_ship_backlog_bytes.set(backlog)
        return backlog

    def _full(self, backlog: int | None = None) -> None:
        """The log is held (by check_backlog, or by the writer itself after a batch: its on_hold)."""
        ship = self.ship
        assert ship is not None
        if self.full:
            return
        self.full = True
        self.refusal = "audit_backlog_full" if ship.on_full == "refuse" else None
        metrics.audit_ship_backlog_full.set(1)
        log.error("decision log: the unshipped backlog%s is over its bound of %d bytes: %s",
                  f" ({backlog} bytes)" if backlog is not None else "", ship.max_backlog_bytes,
                  "refusing disclosures" if ship.on_full == "refuse" else "serving without recording")

    async def _watch(self) -> None:
        while True:
            try:
                self.check_backlog()  # a few stat calls: cheap enough for the event loop
            except OSError as exc:
                log.warning("decision log backlog unknown: %s", exc.strerror)
            await asyncio.sleep(BACKLOG_CHECK)

    def readiness(self) -> dict[str, bool]:
        """{"decision_log_backlog": False} while disclosures are refused for a full backlog."""
        if self.ship is None:
            return {}
        return {"decision_log_backlog": self.refusal is None}

    # -- retention ---------------------------------------------------------------------------------

    def retention(self) -> float:
        return retention_days(self.config.audit_retention_days, self.config.audit_max_retention_days,
                              self._retentions())

    def shipped_seq(self) -> int | None:
        """How far the store has this chain (None: no shipping, local retention only)."""
        if self.ship is None:
            return None
        if self.shipper is not None:
            return self.shipper.shipped_seq
        cursor = Cursor.load(self.audit.path)
        return cursor.seq if cursor else 0

    async def housekeep(self, now: datetime | None = None) -> dict[str, Any]:
        """One retention pass: local segments, and (every STORE_RETENTION, or when `now` is given)
        the store's partitions."""
        days = self.retention()
        keep = self.ship.keep_local_days if self.ship else 0.0
        first = await asyncio.to_thread(_first_time, self.audit.path)
        if first is not None and first < (now or datetime.now(UTC)) - ROTATE_AFTER:
            await self.audit.rotate()
        removed = 0
        if self.ship is None or self.ship.shipper == "veil":  # a sidecar shipper removes what it shipped
            removed = await asyncio.to_thread(prune_local, self.audit.path, self.ring, shipped_seq=self.shipped_seq(),
                                              keep_local_days=keep, retention=days, now=now)
        markers: list[dict[str, Any]] = []
        if self.shipper is not None and self.link is not None and (
                now is not None or time.monotonic() - self._store_pruned_at >= STORE_RETENTION):
            self._store_pruned_at = time.monotonic()
            store = await self.link.get()
            markers = await store.prune((now or datetime.now(UTC)) - timedelta(days=days), self.ring)
            pruned = sum(int(m.get("records", 0)) for m in markers)
            if pruned:
                metrics.audit_pruned_total.labels("store").inc(pruned)
                log.warning("decision-log store: %d records older than %.0f days removed (%d chains)", pruned, days,
                            len(markers))
        return {"local_records": removed, "store_markers": markers}

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                await self.housekeep()
            except StoreUnavailable as exc:
                log.warning("decision-log store retention skipped: %s", exc)
            except OSError as exc:
                log.warning("decision-log retention skipped: %s", exc.strerror or exc)

    async def store(self) -> AuditStore:
        """The store, for reading (the per-subject report): the shipper's, or one opened for it."""
        if self.ship is None:
            raise StoreUnavailable("audit.ship is not configured", "unconfigured")
        if self.link is None:
            self.link = StoreLink(self.ship.url, timeout=self.ship.timeout, partition=self.ship.partition,
                                  migrate=False)
        return await self.link.get()

    # -- shutdown ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """After the log is closed: ship what is left (up to audit.ship.drain_timeout)."""
        if self.shipper is not None and self.ship is not None:
            ok = await self.shipper.drain(self.ship.drain_timeout)
            if not ok:
                log.error("decision log: records after seq %d were not shipped before exit; they stay in %s "
                          "and are shipped when this chain's shipper runs again", self.shipper.shipped_seq,
                          self.audit.path.parent)
            self.shipper.close()
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.close()


def _first_time(active: Path) -> datetime | None:
    """The time of the first record in the active file (None: empty, or none readable)."""
    try:
        with open(active, "rb") as f:
            line = f.readline(1 << 20)
    except OSError:
        return None
    try:
        rec = orjson.loads(line) if line.endswith(b"\n") else None
    except orjson.JSONDecodeError:
        return None
    return parse_time(rec.get("time")) if isinstance(rec, dict) else None
