"""PostgreSQL cut off by a network partition (a relay that goes silent, never the shared server):
short timeouts, the circuit breaker, starting without the database, the listener's reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.consent.test_postgres import T0, ev, wait_for
from tests.relay import Relay
from veil.consent.circuit import Circuit, GuardedStore
from veil.consent.open import ConsentStack, Tuning, open_stack
from veil.consent.pg_peers import Timeouts
from veil.consent.postgres import PostgresConsentStore
from veil.consent.store import Action, Status, SubjectHasher
from veil.errors import ConsentUnavailable

pytestmark = pytest.mark.postgres
TUNING = Tuning(Timeouts(connect=0.5, query=0.3, acquire=0.3), pool_size=4, circuit_failures=2,
                retry_interval=0.2, lease=1.5)


@pytest.fixture
async def relay(pg_schema: str) -> AsyncIterator[Relay]:
    r = Relay(5432)
    yield r
    await asyncio.to_thread(r.close)


def via(relay: Relay, schema: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={schema}"


async def stack_on(relay: Relay, schema: str, hasher: SubjectHasher, **kw: object) -> ConsentStack:
    return await open_stack(via(relay, schema), hasher, cache_ttl=30.0, cache_size=1000, tuning=TUNING,
                            member_name="test/w0", **kw)  # type: ignore[arg-type]


async def timed_failure(stack: ConsentStack, subject: str) -> float:
    started = time.monotonic()
    with pytest.raises(ConsentUnavailable):
        await stack.cache.current([subject], ["k"])
    return time.monotonic() - started


def test_circuit_opens_after_consecutive_failures_and_closes() -> None:
    c = Circuit(failures=3)
    assert not c.failed("a") and not c.failed("b")
    c.succeeded()  # a success in between: the count starts again
    assert not c.failed("a") and not c.failed("b") and c.failed("c")
    assert c.open and c.reason == "c" and c.trips == 1
    c.close()
    assert not c.open and c.failures == 0


async def test_silent_partition_fails_fast_then_at_once_and_recovers(
    relay: Relay, pg_schema: str, hasher: SubjectHasher
) -> None:
    stack = await stack_on(relay, pg_schema, hasher)
    try:
        assert stack.guard.available
        await stack.cache.record([ev("alice")])
        assert (await stack.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
        await asyncio.to_thread(relay.blackhole)
        first = [await timed_failure(stack, f"s{i}") for i in range(TUNING.circuit_failures)]
        assert not stack.guard.available  # open: the store is known to be down
        after = [await timed_failure(stack, f"t{i}") for i in range(20)]
        with pytest.raises(ConsentUnavailable, match="circuit open"):
            await stack.guard.record([ev("bob")])
        print(f"\nblackholed: first lookups failed after {[round(x, 3) for x in first]} s, "
              f"then in {max(after) * 1000:.2f} ms at most")
        assert max(first) <= TUNING.budget + 0.3, first
        assert max(after) < 0.01, after
        # a cached answer is not trusted once the lease lapses (no heartbeat through the silence)
        await wait_for(lambda: time.monotonic() > stack.cache.trusted_until, timeout=TUNING.lease + 2)
        with pytest.raises(ConsentUnavailable):
            await stack.cache.current(["alice"], ["k"])
        await asyncio.to_thread(relay.restore)
        started = time.monotonic()
        await wait_for(lambda: stack.guard.available, timeout=5)
        back = time.monotonic() - started
        print(f"restored: circuit closed after {back:.2f}s")
        assert back < 2.0
        assert (await stack.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
    finally:
        await stack.cache.close()


async def test_full_pool_does_not_multiply_the_wait(relay: Relay, pg_schema: str, hasher: SubjectHasher) -> None:
    """Many lookups at once into a silent network: each gives up within the budget, not pool-size times it."""
    stack = await stack_on(relay, pg_schema, hasher)
    try:
        await stack.cache.current(["warm"], ["k"])
        await asyncio.to_thread(relay.blackhole)
        started = time.monotonic()
        results = await asyncio.gather(*(stack.cache.current([f"x{i}"], ["k"]) for i in range(40)),
                                       return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(r, ConsentUnavailable) for r in results), results
        print(f"\n40 concurrent lookups into the silence: all failed within {took:.2f}s")
        assert took <= TUNING.budget + 0.3
    finally:
        await asyncio.to_thread(relay.restore)
        await stack.cache.close()


async def test_starts_without_the_database_and_connects_when_it_answers(
    relay: Relay, pg_schema: str, hasher: SubjectHasher
) -> None:
    """The schema does not exist yet and the server is silent: opening takes about one attempt, lookups
    fail at once, and once the server answers the probe migrates and the store serves."""
    await asyncio.to_thread(relay.blackhole)
    started = time.monotonic()
    stack = await stack_on(relay, pg_schema, hasher)
    opened = time.monotonic() - started
    try:
        assert opened < TUNING.budget + 1.0, opened
        assert not stack.guard.available
        assert await timed_failure(stack, "alice") < 0.01
        assert not stack.raw.migrated
        await asyncio.to_thread(relay.restore)
        await wait_for(lambda: stack.guard.available, timeout=5)
        assert stack.raw.migrated  # the probe ran the migrations
        await stack.cache.record([ev("alice")])
        assert (await stack.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
    finally:
        await stack.cache.close()


async def test_refused_connections_at_start(relay: Relay, pg_schema: str, hasher: SubjectHasher) -> None:
    await asyncio.to_thread(relay.refuse)
    stack = await stack_on(relay, pg_schema, hasher)
    try:
        assert not stack.guard.available
        await asyncio.to_thread(relay.restore)
        await wait_for(lambda: stack.guard.available, timeout=5)
        await wait_for(lambda: stack.raw.listening, timeout=5)
    finally:
        await stack.cache.close()


async def test_listener_reconnects_and_drops_the_cache(
    relay: Relay, pg_schema: str, hasher: SubjectHasher, pg_url: str
) -> None:
    """Partition and heal: the listener notices the silence (its heartbeat times out), reconnects once
    the network is back, emits "*" (it may have missed changes), and notifications flow again."""
    store = await PostgresConsentStore.connect(via(relay, pg_schema), hasher, listen=True,
                                               timeouts=TUNING.timeouts)
    writer = await PostgresConsentStore.connect(pg_url, hasher, listen=False)
    seen: list[str] = []
    store.on_change(seen.append)
    try:
        await writer.migrate()
        await store.record([ev("alice")])
        await asyncio.to_thread(relay.blackhole)
        with pytest.raises(ConsentUnavailable):
            await store.current(["alice"], ["k"])
        assert await store.ping() is False
        await wait_for(lambda: not store.listening, timeout=5)
        await asyncio.to_thread(relay.restore)
        await wait_for(lambda: store.listening, timeout=10)
        assert "*" in seen
        seen.clear()
        await writer.record([ev("alice", Action.WITHDRAWN, T0 + timedelta(hours=1))])
        await wait_for(lambda: hasher("alice") in seen)
        assert (await store.current(["alice"], ["k"]))[("alice", "k")].status is Status.WITHDRAWN
    finally:
        await asyncio.to_thread(relay.restore)
        await writer.close()
        await store.close()


async def test_guard_deadline_cuts_a_store_that_never_answers(hasher: SubjectHasher) -> None:
    class Stuck:
        async def current(self, subjects: object, keys: object) -> dict[object, object]:
            await asyncio.sleep(3600)
            return {}

        async def ping(self) -> bool:
            return False

        async def close(self) -> None:
            return None

    guard = GuardedStore(Stuck(), failures=1, budget=0.1, retry_interval=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(ConsentUnavailable, match="in time"):
        await guard.current(["a"], ["k"])
    assert time.monotonic() - started < 0.5 and not guard.available
    await guard.close()
