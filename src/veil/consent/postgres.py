"""The scale-out consent store: PostgreSQL through an asyncpg pool, with cross-replica invalidation.

Every write runs `NOTIFY veil_consent, '<subject_hash>'` in its own transaction. A store opened with
`listen=True` keeps one extra connection on `LISTEN veil_consent` (veil.consent.pg_peers) and hands
each payload to the callbacks registered with `on_change()` (the cache registers its `invalidate`).
After the listener reconnects it sends `"*"`: anything may have changed while it was away. A store
opened with `member=` (`veil serve`) is also a member: writes wait for its acknowledgement, and its
cache is trusted only while its lease holds (`on_lease`). `record_tracked()` returns the ticket a
writer waits on.

Other systems that write these tables must `NOTIFY veil_consent, '<subject_hash>'` too, or accept
that veil sees their writes only once cache entries expire (the cache TTL, 2 s by default). The
procedure, with a tested example, is in docs/deploy.md ("Writing consent from another system"). Such a
writer should also set `key_id` (both tables) to the id of the store key it hashed with, so
`veil consent rekey --status` can count its rows; rows without one count as unlabelled.

Key rotation: `current()` asks for the hashes under every key of the ring in one query; rows found
under an older key are re-keyed to the current key's hash by one more statement (events and current
rows in one implicit transaction, with NOTIFY of every hash touched). If that statement fails, the
answer stands and a later lookup re-keys. At most two round trips per `current()` call.

Timeouts (`Timeouts`): connecting, each statement, and waiting for a pooled connection; a migration's
statements get MIGRATE_TIMEOUT. The pool opens connections when they are needed (`min_size=0`), so a
store can be opened while the server is away (`wait=False`); `ensure()` connects and migrates once it
answers. Pool and listener reconnect by themselves once the server is back; meanwhile every call raises
`ConsentUnavailable` and `ping()` returns False. Schema objects live in one schema (`public` unless
`?schema=NAME` is in the URL or `schema=` is passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from veil.consent import _schema_pg as q
from veil.consent._schema import (
    ALL_SUBJECTS,
    NOTIFY_CHANNEL,
    ImportMark,
    KeyCounts,
    Recorded,
    Rekeyed,
    distinct,
    event_id_of,
    pick_latest,
    plan_hashes,
    state_of,
    utc,
)
from veil.consent.pg_peers import LEAVE, LIVE_MEMBERS, AckTicket, MemberInfo, Peer, PgPeers, Timeouts
from veil.consent.store import Action, ConsentEvent, ConsentState, SubjectHasher
from veil.errors import ConsentUnavailable, VeilError

log = logging.getLogger("veil.consent")
T = TypeVar("T")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_NOTIFY_EACH_MAX = 1000  # a batch touching more subjects than this notifies "*" once
MIGRATE_TIMEOUT = 60.0  # seconds for each migration statement (DDL; the advisory lock may be held)


def split_url(url: str) -> tuple[str, str | None]:
    """Remove veil's own `schema` query parameter from a postgresql:// URL; return (dsn, schema)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in params if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in params if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresConsentStore:
    def __init__(
        self, pool: Any, dsn: str, hasher: SubjectHasher, schema: str, *, timeouts: Timeouts,
        member: MemberInfo | None = None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self.hasher = hasher
        self.schema = schema
        self.timeouts = timeouts
        self._s = f'"{schema}"'
        self._callbacks: list[Callable[[str], None]] = []
        self.peers: PgPeers | None = None
        self.member = member
        self._closed = False
        self.migrated = False
        self.rekeyed = 0  # older-key hashes re-keyed by lookups (all rows of each)

    @classmethod
    async def connect(
        cls, url: str, hasher: SubjectHasher, *, listen: bool = True, schema: str | None = None,
        timeout: float = 5.0, pool_size: int = 10, timeouts: Timeouts | None = None,
        member: MemberInfo | None = None, wait: bool = True,
    ) -> PostgresConsentStore:
        """A store on `url`. With `wait` (the CLI, tests) the server must answer now, else
        ConsentUnavailable; without (`veil serve`) the store is returned at once and connects when the
        server answers (`ensure()`). `timeouts` defaults to `timeout` for all three."""
        dsn, url_schema = split_url(url)
        name = schema or url_schema or "public"
        if not _SCHEMA_NAME.match(name):
            raise VeilError("consent store schema must be a lower-case SQL identifier", code="config_invalid")
        t = timeouts or Timeouts.uniform(timeout)
        try:
            # min_size=0: creating the pool opens no connection; each acquire connects when it must
            pool = await asyncpg.create_pool(
                dsn, min_size=0, max_size=pool_size, timeout=t.connect, command_timeout=t.query,
                server_settings={"application_name": "veil-consent"},
            )
        except ValueError as exc:  # a DSN asyncpg cannot parse
            raise VeilError(
                "consent store URL is not a valid postgresql:// URL", code="config_invalid"
            ) from exc
        except _FAILURES as exc:
            raise ConsentUnavailable(f"consent store (postgresql) unreachable: {type(exc).__name__}") from exc
        store = cls(pool, dsn, hasher, name, timeouts=t, member=member)
        if listen:
            store.peers = PgPeers(dsn, name, store._s, t, member, store._emit)
            store.peers.start()
        if wait:
            try:
                await store._with_conn(lambda conn: conn.fetchval("SELECT 1"))
            except ConsentUnavailable as exc:
                await store.close()
                raise ConsentUnavailable(f"consent store (postgresql) unreachable: {exc}") from exc
            if store.peers is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(store.peers.listening.wait(), t.connect)
        return store

    async def ensure(self, *, migrate: bool = True) -> None:
        """Connect (and migrate, once) or raise ConsentUnavailable: the circuit breaker's probe."""
        if migrate and not self.migrated:
            await self.migrate()
        elif not await self.ping():
            raise ConsentUnavailable("consent store (postgresql) does not answer")

    # -- change notifications ----------------------------------------------------------------------

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call `callback(subject_hash)` for every change any replica notifies ("*": everything)."""
        self._callbacks.append(callback)

    def on_lease(self, callback: Callable[[float], None]) -> None:
        """Call `callback(fresh_until)` as this member's lease moves (veil.consent.pg_peers); a store
        that is no member (no `member=`, or not listening) never limits its cache."""
        if self.peers is not None and self.member is not None:
            self.peers.on_lease(callback)

    @property
    def listening(self) -> bool:
        return self.peers is not None and self.peers.listening.is_set()

    def _emit(self, payload: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(payload)
            except Exception:
                log.exception("consent change callback failed")

    # -- plumbing ------------------------------------------------------------------------------------

    def _sql(self, template: str) -> str:
        return template.replace("{s}", self._s)

    async def _with_conn(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run fn on a pooled connection; retry once on a broken connection (writes are idempotent)."""
        if self._closed:
            raise ConsentUnavailable("consent store is closed")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire(timeout=self.timeouts.acquire) as conn:
                    try:
                        return await fn(conn)
                    except TimeoutError:
                        # no answer within query_timeout: a silent network, most likely. Releasing the
                        # connection normally would wait again (for the cancel request); drop it.
                        conn.terminate()
                        raise
            except asyncpg.UndefinedTableError as exc:
                raise ConsentUnavailable(
                    "consent store schema is missing: run `veil consent migrate`"
                ) from exc
            except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionError) as exc:
                if attempt == 2:
                    raise _unavailable(exc) from exc
            except _FAILURES as exc:
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    # -- migrations ----------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply pending migrations (safe to run from many replicas at once); returns the version."""
        target = max(v for v, _ in q.MIGRATIONS)

        wait = MIGRATE_TIMEOUT  # DDL, and the lock another replica's migration may hold

        async def run(conn: Any) -> int:
            if await self._version(conn) >= target:
                return target
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(self.schema), timeout=wait)
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}", timeout=wait)
                await conn.execute(self._sql(q.VERSION_TABLE), timeout=wait)
                have = await conn.fetchval(
                    self._sql("SELECT coalesce(max(version), 0) FROM {s}.veil_schema_version"), timeout=wait
                )
                for version, sql in q.MIGRATIONS:
                    if version > have:
                        await conn.execute(self._sql(sql), timeout=wait)
                        await conn.execute(
                            self._sql("INSERT INTO {s}.veil_schema_version (version) VALUES ($1)"), version,
                            timeout=wait,
                        )
            return target

        version = await self._with_conn(run)
        self.migrated = True
        return version

    async def _version(self, conn: Any) -> int:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{self._s}.veil_schema_version")
        if exists is None:
            return 0
        sql = self._sql("SELECT coalesce(max(version), 0) FROM {s}.veil_schema_version")
        return int(await conn.fetchval(sql))

    async def drop_schema(self) -> None:
        """Drop the whole schema (tests and `public` excepted)."""
        if self.schema == "public":
            raise VeilError("refusing to drop the public schema")

        async def run(conn: Any) -> None:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")

        await self._with_conn(run)

    # -- ConsentStore ----------------------------------------------------------------------------------

    async def current(
        self, subjects: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], ConsentState]:
        if not subjects or not keys:
            return {}
        plan = plan_hashes(self.hasher, subjects)
        sql = self._sql(q.SELECT_CURRENT)
        hashes, key_list = plan.hashes, distinct(keys)
        rows = await self._with_conn(lambda conn: conn.fetch(sql, hashes, key_list))
        out, moves = pick_latest(plan, (
            (h, seq, state_of(key, action, at, nv, exp, source))
            for h, key, action, at, nv, exp, source, seq in rows
        ))
        if moves:
            try:
                await self._move(moves)
                self.rekeyed += len(moves)
            except ConsentUnavailable as exc:
                log.warning("consent store (postgresql): re-key of %d subject(s) deferred: %s",
                            len(moves), exc)
        return out

    async def _move(self, moves: Sequence[tuple[str, str]]) -> Rekeyed:
        sql, kid = self._sql(q.REKEY), self.hasher.key_id
        old, new = [m[0] for m in moves], [m[1] for m in moves]
        row = await self._with_conn(
            lambda conn: conn.fetchrow(sql, old, new, kid, NOTIFY_CHANNEL, _NOTIFY_EACH_MAX)
        )
        return Rekeyed(int(row[0]), int(row[1]))

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        await self.record_tracked(events)

    async def record_tracked(self, events: Sequence[ConsentEvent]) -> AckTicket | None:
        """Append events (one transaction, with NOTIFY of every subject hash) and, when this store
        listens, ask every live member to acknowledge: the ticket waits for them (veil.consent.pg_peers).
        None when nothing was written, or the store is no member (the CLI, tests): it only notifies."""
        if not events:
            return None
        rows = [self._row(e) for e in events]
        hashes = distinct([r[1] for r in rows])
        sql = self._sql(q.RECORD)
        write_id = os.urandom(8).hex()
        wait = self.peers.expect(write_id) if self.peers is not None and self.member is not None else None
        members_sql = self._sql(LIVE_MEMBERS)

        async def run(conn: Any) -> list[Any]:
            async with conn.transaction():
                await conn.executemany(sql, rows)
                notes = hashes if wait is None else [*hashes, self.peers.ack_request(write_id)]  # type: ignore[union-attr]
                await conn.execute(q.NOTIFY, NOTIFY_CHANNEL, notes)
            if wait is None:
                return []
            try:  # after the commit: a member counted out here has lost its lease by now
                return list(await conn.fetch(members_sql))
            except asyncpg.UndefinedTableError:
                return []

        try:
            live = await self._with_conn(run)
        except BaseException:
            if wait is not None:
                self.peers.forget(write_id)  # type: ignore[union-attr]
            raise
        if wait is None or self.peers is None:
            return None
        me = self.peers.member_id
        required = {str(r[0]): Peer(str(r[1]), float(r[2]), float(r[3])) for r in live if r[0] != me}
        return AckTicket(wait, required, self.peers.forget)

    async def history(self, subject: str) -> list[ConsentEvent]:
        return [r.event for r in await self.proof(subject)]

    async def proof(self, subject: str) -> list[Recorded]:
        """The full history with the store's receipts (recorded_at), oldest first."""
        sql, hashes = self._sql(q.SELECT_HISTORY), self.hasher.all(subject)
        rows = await self._with_conn(lambda conn: conn.fetch(sql, hashes))
        return [_recorded(tuple(r)) for r in rows]

    # -- key rotation ----------------------------------------------------------------------------------

    async def rekey(self, subjects: Sequence[str]) -> Rekeyed:
        """Move every row of these subjects to the current key's hash and label their unlabelled rows,
        in one transaction (two statements)."""
        plan = plan_hashes(self.hasher, subjects)
        if not plan.current:
            return Rekeyed()
        move_sql, label_sql, kid = self._sql(q.REKEY), self._sql(q.LABEL), self.hasher.key_id
        old, new = list(plan.moves), list(plan.moves.values())

        async def run(conn: Any) -> Rekeyed:
            async with conn.transaction():
                moved = Rekeyed()
                if old:
                    row = await conn.fetchrow(move_sql, old, new, kid, NOTIFY_CHANNEL, _NOTIFY_EACH_MAX)
                    moved = Rekeyed(int(row[0]), int(row[1]))
                labelled = int(await conn.fetchval(label_sql, plan.current, kid))
                return moved + Rekeyed(labelled=labelled)

        return await self._with_conn(run)

    async def key_counts(self) -> KeyCounts:
        """Rows per key id in both tables (how many still sit under an older key)."""
        sql = self._sql(q.KEY_COUNTS)
        rows = await self._with_conn(lambda conn: conn.fetch(sql))
        counts = KeyCounts({}, {})
        for table, kid, n in rows:
            (counts.events if table == "events" else counts.current)[kid] = int(n)
        return counts

    async def ping(self) -> bool:
        try:
            await self._with_conn(lambda conn: conn.fetchval("SELECT 1"))
        except ConsentUnavailable:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        if self.peers is not None:
            await self.peers.stop()
            if self.member is not None:  # leave at once rather than when the lease runs out
                with contextlib.suppress(ConsentUnavailable, TimeoutError):
                    member_id = self.peers.member_id
                    await asyncio.wait_for(self._with_conn(
                        lambda conn: conn.execute(self._sql(LEAVE), member_id)), self.timeouts.query * 2)
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), max(self.timeouts.query, 1.0))
        except (*_FAILURES, asyncio.CancelledError):
            self._pool.terminate()

    # -- import ----------------------------------------------------------------------------------------

    async def import_mark(self, file_key: str) -> ImportMark | None:
        sql = self._sql(q.MARK_GET)
        row = await self._with_conn(lambda conn: conn.fetchrow(sql, file_key))
        return None if row is None else ImportMark(int(row[0]), bool(row[1]))

    async def import_batch(
        self, events: Sequence[ConsentEvent], *, file_key: str, line: int, done: bool
    ) -> None:
        """COPY a batch in, append it and move the file's import mark, in one transaction."""
        records = [self._copy_record(i, e) for i, e in enumerate(events)]
        hashes = distinct([r[2] for r in records])
        notify = hashes if len(hashes) <= _NOTIFY_EACH_MAX else [ALL_SUBJECTS]

        async def run(conn: Any) -> None:
            async with conn.transaction():
                if records:
                    await conn.execute(q.BATCH_TABLE)
                    await conn.copy_records_to_table(
                        "veil_import_batch", records=records, columns=q.BATCH_COLUMNS
                    )
                    await conn.execute(self._sql(q.BATCH_APPLY), self.hasher.key_id)
                    await conn.execute(q.NOTIFY, NOTIFY_CHANNEL, notify)
                await conn.execute(self._sql(q.MARK_SET), file_key, line, done)

        await self._with_conn(run)

    async def reset_import(self, file_key: str) -> None:
        sql = self._sql(q.MARK_DELETE)
        await self._with_conn(lambda conn: conn.execute(sql, file_key))

    def _row(self, e: ConsentEvent) -> tuple[Any, ...]:
        return (
            event_id_of(e), self.hasher(e.subject), e.consent_key, Action(e.action).value, utc(e.at),
            e.source, e.method, e.notice_version, None if e.expires_at is None else utc(e.expires_at),
            e.jurisdiction, _purposes_json(e.purposes), self.hasher.key_id,
        )

    def _copy_record(self, line: int, e: ConsentEvent) -> tuple[Any, ...]:
        """A COPY row of the import batch table; event_id None → the server draws one (gen_random_uuid)."""
        return (
            line, None if e.event_id is None else uuid.UUID(event_id_of(e)), self.hasher(e.subject),
            e.consent_key, Action(e.action).value, utc(e.at), e.source, e.method, e.notice_version,
            None if e.expires_at is None else utc(e.expires_at), e.jurisdiction, _purposes_json(e.purposes),
        )


def _purposes_json(purposes: Sequence[str]) -> str:
    return json.dumps(list(purposes)) if purposes else "[]"


def _recorded(r: tuple[Any, ...]) -> Recorded:
    seq, event_id, h, key, action, at, source, method, nv, exp, jur, purposes, rec = r
    event = ConsentEvent(
        subject=h, consent_key=key, action=Action(action), at=at, source=source, method=method,
        notice_version=nv, expires_at=exp, jurisdiction=jur, purposes=tuple(json.loads(purposes)),
        event_id=event_id,
    )
    return Recorded(event, rec, int(seq))


def _lock_id(schema: str) -> int:
    digest = hashlib.sha256(f"veil-consent-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _unavailable(exc: BaseException) -> ConsentUnavailable:
    return ConsentUnavailable(f"consent store (postgresql) cannot answer: {type(exc).__name__}")
