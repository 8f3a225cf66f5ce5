"""`veil audit ship`: the shipper on its own (a sidecar container sharing the audit volume, or a
one-off `--once` run that ships what a stopped replica left behind).

It ships every chain of the configured log (`decisions.log`, `decisions-w0.log`, ... : one per
worker), picking up new chains as they appear, and does what the in-process shipper's veil would
otherwise do: retention in the store, and removal of local segments once shipped. The veil process
next to it (with `audit.ship.shipper: sidecar`) only enforces the backlog bound, reading the cursor
files this process writes. SIGTERM/SIGINT: ship what is left (up to `audit.ship.drain_timeout`), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from veil import metrics
from veil.audit.retention import prune_local, retention_days
from veil.audit.ship import Shipper, StoreLink, chains_to_ship, replica_name
from veil.audit.store import StoreUnavailable
from veil.config import AuditShip, Config
from veil.errors import VeilError

log = logging.getLogger("veil.audit.ship")

RESCAN = 5.0  # seconds between looks for new chains (a worker started)
HOUSEKEEPING = 60.0
STORE_RETENTION = 3600.0
POLICY_EVERY = 600.0  # seconds between reads of the policy for its retention periods


class Sidecar:
    def __init__(self, config: Config) -> None:
        if config.audit_ship is None:
            raise VeilError("audit.ship is not configured: nothing to ship to", code="config_invalid")
        self.config = config
        self.ship: AuditShip = config.audit_ship
        self.ring = config.keyring("audit")
        self.path = Path(config.audit_path)
        self.link = StoreLink(self.ship.url, timeout=self.ship.timeout, partition=self.ship.partition)
        self.replica = replica_name(self.ship.replica)
        self.shippers: dict[Path, Shipper] = {}
        self.tasks: dict[Path, asyncio.Task[None]] = {}
        self._retention_days = config.audit_max_retention_days
        self._retention_at = 0.0

    def scan(self) -> list[Shipper]:
        """Shippers for chains not yet shipped by this process."""
        new = []
        for chain_id, active in chains_to_ship(self.path):
            if active not in self.shippers:
                s = Shipper(self.link, active, self.ring, replica=self.replica, chain_id=chain_id,
                            batch_records=self.ship.batch_records, backlog_limit=self.ship.max_backlog_bytes)
                self.shippers[active] = s
                new.append(s)
        return new

    def retention(self) -> float:
        """The configured retention, or the policy's longest (the policy re-read every POLICY_EVERY
        seconds; the last good answer stays when it does not load)."""
        if self.config.audit_retention_days is not None:
            return self.config.audit_retention_days
        now = time.monotonic()
        if self._retention_at and now - self._retention_at < POLICY_EVERY:
            return self._retention_days
        self._retention_at = now
        try:
            from veil.policy.load import load_policy

            policy = load_policy(self.config.policy_paths)
            self._retention_days = retention_days(None, self.config.audit_max_retention_days,
                                                  [p.retention for p in policy.purposes.values()])
        except (VeilError, OSError) as exc:
            log.warning("policy not loaded for the retention period (%s); using %.0f days", exc, self._retention_days)
        return self._retention_days

    async def once(self) -> bool:
        """Ship everything there is now; True when the store has it all."""
        ok = True
        for s in self.scan():
            ok &= await s.drain(max(self.ship.drain_timeout, 30.0))
            s.close()
        await self.link.close()
        return ok

    async def housekeep(self, *, store: bool) -> None:
        days = self.retention()
        for active, s in list(self.shippers.items()):
            if s.chain is None:
                continue
            await asyncio.to_thread(prune_local, active, self.ring, shipped_seq=s.shipped_seq,
                                    keep_local_days=self.ship.keep_local_days, retention=days)
        if store:
            st = await self.link.get()
            markers = await st.prune(datetime.now(UTC) - timedelta(days=days), self.ring)
            pruned = sum(int(m.get("records", 0)) for m in markers)
            if pruned:
                metrics.audit_pruned_total.labels("store").inc(pruned)
                log.warning("decision-log store: %d records older than %.0f days removed", pruned, days)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_house, last_store = loop.time(), 0.0
        try:
            while not stop.is_set():
                for s in self.scan():
                    self.tasks[s.active] = asyncio.create_task(s.run(), name=f"veil-ship-{s.chain_id}")
                    log.warning("shipping %s as replica %s, chain %s", s.active, self.replica, s.chain_id)
                now = loop.time()
                if now - last_house >= HOUSEKEEPING:
                    last_house = now
                    do_store = now - last_store >= STORE_RETENTION
                    try:
                        await self.housekeep(store=do_store)
                        if do_store:
                            last_store = now
                    except (StoreUnavailable, OSError) as exc:
                        log.warning("retention skipped: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESCAN)
        finally:
            for t in self.tasks.values():
                t.cancel()
            for t in self.tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for s in self.shippers.values():
                if not await s.drain(self.ship.drain_timeout):
                    log.error("%s: records after seq %d not shipped before exit", s.active.name, s.shipped_seq)
                s.close()
            await self.link.close()


async def serve_sidecar(config: Config, *, metrics_listen: tuple[str, int] | None = None) -> None:
    if metrics_listen is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_listen[1], metrics_listen[0], registry=metrics.REGISTRY)
    metrics.init_ship_series()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await Sidecar(config).run(stop)
