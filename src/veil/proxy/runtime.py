"""Everything a running veil shares between its listeners: config, policy, consent store, decision
log, upstream pool, keys. Created once per process by `veil serve` (or a test) and closed on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from veil import metrics
from veil.audit.log import AuditLog
from veil.config import Config
from veil.consent.open import open_store
from veil.consent.store import ConsentStore, SubjectHasher
from veil.discovery.recorder import Discovery
from veil.errors import VeilError
from veil.keys import KeyRing, generate_key
from veil.proxy.policyholder import PolicyHolder
from veil.proxy.upstream import UpstreamPool

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


def _discovery(c: Config, chain_id: str) -> Discovery:
    from veil.discovery.recorder import Settings
    from veil.proxy.enforce import decode_content, is_json_type

    d = c.discovery
    assert d is not None
    settings = Settings(True, d.routes, d.sample, d.state, d.flush_seconds, d.max_paths, d.array_items,
                        d.max_values, d.phone_regions, c.max_body_bytes)
    return Discovery(settings, decode=decode_content, is_json=is_json_type, replica=chain_id)


@dataclass
class Runtime:
    config: Config
    chain_id: str = "main"
    policy: PolicyHolder = field(init=False)
    store: ConsentStore = field(init=False)
    audit: AuditLog = field(init=False)
    upstreams: UpstreamPool = field(init=False)
    pseudonym_ring: KeyRing = field(init=False)
    audit_ring: KeyRing = field(init=False)
    limiter: AuthLimiter = field(init=False)
    store_ok: bool = True
    discovery: Discovery | None = None  # report-only discovery (veil.discovery); None: off
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.config
        self.pseudonym_ring = _ring(c, "pseudonym")
        self.audit_ring = _ring(c, "audit")
        hash_key = _ring(c, "hash").current  # ephemeral when not configured: never the public dev key
        self.policy = PolicyHolder(c.policy_paths, hash_key=hash_key)
        self.policy.load_initial()
        self.limiter = AuthLimiter(c.auth_fail_limit)
        self.upstreams = UpstreamPool(c.upstreams)
        self.audit = AuditLog(
            c.audit_path, self.audit_ring, chain_id=self.chain_id,
            flush_interval=c.audit_flush_ms, checkpoint_every=c.audit_checkpoint_every, fsync=c.audit_fsync,
            fsync_interval=c.audit_fsync_interval_ms,
        )
        if c.discovery is not None:
            self.discovery = _discovery(c, self.chain_id)

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
        if self.discovery is not None:
            await self.discovery.close()
        await self.store.close()

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
            "policy_error": self.policy.last_error,
        }
