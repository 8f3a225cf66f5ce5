"""Open the consent store a URL names: `sqlite:///path` (embedded) or `postgresql://…` (scale-out).

`open_stack()` builds what `veil serve` uses: the store, a circuit breaker in front of it
(veil.consent.circuit) and the cache in front of that. A PostgreSQL store is opened without waiting
for the server: when it does not answer at start, the circuit starts open, requests that need consent
fail closed at once, and the breaker's probe connects (and migrates) when the server comes back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from veil.consent.cache import CachedConsentStore
from veil.consent.circuit import GuardedStore
from veil.consent.pg_peers import MemberInfo, Timeouts, default_member_name
from veil.consent.postgres import PostgresConsentStore
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import SubjectHasher
from veil.errors import ConsentUnavailable, VeilError

log = logging.getLogger("veil.consent")
StoreImpl = SqliteConsentStore | PostgresConsentStore


@dataclass(frozen=True)
class Tuning:
    """The store settings of `veil.yaml`'s `consent:` section besides url and cache (seconds)."""

    timeouts: Timeouts = Timeouts()
    pool_size: int = 10
    circuit_failures: int = 3
    retry_interval: float = 0.5
    lease: float = 3.0

    @property
    def budget(self) -> float:
        """The most one request-path call may take: a pooled connection, at most two statements."""
        t = self.timeouts
        return t.acquire + 2 * t.query + 0.25


@dataclass(frozen=True)
class ConsentStack:
    cache: CachedConsentStore
    guard: GuardedStore
    raw: StoreImpl


def check_url(url: str) -> str:
    """The URL, if it names a kind of store veil has; otherwise a one-line error."""
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return url
    raise VeilError("consent store URL must start with sqlite:/// or postgresql://", code="config_invalid")


async def open_raw_store(
    url: str, hasher: SubjectHasher, *, migrate: bool = True, listen: bool = True
) -> StoreImpl:
    """The store itself, without cache (the CLI and the importer use this); the server must answer."""
    if check_url(url).startswith("sqlite:///"):
        return SqliteConsentStore(url[len("sqlite:///"):], hasher)
    store = await PostgresConsentStore.connect(url, hasher, listen=listen, timeouts=CLI_TIMEOUTS)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
    return store


CLI_TIMEOUTS = Timeouts(connect=5.0, query=30.0, acquire=5.0)  # a person waits; an import batch is big


async def open_stack(
    url: str, hasher: SubjectHasher, *, cache_ttl: float, cache_size: int, tuning: Tuning | None = None,
    member_name: str | None = None,
) -> ConsentStack:
    """Store, breaker and cache for serving. Never fails because the database is away."""
    t = tuning or Tuning()
    raw: StoreImpl
    if check_url(url).startswith("sqlite:///"):
        raw = SqliteConsentStore(url[len("sqlite:///"):], hasher)
        guard = GuardedStore(raw, failures=t.circuit_failures, retry_interval=t.retry_interval,
                             budget=raw.busy_timeout + t.budget)
    else:
        member = MemberInfo(member_name or default_member_name(), cache_ttl, t.lease)
        raw = await PostgresConsentStore.connect(url, hasher, listen=True, timeouts=t.timeouts,
                                                 pool_size=t.pool_size, member=member, wait=False)
        down = False
        try:
            await asyncio.wait_for(raw.ensure(), t.timeouts.connect + t.budget + 30.0)
        except (ConsentUnavailable, TimeoutError) as exc:
            down = True
            log.warning("consent store (postgresql) unreachable at start (%s): serving purposes that need no "
                        "consent; the rest fail closed (consent_unavailable) until it answers",
                        exc if isinstance(exc, ConsentUnavailable) else "no answer")
        guard = GuardedStore(raw, failures=t.circuit_failures, retry_interval=t.retry_interval,
                             budget=t.budget, start_open=down)
    return ConsentStack(CachedConsentStore(guard, cache_ttl, cache_size), guard, raw)
