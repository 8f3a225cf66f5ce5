"""Everything a running veil shares between its listeners: config, policy, consent store, decision
log, upstream pool, keys. Created once per process by `veil serve` (or a test) and closed on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from veil import metrics
from veil.audit.log import AuditLog
from veil.config import KEY_PATHS, RELOADABLE, Config, FlowSettings, changed_settings, load_config
from veil.consent.open import open_store
from veil.consent.store import ConsentStore, SubjectHasher
from veil.errors import VeilError
from veil.keys import KeyRing, generate_key
from veil.proxy.policyholder import PolicyHolder
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


@dataclass
class Runtime:
    """`transports` replaces the socket client of named upstreams (in-process runs of the whole app);
    `clock` is what the flow calls now (conformance cases fix it)."""

    config: Config
    chain_id: str = "main"
    transports: Mapping[str, Transport] | None = None
    clock: Callable[[], datetime] = _utcnow
    policy: PolicyHolder = field(init=False)
    store: ConsentStore = field(init=False)
    audit: AuditLog = field(init=False)
    upstreams: UpstreamPool = field(init=False)
    pseudonym_ring: KeyRing = field(init=False)
    audit_ring: KeyRing = field(init=False)
    limiter: AuthLimiter = field(init=False)
    store_ok: bool = True
    settings: FlowSettings = field(init=False)  # what the request flow reads of the config (reloadable)
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

    async def start(self) -> None:
        c = self.config
        hasher = SubjectHasher(_ring(c, "store"))
        self.store = await open_store(c.consent_url, hasher, cache_ttl=c.consent_cache_ttl,
                                      cache_size=c.consent_cache_size)
        await self.upstreams.start()
        try:
            await self.audit.start()
        except VeilError as exc:
            log.error("decision log not writable at start: %s", exc)
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
        while True:
            try:
                self.store_ok = await self.store.ping()
            except Exception:
                self.store_ok = False
            metrics.consent_store_up.set(1 if self.store_ok else 0)
            await asyncio.sleep(2.0)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        metrics.tally.flush()
        await self.upstreams.close()
        await self.audit.close()
        await self.store.close()

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

    def readiness(self) -> dict[str, object]:
        policy = self.policy.current
        checks = {
            "policy": policy is not None,
            "consent_store": self.store_ok,
            "decision_log": self.audit.healthy,
        }
        return {
            "ready": all(checks.values()),
            "checks": checks,
            "policy_version": policy.version if policy else None,
            "mode": self.settings.mode,
            "policy_error": self.policy.last_error,
        }
