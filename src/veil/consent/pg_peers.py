"""The PostgreSQL listener connection: change notifications, membership with a lease, acknowledgements.

One connection per process does `LISTEN veil_consent` and hands each payload (a subject hash, or `*`)
to the store's change callbacks; after it reconnects it emits `*` (notifications sent while it was
away are lost).

**Members.** A process that serves from a cache (`veil serve`: every worker of every replica) is a
*member*: its listener upserts a row of `veil_members` every `lease / 3` seconds (the heartbeat) and the
row's `seen_at` tells writers it is alive. The heartbeat is also the member's **lease** on its cache: it
trusts cached consent only until `lease` seconds after it *sent* its last successful heartbeat
(`fresh_until`, on its monotonic clock), so a member cut off from the database (a silent partition, a
dead listener) stops serving cached consent within `lease` seconds. A heartbeat that follows a lapse
drops the whole cache first (a writer may have counted the member out and not waited for it).

**Acknowledgements.** A write that wants to know who has seen it appends one more notification in its
transaction, `ack:<schema>:<ack channel>:<write id>`, after the subject hashes. Notifications of one
transaction arrive in order and asyncpg runs the callbacks in order, so when a member reads the ack
request it has already dropped those subjects; it answers `pg_notify('<ack channel>', '<write id>
<member id>')` on its own listener connection. After the commit the writer lists the live members
(`seen_at` within their lease) and waits for each of them (`AckWait`). A member that does not answer
either processes the notification later or, if its connection is gone, loses its lease: in both cases
it stops honouring the old state within `lease` seconds of the commit, and its cache TTL bounds it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from veil.consent._schema import ALL_SUBJECTS, NOTIFY_CHANNEL

log = logging.getLogger("veil.consent")
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
ACK_PREFIX = "ack:"
MEMBER_GC_SECONDS = 86_400  # rows of members not seen for a day are deleted by the next member to connect


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect`: open a connection; `query`: one statement; `acquire`: wait for a pooled one."""

    connect: float = 1.0
    query: float = 0.5
    acquire: float = 0.5

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        return cls(seconds, seconds, seconds)


@dataclass(frozen=True)
class MemberInfo:
    """How this process appears to writers: its name in answers, its cache TTL and its lease (seconds)."""

    name: str
    cache_ttl: float
    lease: float = 3.0


def default_member_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class AckWait:
    """The acknowledgements of one write, as they arrive."""

    write_id: str
    deaf: bool = False  # this process cannot hear acknowledgements: every required member is pending
    acked: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, member_id: str) -> None:
        self.acked.add(member_id)
        self.changed.set()

    async def until(self, required: set[str], timeout: float) -> set[str]:
        """Wait until every member in `required` acknowledged, or `timeout`; the ones still missing."""
        if self.deaf:
            return required - self.acked
        deadline = time.monotonic() + timeout
        while True:
            missing = required - self.acked
            left = deadline - time.monotonic()
            if not missing or left <= 0:
                return missing
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


