"""A bounded, short-lived cache in front of a consent store (the same `ConsentStore` interface).

Entries are keyed by (subject, consent key) in memory only, live `ttl` seconds and are evicted least
recently used beyond `maxsize`. Misses of one `current()` call go to the inner store in one call.
`record()` through the cache invalidates the subjects it wrote before returning, so a withdrawal made
through this instance counts from the next request. Other writers are seen after `ttl` seconds, or at
once when the inner store reports changes (`on_change`, e.g. PostgreSQL LISTEN/NOTIFY).

A store with a lease (`on_lease`, PostgreSQL members: veil.consent.pg_peers) sets `trusted_until`:
past it, the cache answers nothing from memory (every lookup goes to the store) until the lease is
renewed, so a process that cannot hear change notifications stops serving what it cached.

`invalidate()` accepts a raw subject id or its store hash (what change notifications carry) under any
key of the ring (during a key rotation, replicas still writing under the old key notify old hashes);
`"*"` (ALL_SUBJECTS) drops everything.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from veil import metrics
from veil.consent._schema import ALL_SUBJECTS, distinct
from veil.consent.store import ConsentEvent, ConsentState, ConsentStore, Status, SubjectHasher

Entry = tuple[ConsentState, float, int]  # (state, expiry on the monotonic clock, index in _STATUSES)

METRICS_FLUSH_SECONDS = 1.0

_STATUSES = tuple(Status)
_INDEX = {s: i for i, s in enumerate(_STATUSES)}
_HIT = [metrics.consent_lookups_total.labels(s.value, "hit") for s in _STATUSES]
_MISS = {s.value: metrics.consent_lookups_total.labels(s.value, "miss") for s in Status}


class CachedConsentStore:
    def __init__(
        self, inner: ConsentStore, ttl: float, maxsize: int, *, hasher: SubjectHasher | None = None
    ) -> None:
        if ttl < 0 or maxsize < 1:
            raise ValueError("cache ttl must be >= 0 and maxsize >= 1")
        self.inner = inner
        self.ttl = ttl
        self.maxsize = maxsize
        self.hasher: SubjectHasher | None = hasher or getattr(inner, "hasher", None)
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._keys: dict[str, set[str]] = {}  # subject → its cached consent keys
        self._hash_of: dict[str, list[str]] = {}  # subject → its store hashes (computed on a miss only)
        self._by_hash: dict[str, set[str]] = {}  # store hash → raw subjects cached under it
        self._epoch = 0  # bumped by every invalidation: a lookup that raced one is not cached
        self.hits = 0  # up to date after flush_metrics()
        self.misses = 0
        self._pending_hits = [0] * len(_STATUSES)
        self._flush_at = 0.0
        self.trusted_until = math.inf  # monotonic; moved by the store's lease, if it has one
        on_change: Any = getattr(inner, "on_change", None)
        if callable(on_change):
            on_change(self.invalidate)
        on_lease: Any = getattr(inner, "on_lease", None)
        if callable(on_lease):
            on_lease(self._set_lease)

    def _set_lease(self, until: float) -> None:
        self.trusted_until = until

    async def current(
        self, subjects: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], ConsentState]:
        now = time.monotonic()
        entries = self._entries
        pending = self._pending_hits
        out: dict[tuple[str, str], ConsentState] = {}
        missing: list[str] = []
        if now >= self.trusted_until:  # the lease lapsed: nothing cached may answer
            await self._fill(distinct(subjects), keys, out)
            return out
        get, touch = entries.get, entries.move_to_end  # a list response looks up a thousand subjects
        for s in subjects:
            for k in keys:
                pair = (s, k)
                entry = get(pair)
                if entry is not None and entry[1] > now:
                    touch(pair)
                    out[pair] = entry[0]
                    pending[entry[2]] += 1
                else:
                    missing.append(s)
                    break
        if missing:
            await self._fill(distinct(missing), keys, out)
        elif now >= self._flush_at:
            self.flush_metrics(now)
        return out

    def flush_metrics(self, now: float | None = None) -> None:
        """Move hit counts into Prometheus (done at most once a second on the hot path: inc() is slow)."""
        pending = self._pending_hits
        for i, n in enumerate(pending):
            if n:
                _HIT[i].inc(n)
                self.hits += n
                pending[i] = 0
        self._flush_at = (time.monotonic() if now is None else now) + METRICS_FLUSH_SECONDS

    async def _fill(
        self, subjects: list[str], keys: Sequence[str], out: dict[tuple[str, str], ConsentState]
    ) -> None:
        epoch = self._epoch
        started = time.perf_counter()
        self.flush_metrics()
        found = await self.inner.current(subjects, keys)
        metrics.consent_store_latency.observe(time.perf_counter() - started)
        store = epoch == self._epoch and self.ttl > 0
        expires = time.monotonic() + self.ttl
        for s in subjects:
            for k in keys:
                pair = (s, k)
                state = found.get(pair) or ConsentState(k, Status.MISSING)
                if pair not in out:
                    self.misses += 1
                    _MISS[state.status.value].inc()
                out[pair] = state
                if store:
                    self._put(pair, state, expires)

    def _put(self, pair: tuple[str, str], state: ConsentState, expires: float) -> None:
        entries = self._entries
        if pair not in entries:
            subject = pair[0]
            keys = self._keys.get(subject)
            if keys is None:
                keys = self._keys[subject] = set()
                hasher = self.hasher
                if hasher is not None:
                    hashes = hasher.all(subject) if hasher.rotating else [hasher(subject)]
                    self._hash_of[subject] = hashes
                    for h in hashes:
                        self._by_hash.setdefault(h, set()).add(subject)
            keys.add(pair[1])
        entries[pair] = (state, expires, _INDEX[state.status])
        entries.move_to_end(pair)
        while len(entries) > self.maxsize:
            old, _ = entries.popitem(last=False)
            self._forget_key(old)

    def _forget_key(self, pair: tuple[str, str]) -> None:
        subject = pair[0]
        keys = self._keys.get(subject)
        if keys is None:
            return
        keys.discard(pair[1])
        if not keys:
            del self._keys[subject]
            for h in self._hash_of.pop(subject, ()):
                names = self._by_hash.get(h)
                if names is not None:
                    names.discard(subject)
                    if not names:
                        del self._by_hash[h]

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        try:
            await self.inner.record(events)
        finally:
            for s in distinct([e.subject for e in events]):
                self.invalidate(s)

    async def history(self, subject: str) -> list[ConsentEvent]:
        return await self.inner.history(subject)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        self.flush_metrics()
        self.invalidate_all()
        await self.inner.close()

    def invalidate(self, subject_or_hash: str) -> None:
        """Forget one subject (raw id or store hash); "*" forgets everything."""
        if subject_or_hash == ALL_SUBJECTS:
            self.invalidate_all()
            return
        self._epoch += 1
        names = set(self._by_hash.get(subject_or_hash, ()))
        names.add(subject_or_hash)
        for subject in names:
            for key in list(self._keys.get(subject, ())):
                pair = (subject, key)
                self._entries.pop(pair, None)
                self._forget_key(pair)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._keys.clear()
        self._hash_of.clear()
        self._by_hash.clear()

    def __len__(self) -> int:
        return len(self._entries)
