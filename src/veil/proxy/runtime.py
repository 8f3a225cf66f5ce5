"""Everything a running veil shares between its listeners: config, policy, consent store, decision
log, upstream pool, keys. Created once per process by `veil serve` (or a test) and closed on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from veil import metrics
from veil.audit.log import AuditLog
from veil.config import KEY_PATHS, RELOADABLE, Config, FlowSettings, changed_settings, load_config
from veil.consent.open import ConsentStack, Tuning, open_stack
from veil.consent.pg_peers import Timeouts, default_member_name
from veil.consent.propagate import Propagation, record_and_propagate
from veil.consent.store import ConsentEvent, ConsentStore, SubjectHasher
from veil.discovery.recorder import Discovery
from veil.errors import VeilError
from veil.keys import KeyRing, generate_key
from veil.proxy.policyholder import PolicyHolder
from veil.proxy.readiness import WorkerReport
from veil.proxy.siblings import REPLICA_ENV, Siblings
from veil.proxy.upstream import ERROR_KINDS, Transport, UpstreamPool

log = logging.getLogger("veil")


def _ring(config: Config, name: str) -> KeyRing:
    if name in config.keys:
        return config.keyring(name)
    log.warning("keys.%s is not configured: using an ephemeral key for this process only", name)
    return KeyRing.single(bytes.fromhex(generate_key()), "ephemeral")


class AuthLimiter:
    """Failed authentications per client address per minute; over the limit → 429 for a minute."""

    def __init__(self, limit: int, window: float = 60.0, max_entries: int = 100_000) -> None:
        self.limit, self.window, self.max_entries = limit, window, max_entries
        self._fails: dict[str, tuple[float, int]] = {}

    def blocked(self, addr: str) -> bool:
        entry = self._fails.get(addr)
        if entry is None:
            return False
        start, count = entry
        if time.monotonic() - start > self.window:
            del self._fails[addr]
            return False
        return count >= self.limit

    def failed(self, addr: str) -> None:
        now = time.monotonic()
        start, count = self._fails.get(addr, (now, 0))
        if now - start > self.window:
            start, count = now, 0
        if len(self._fails) >= self.max_entries:
            self._fails.clear()  # bounded memory; an attacker cycling addresses gains nothing from it
        self._fails[addr] = (start, count + 1)


@dataclass(frozen=True)
class Reloaded:
    """What a reload did: the policy (reloaded, or rejected with the last good one kept) and the config
    file (settings applied now; settings that changed but need a restart; or the file's error)."""

    policy_ok: bool
    version: str | None
    policy_error: str | None
    applied: tuple[str, ...] = ()  # key paths, e.g. "mode"
    restart_required: tuple[str, ...] = ()
    config_error: str | None = None

    @property
    def ok(self) -> bool:
        """True only when everything the files now say is in effect."""
        return self.policy_ok and not self.restart_required and self.config_error is None

    def to_json(self, mode: str) -> dict[str, object]:
        return {
            "ok": self.ok, "version": self.version, "error": self.policy_error, "mode": mode,
            "config": {"applied": list(self.applied), "restart_required": list(self.restart_required),
                       "error": self.config_error},
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _discovery(c: Config, chain_id: str) -> Discovery:
    from veil.discovery.recorder import Settings
    from veil.redact.reading import decode_content, is_json_type

    d = c.discovery
    assert d is not None
    settings = Settings(True, d.routes, d.sample, d.state, d.flush_seconds, d.max_paths, d.array_items,
                        d.max_values, d.phone_regions, c.max_body_bytes)
    return Discovery(settings, decode=decode_content, is_json=is_json_type, replica=chain_id)


@dataclass
class Runtime:
    """`transports` replaces the socket client of named upstreams (in-process runs of the whole app);
    `clock` is what the flow calls now (conformance cases fix it)."""

    config: Config
    chain_id: str = "main"
    transports: Mapping[str, Transport] | None = None
    clock: Callable[[], datetime] = _utcnow
    policy: PolicyHolder = field(init=False)
    store: ConsentStore = field(init=False)  # the cache, in front of the breaker, in front of the store
    consent: ConsentStack = field(init=False)
    siblings: Siblings | None = None  # the other workers of this veil (veil serve --workers N)
    audit: AuditLog = field(init=False)
    upstreams: UpstreamPool = field(init=False)
    pseudonym_ring: KeyRing = field(init=False)
    audit_ring: KeyRing = field(init=False)
    limiter: AuthLimiter = field(init=False)
    settings: FlowSettings = field(init=False)  # what the request flow reads of the config (reloadable)
    discovery: Discovery | None = None  # report-only discovery (veil.discovery); None: off
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.config
        self.settings = c.flow()
        self.pseudonym_ring = _ring(c, "pseudonym")
        self.audit_ring = _ring(c, "audit")
        hash_key = _ring(c, "hash").current  # ephemeral when not configured: never the public dev key
        metrics.init_series([u.name for u in c.upstreams], ERROR_KINDS)  # error series start at 0
        self.policy = PolicyHolder(c.policy_paths, hash_key=hash_key, on_install=self._publish_modes)
        self.policy.load_initial()
        self.limiter = AuthLimiter(c.auth_fail_limit)
        self.upstreams = UpstreamPool(c.upstreams, self.transports)
        self.audit = AuditLog(
            c.audit_path, self.audit_ring, chain_id=self.chain_id,
            flush_interval=c.audit_flush_ms, checkpoint_every=c.audit_checkpoint_every, fsync=c.audit_fsync,
            fsync_interval=c.audit_fsync_interval_ms,
        )
        if c.discovery is not None:
            self.discovery = _discovery(c, self.chain_id)

    @property
    def replica(self) -> str:
        """This veil's name among the replicas (`host:pid` of the supervisor, or of this process)."""
        return os.environ.get(REPLICA_ENV) or default_member_name()

    @property
    def member_name(self) -> str:
        return f"{self.replica}/{self.chain_id}"

    async def start(self) -> None:
        c = self.config
        hasher = SubjectHasher(_ring(c, "store"))
        # the bus first: a worker that holds a cache must already hear its siblings' invalidations
        self.siblings = Siblings.from_env(self.chain_id, on_invalidate=self._invalidate_hashes,
                                          on_ready=lambda: self.local_readiness().to_json())
        if self.siblings is not None:
            await self.siblings.start()
        tuning = Tuning(
            Timeouts(c.consent_connect_timeout, c.consent_query_timeout, c.consent_acquire_timeout),
            c.consent_pool_size, c.consent_circuit_failures, c.consent_retry_interval, c.consent_lease,
        )
        self.consent = await open_stack(c.consent_url, hasher, cache_ttl=c.consent_cache_ttl,
                                        cache_size=c.consent_cache_size, tuning=tuning,
                                        member_name=self.member_name)
        self.store = self.consent.cache
        metrics.consent_store_up.set(1 if self.store_available else 0)
        await self.upstreams.start()
        try:
            await self.audit.start()
        except VeilError as exc:
            log.error("decision log not writable at start: %s", exc)
        if self.discovery is not None:
            await self.discovery.start()
        if c.policy_watch:
            self._tasks.append(asyncio.create_task(self.policy.watch()))
        self._tasks.append(asyncio.create_task(self._probe_store()))
        self._tasks.append(asyncio.create_task(self._flush_metrics()))

    @staticmethod
    async def _flush_metrics() -> None:
        while True:
            await asyncio.sleep(metrics.Tally.FLUSH_INTERVAL)
            metrics.tally.flush()

    async def _probe_store(self) -> None:
        """Ping through the breaker every second: a failed ping counts toward opening it, so an outage
        is noticed without traffic. Readiness follows the breaker (`store_available`)."""
        while True:
            with contextlib.suppress(Exception):
                await self.consent.guard.ping()
            metrics.consent_store_up.set(1 if self.store_available else 0)
            await asyncio.sleep(1.0)

    @property
    def store_available(self) -> bool:
        """False while the consent store's circuit is open (veil.consent.circuit)."""
        return self.consent.guard.available

    def _invalidate_hashes(self, hashes: list[str]) -> None:
        for h in hashes:
            self.consent.cache.invalidate(h)

    async def record_consent(self, events: Sequence[ConsentEvent]) -> Propagation:
        """Write consent events; answer once every worker and live replica dropped the subjects, or
        after `consent.ack_timeout` naming those that did not (veil.consent.propagate)."""
        return await record_and_propagate(self.consent, events, me=self.member_name, replica=self.replica,
                                          siblings=self.siblings, timeout=self.config.consent_ack_timeout)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        metrics.tally.flush()
        await self.upstreams.close()
        await self.audit.close()
        if self.discovery is not None:
            await self.discovery.close()
        await self.store.close()
        if self.siblings is not None:
            self.siblings.close()

    # ------------------------------------------------------------------ reload
    async def reload(self) -> Reloaded:
        """Reload the policy files and the config file (SIGHUP, admin POST /reload). Settings listed in
        veil.config.RELOADABLE take effect at once; any other changed setting is reported as needing a
        restart (and left as it was); an invalid config file changes nothing."""
        policy_ok = await self.policy.reload()
        applied: list[str] = []
        restart: list[str] = []
        error: str | None = None
        if self.config.source is not None:
            try:
                new = await asyncio.to_thread(load_config, self.config.source)
            except VeilError as exc:
                error = str(exc)
                log.error("config reload rejected; keeping the running settings: %s", exc)
            else:
                changed = changed_settings(self.config, new)
                now = {f: getattr(new, f) for f in changed if f in RELOADABLE}
                applied = sorted(KEY_PATHS.get(f, f) for f in now)
                restart = sorted(KEY_PATHS.get(f, f) for f in changed if f not in RELOADABLE)
                if now:
                    from dataclasses import replace

                    self.config = replace(self.config, **now)
                    self.settings = self.config.flow()
                    self.limiter.limit = self.config.auth_fail_limit
                    self._publish_modes()
                    log.info("config reloaded: %s applied", ", ".join(applied))
                if restart:
                    log.warning("config changes need a restart to take effect: %s", ", ".join(restart))
        policy = self.policy.current
        return Reloaded(policy_ok, policy.version if policy else None, self.policy.last_error, tuple(applied),
                        tuple(restart), error)

    def _publish_modes(self) -> None:
        policy = self.policy.current
        if policy is None:
            return
        mode = self.settings.mode if hasattr(self, "settings") else self.config.mode
        metrics.set_route_modes({r.template: r.mode or mode for r in policy.routes})

    def readiness(self) -> dict[str, Any]:
        """This process's checks (name → ok) and details. Add a check here as one more entry of
        `checks`; /readyz turns a failed one into a reason code (veil.proxy.readiness)."""
        policy = self.policy.current
        checks: dict[str, bool] = {
            "policy": policy is not None,
            "consent_store": self.store_available,
            "decision_log": self.audit.healthy,
        }
        return {
            "checks": checks,
            # open fields (shown without a token): the effective mode (reloadable)
            "public": {"mode": self.settings.mode},
            # details (read token only): may name files and quote policy source
            "details": {
                "policy_version": policy.version if policy else None,
                "policy_error": self.policy.last_error,
                "consent_circuit": self.consent.guard.circuit.reason or None,
            },
        }

    def local_readiness(self) -> WorkerReport:
        return WorkerReport.of(self.chain_id, self.readiness())

    async def readiness_all(self, timeout: float = 0.5) -> list[WorkerReport]:
        """This worker's report and every sibling's (a sibling that does not answer is not ready)."""
        reports = [self.local_readiness()]
        if self.siblings is not None:
            for name, raw in (await self.siblings.readiness(timeout)).items():
                reports.append(WorkerReport.from_json(name, raw))
        return sorted(reports, key=lambda r: r.worker)