class PgPeers:
    """The listener of one store. `emit(payload)` receives every subject hash (or `*`) notified."""

    def __init__(self, dsn: str, schema: str, quoted: str, timeouts: Timeouts, member: MemberInfo | None,
                 emit: Callable[[str], None]) -> None:
        self._dsn, self.schema, self._s = dsn, schema, quoted
        self.timeouts = timeouts
        self.member = member
        self.member_id = os.urandom(8).hex()
        self.ack_channel = f"veil_ack_{self.member_id}"
        self._emit = emit
        self.fresh_until = 0.0 if member is not None else float("inf")  # the lease (monotonic clock)
        self._lease_callbacks: list[Callable[[float], None]] = []
        self.listening = asyncio.Event()
        self._waiters: dict[str, AckWait] = {}
        self._outbox: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name="veil-consent-listen")

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_lease(self, callback: Callable[[float], None]) -> None:
        """Call `callback(fresh_until)` whenever the lease moves (monotonic seconds; inf: no lease)."""
        self._lease_callbacks.append(callback)
        callback(self.fresh_until)

    def _set_lease(self, until: float) -> None:
        self.fresh_until = until
        for cb in list(self._lease_callbacks):
            cb(until)

    # -- writers' side ---------------------------------------------------------------------------------

    def expect(self, write_id: str) -> AckWait:
        """Register a write's acknowledgements (before its commit). While this listener is not
        connected the acknowledgements cannot reach it: `AckWait.deaf`, and nobody is waited for."""
        wait = self._waiters[write_id] = AckWait(write_id, deaf=not self.listening.is_set())
        return wait

    def forget(self, write_id: str) -> None:
        self._waiters.pop(write_id, None)

    def ack_request(self, write_id: str) -> str:
        return f"{ACK_PREFIX}{self.schema}:{self.ack_channel}:{write_id}"

    # -- notifications -----------------------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(ACK_PREFIX):
            parts = payload[len(ACK_PREFIX):].split(":")
            if len(parts) == 3 and parts[0] == self.schema and parts[1] != self.ack_channel:
                self._outbox.append((parts[1], f"{parts[2]} {self.member_id}"))
                self._wake.set()
            return
        self._emit(payload)

    def _on_ack(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        write_id, _, member_id = payload.partition(" ")
        wait = self._waiters.get(write_id)
        if wait is not None and member_id:
            wait.add(member_id)

    # -- the connection ------------------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        backoff, first = 0.1, True
        while not self._closed:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self.timeouts.connect,
                                             server_settings={"application_name": "veil-consent-listen"})
                lost = asyncio.Event()
                conn.add_termination_listener(self._on_lost(lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                await conn.add_listener(self.ack_channel, self._on_ack)
                if self.member is not None:
                    with contextlib.suppress(asyncpg.UndefinedTableError):
                        await conn.execute(self._sql(GC_MEMBERS), float(MEMBER_GC_SECONDS),
                                           timeout=self.timeouts.query)
                self.listening.set()
                if not first:
                    self._emit(ALL_SUBJECTS)  # notifications sent while we were away are lost
                first, backoff = False, 0.1
                await self._serve(conn, lost)
            except _FAILURES as exc:
                log.debug("consent listener: %s", type(exc).__name__)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not first:
                self._emit(ALL_SUBJECTS)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _on_lost(self, lost: asyncio.Event) -> Callable[[object], None]:
        def callback(_conn: object) -> None:
            lost.set()
            self._wake.set()

        return callback

    async def _serve(self, conn: Any, lost: asyncio.Event) -> None:
        """Heartbeats and acknowledgements on the listener connection until it is lost."""
        interval = self.member.lease / 3 if self.member is not None else 2.0
        next_beat = 0.0
        while not lost.is_set() and not self._closed:
            if self._outbox:
                batch, self._outbox = self._outbox, []
                await conn.execute(SEND_ACKS, [c for c, _ in batch], [p for _, p in batch],
                                   timeout=self.timeouts.query)
            now = time.monotonic()
            if now >= next_beat:
                await self._beat(conn, now)
                next_beat = now + interval
            self._wake.clear()
            if self._outbox or lost.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_beat - time.monotonic()))

    async def _beat(self, conn: Any, sent: float) -> None:
        """Renew the lease (members) or just prove the connection is alive."""
        if self.member is None:
            await conn.execute("SELECT 1", timeout=self.timeouts.query)
            return
        m = self.member
        try:
            await conn.execute(self._sql(HEARTBEAT), self.member_id, m.name, m.cache_ttl, m.lease,
                               timeout=self.timeouts.query)
        except asyncpg.UndefinedTableError:
            return  # not migrated yet: no membership, so no lease; lookups go to the database
        if sent > self.fresh_until:
            # the lease had lapsed (or never began): writers may have stopped waiting for us
            self._emit(ALL_SUBJECTS)
        self._set_lease(sent + m.lease)

    def _sql(self, template: str) -> str:
        return template.replace("{s}", self._s)


HEARTBEAT = """
INSERT INTO {s}.veil_members AS m (member_id, name, cache_ttl, lease, started_at, seen_at)
VALUES ($1, $2, $3, $4, now(), now())
ON CONFLICT (member_id) DO UPDATE SET seen_at = now()
"""
GC_MEMBERS = "DELETE FROM {s}.veil_members WHERE seen_at < now() - make_interval(secs => $1)"
LIVE_MEMBERS = """
SELECT member_id, name, cache_ttl, lease FROM {s}.veil_members
WHERE seen_at + make_interval(secs => lease) > now()
"""
LEAVE = "DELETE FROM {s}.veil_members WHERE member_id = $1"
SEND_ACKS = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"


@dataclass(frozen=True)
class Peer:
    """A live member a write waits for."""

    name: str
    cache_ttl: float
    lease: float

    @property
    def bound(self) -> float:
        """Seconds after a commit by which this member honours it even without acknowledging."""
        return min(self.cache_ttl, self.lease)


@dataclass
class Acks:
    acknowledged: list[str]
    pending: list[str]
    bound: float  # seconds after the commit by which the pending ones honour it


@dataclass
class AckTicket:
    """A committed write's acknowledgements: `required` maps member ids to the live members to wait for."""

    wait: AckWait
    required: dict[str, Peer]
    forget: Callable[[str], None]

    async def collect(self, timeout: float) -> Acks:
        try:
            missing = await self.wait.until(set(self.required), timeout)
        finally:
            self.forget(self.wait.write_id)
        return Acks(
            sorted(p.name for m, p in self.required.items() if m not in missing),
            sorted(p.name for m, p in self.required.items() if m in missing),
            max((p.bound for m, p in self.required.items() if m in missing), default=0.0),
        )
