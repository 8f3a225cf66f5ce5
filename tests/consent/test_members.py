"""Members, leases and acknowledgements on the real PostgreSQL (veil.consent.pg_peers): a write
waits for every live member, names the ones that did not answer, and a member cut off from the
database stops serving its cache when its lease lapses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.consent.conftest import PG_URL
from tests.consent.test_postgres import T0, ev, wait_for
from tests.relay import Relay
from veil.consent.open import ConsentStack, Tuning, open_stack
from veil.consent.pg_peers import Timeouts
from veil.consent.propagate import record_and_propagate
from veil.consent.store import Action, Status, SubjectHasher
from veil.errors import ConsentUnavailable

pytestmark = pytest.mark.postgres
TUNING = Tuning(Timeouts(connect=0.5, query=0.3, acquire=0.3), pool_size=4, circuit_failures=2,
                retry_interval=0.2, lease=1.5)
Make = Callable[..., Awaitable[ConsentStack]]


@pytest.fixture
async def relay(pg_schema: str) -> AsyncIterator[Relay]:
    r = Relay(5432)
    yield r
    await asyncio.to_thread(r.close)


@pytest.fixture
async def member(pg_url: str, hasher: SubjectHasher) -> AsyncIterator[Make]:
    opened: list[ConsentStack] = []

    async def make(name: str, url: str | None = None) -> ConsentStack:
        stack = await open_stack(url or pg_url, hasher, cache_ttl=30.0, cache_size=1000, tuning=TUNING,
                                 member_name=name)
        opened.append(stack)
        await wait_for(lambda: stack.raw.listening and stack.cache.trusted_until > time.monotonic())
        return stack

    yield make
    for stack in opened:
        await stack.cache.close()


async def members_in(schema: str) -> list[str]:
    conn = await asyncpg.connect(PG_URL)
    try:
        return sorted(r[0] for r in await conn.fetch(f'SELECT name FROM "{schema}".veil_members'))
    finally:
        await conn.close()


async def write(stack: ConsentStack, name: str, action: Action, at_minutes: int = 0) -> object:
    return await record_and_propagate(stack, [ev("alice", action, T0 + timedelta(minutes=at_minutes))],
                                      me=name, replica=name.split("/")[0], siblings=None, timeout=1.0)


async def test_write_waits_for_every_live_member(member: Make, pg_schema: str) -> None:
    a, b, c = await member("a/w0"), await member("b/w0"), await member("c/w0")
    assert await members_in(pg_schema) == ["a/w0", "b/w0", "c/w0"]
    await write(a, "a/w0", Action.GIVEN)
    for s in (b, c):
        assert (await s.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
    done = await write(a, "a/w0", Action.WITHDRAWN, 1)
    assert done.complete and done.acknowledged == ("a/w0", "b/w0", "c/w0"), done  # type: ignore[attr-defined]
    # acknowledged means dropped: the next lookup on b and c reads the withdrawal, no waiting
    for s in (b, c):
        assert (await s.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.WITHDRAWN
    print(f"\nthree members: acknowledged after {done.waited * 1000:.2f} ms")  # type: ignore[attr-defined]
    await b.cache.close()  # a member that leaves deletes its row: nobody waits for it
    assert await members_in(pg_schema) == ["a/w0", "c/w0"]
    done = await write(a, "a/w0", Action.GIVEN, 2)
    assert done.complete and done.acknowledged == ("a/w0", "c/w0")  # type: ignore[attr-defined]


async def test_a_member_cut_off_is_named_then_loses_its_lease(
    member: Make, relay: Relay, pg_schema: str
) -> None:
    a = await member("a/w0")
    b = await member("b/w0", f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={pg_schema}")
    await write(a, "a/w0", Action.GIVEN)
    await asyncio.sleep(0.2)
    assert (await b.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN  # cached now
    await asyncio.to_thread(relay.blackhole)
    done = await write(a, "a/w0", Action.WITHDRAWN, 1)  # b is still live (its lease runs) but deaf
    assert not done.complete and done.pending == ("b/w0",), done  # type: ignore[attr-defined]
    assert done.bound == min(30.0, TUNING.lease)  # type: ignore[attr-defined]
    effective_by = done.effective_by  # type: ignore[attr-defined]
    # b cannot hear the withdrawal; its lease lapses and it stops answering from its cache
    await wait_for(lambda: time.monotonic() > b.cache.trusted_until, timeout=TUNING.lease + 1)
    with pytest.raises(ConsentUnavailable):
        await b.cache.current(["alice"], ["k"])
    assert datetime.now(UTC) <= effective_by + timedelta(seconds=0.5)
    # once b's last heartbeat (before the commit) is older than its lease, writers no longer wait for it
    await asyncio.sleep(max(0.0, (effective_by - datetime.now(UTC)).total_seconds()) + 0.1)
    done = await write(a, "a/w0", Action.GIVEN, 2)
    assert done.complete and done.acknowledged == ("a/w0",), done  # type: ignore[attr-defined]
    await asyncio.to_thread(relay.restore)
    # healed: b renews its lease (dropping what it cached before) and answers from the database
    await wait_for(lambda: b.cache.trusted_until > time.monotonic() and b.guard.available, timeout=10)
    assert (await b.cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
    done = await write(a, "a/w0", Action.WITHDRAWN, 3)
    assert done.complete and done.acknowledged == ("a/w0", "b/w0"), done  # type: ignore[attr-defined]


async def test_a_writer_that_cannot_hear_acknowledgements_waits_for_nobody() -> None:
    from veil.consent.pg_peers import AckWait

    started = time.monotonic()
    assert await AckWait("w1", deaf=True).until({"m1", "m2"}, timeout=5.0) == {"m1", "m2"}
    assert time.monotonic() - started < 0.1
    wait = AckWait("w2")
    wait.add("m1")
    assert await wait.until({"m1", "m2"}, timeout=0.05) == {"m2"}
