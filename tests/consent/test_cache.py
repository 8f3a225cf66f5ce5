from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from veil.consent.cache import CachedConsentStore
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, ConsentStore, Status, SubjectHasher
from veil.errors import ConsentUnavailable
from veil.metrics import REGISTRY

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def given(subject: str, key: str = "k") -> ConsentEvent:
    return ConsentEvent(subject, key, Action.GIVEN, T0)


def withdrawn(subject: str, key: str = "k") -> ConsentEvent:
    return ConsentEvent(subject, key, Action.WITHDRAWN, T0.replace(hour=13))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def inner_calls() -> float:
    return sample("veil_consent_store_lookup_duration_seconds_count")


async def test_hits_after_one_batched_miss(tmp_path: Path, hasher: SubjectHasher) -> None:
    inner = SqliteConsentStore(tmp_path / "c.db", hasher)
    cache = CachedConsentStore(inner, ttl=60, maxsize=1000)
    try:
        assert isinstance(cache, ConsentStore)
        await inner.record([given("a"), given("b")])
        calls = inner_calls()
        miss_given = sample("veil_consent_lookups_total", result="given", cache="miss")
        hit_given = sample("veil_consent_lookups_total", result="given", cache="hit")
        got = await cache.current(["a", "b", "c"], ["k"])
        assert inner_calls() == calls + 1  # three misses, one inner lookup
        assert got[("c", "k")].status is Status.MISSING
        again = await cache.current(["a", "b", "c"], ["k"])
        assert inner_calls() == calls + 1
        assert again == got
        cache.flush_metrics()  # hits reach Prometheus at most once a second otherwise
        assert (cache.hits, cache.misses) == (3, 3)
        assert sample("veil_consent_lookups_total", result="given", cache="miss") == miss_given + 2
        assert sample("veil_consent_lookups_total", result="given", cache="hit") == hit_given + 2
    finally:
        await cache.close()


async def test_withdrawal_through_the_cache_counts_at_once(tmp_path: Path, hasher: SubjectHasher) -> None:
    cache = CachedConsentStore(SqliteConsentStore(tmp_path / "c.db", hasher), ttl=60, maxsize=100)
    try:
        await cache.record([given("a")])
        assert (await cache.current(["a"], ["k"]))[("a", "k")].status is Status.GIVEN
        await cache.record([withdrawn("a")])
        assert (await cache.current(["a"], ["k"]))[("a", "k")].status is Status.WITHDRAWN
    finally:
        await cache.close()


async def test_other_writers_are_seen_after_the_ttl(tmp_path: Path, hasher: SubjectHasher) -> None:
    inner = SqliteConsentStore(tmp_path / "c.db", hasher)
    other = SqliteConsentStore(tmp_path / "c.db", hasher)  # another process, say
    cache = CachedConsentStore(inner, ttl=0.2, maxsize=100)
    try:
        await other.record([given("a")])
        assert (await cache.current(["a"], ["k"]))[("a", "k")].status is Status.GIVEN
        await other.record([withdrawn("a")])
        assert (await cache.current(["a"], ["k"]))[("a", "k")].status is Status.GIVEN  # cached
        await asyncio.sleep(0.25)
        assert (await cache.current(["a"], ["k"]))[("a", "k")].status is Status.WITHDRAWN
    finally:
        await cache.close()
        await other.close()


async def test_invalidate_by_subject_hash_and_all(tmp_path: Path, hasher: SubjectHasher) -> None:
    inner = SqliteConsentStore(tmp_path / "c.db", hasher)
    cache = CachedConsentStore(inner, ttl=60, maxsize=100)
    try:
        await cache.current(["a", "b"], ["k", "j"])
        assert len(cache) == 4
        cache.invalidate(hasher("a"))  # what a change notification carries
        assert len(cache) == 2
        cache.invalidate("b")
        assert len(cache) == 0
        await cache.current(["a", "b"], ["k"])
        cache.invalidate("*")
        assert len(cache) == 0
        await cache.current(["a"], ["k"])
        cache.invalidate_all()
        assert len(cache) == 0
    finally:
        await cache.close()


async def test_bounded_lru(tmp_path: Path, hasher: SubjectHasher) -> None:
    cache = CachedConsentStore(SqliteConsentStore(tmp_path / "c.db", hasher), ttl=60, maxsize=10)
    try:
        await cache.current(["hot"], ["k"])
        for i in range(50):
            await cache.current([f"s{i}"], ["k"])
            await cache.current(["hot"], ["k"])  # stays recent
        assert len(cache) == 10
        cache.flush_metrics()
        hits = cache.hits
        await cache.current(["hot"], ["k"])
        cache.flush_metrics()
        assert cache.hits == hits + 1
        cache.invalidate("s49")
        assert len(cache) == 9
    finally:
        await cache.close()


async def test_unavailable_inner_store_is_not_cached(tmp_path: Path, hasher: SubjectHasher) -> None:
    bad = tmp_path / "c.db"
    bad.write_bytes(b"not a database" * 100)
    cache = CachedConsentStore(SqliteConsentStore(bad, hasher), ttl=60, maxsize=10)
    try:
        with pytest.raises(ConsentUnavailable):
            await cache.current(["a"], ["k"])
        assert len(cache) == 0
        assert await cache.ping() is False
    finally:
        await cache.close()


async def test_lookup_racing_an_invalidation_is_not_cached(tmp_path: Path, hasher: SubjectHasher) -> None:
    inner = SqliteConsentStore(tmp_path / "c.db", hasher)
    cache = CachedConsentStore(inner, ttl=60, maxsize=10)
    try:
        await inner.record([given("a")])
        lookup = asyncio.create_task(cache.current(["a"], ["k"]))
        await asyncio.sleep(0)  # the lookup is now waiting on the store
        cache.invalidate("a")
        assert (await lookup)[("a", "k")].status is Status.GIVEN
        assert len(cache) == 0
    finally:
        await cache.close()
