"""What a consent write through veil promises: once it answers, who has stopped honouring the old state.

`record_and_propagate()` writes the events (through the breaker), drops the subjects from this
process's cache, then in parallel

  - asks the other workers of this veil to drop them (`Peers`, veil.proxy.siblings: Unix datagrams,
    each worker answers after its cache dropped the subjects), and
  - on PostgreSQL, waits for the acknowledgement of every live member of other replicas (the ack
    request rides in the write's own transaction; veil.consent.pg_peers),

for at most `timeout` seconds. The `Propagation` names who acknowledged and who did not, and for the
latter the bound: a member that did not acknowledge stops honouring the old state within
min(its cache TTL, its lease) seconds of the commit (SQLite workers: the cache TTL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from veil import metrics
from veil.consent._schema import distinct
from veil.consent.open import ConsentStack
from veil.consent.pg_peers import Acks
from veil.consent.postgres import PostgresConsentStore
from veil.consent.store import ConsentEvent


class Peers(Protocol):
    """The other worker processes of this veil."""

    async def invalidate(self, hashes: Sequence[str], timeout: float) -> tuple[list[str], list[str]]:
        """Ask every other worker to drop these subject hashes; (acknowledged, not acknowledged) names."""
        ...


@dataclass(frozen=True)
class Propagation:
    committed_at: datetime
    acknowledged: tuple[str, ...]  # this process first, then the others that dropped the subjects
    pending: tuple[str, ...]  # live workers and replicas that did not acknowledge within the wait
    waited: float  # seconds spent waiting for acknowledgements
    bound: float  # seconds after the commit by which the pending ones honour the write regardless

    @property
    def complete(self) -> bool:
        return not self.pending

    @property
    def effective_by(self) -> datetime:
        """When every veil process honours the write: now, or the bound of the slowest pending one."""
        return self.committed_at + timedelta(seconds=0.0 if self.complete else self.bound)

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "acknowledged": list(self.acknowledged),
            "pending": list(self.pending),
            "waited_ms": round(self.waited * 1000, 2),
            "effective_by": iso(self.effective_by),
        }


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def record_and_propagate(
    stack: ConsentStack, events: Sequence[ConsentEvent], *, me: str, replica: str,
    siblings: Peers | None, timeout: float,
) -> Propagation:
    """Write, then wait (at most `timeout`) until every worker and live replica dropped the subjects.

    `me` names this process (`replica/w0`); PostgreSQL members whose name starts with `replica/` are this
    veil's own workers, answered for by `siblings`. Raises ConsentUnavailable when the write fails."""
    raw = stack.raw
    ticket = None
    if isinstance(raw, PostgresConsentStore):
        ticket = await stack.guard.call(lambda: raw.record_tracked(events))
    else:
        await stack.guard.record(events)
    committed_at = datetime.now(UTC)
    started = time.perf_counter()
    subjects = distinct([e.subject for e in events])
    for s in subjects:
        stack.cache.invalidate(s)
    hasher = stack.raw.hasher
    hashes = [hasher(s) for s in subjects]

    async def local() -> tuple[list[str], list[str]]:
        if siblings is None:
            return [], []
        return await siblings.invalidate(hashes, timeout)

    async def remote() -> Acks:
        if ticket is None:
            return Acks([], [], 0.0)
        own = f"{replica}/"
        ticket.required = {m: p for m, p in ticket.required.items() if not p.name.startswith(own)}
        return await ticket.collect(timeout)

    (sib_ok, sib_missing), acks = await asyncio.gather(local(), remote())
    waited = time.perf_counter() - started
    own_bound = stack.cache.ttl
    if isinstance(raw, PostgresConsentStore) and raw.member is not None:
        own_bound = min(own_bound, raw.member.lease)
    pending = tuple(sorted(sib_missing)) + tuple(acks.pending)
    bound = max(own_bound if sib_missing else 0.0, acks.bound)
    metrics.consent_propagation_seconds.observe(waited)
    if pending:
        metrics.consent_propagation_incomplete_total.inc()
    return Propagation(committed_at, (me, *sorted(sib_ok), *acks.acknowledged), pending, waited, bound)
