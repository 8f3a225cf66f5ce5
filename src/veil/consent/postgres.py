"""The scale-out consent store: PostgreSQL through an asyncpg pool, with cross-replica invalidation.

Every write runs `NOTIFY veil_consent, '<subject_hash>'` in its own transaction. A store opened with
`listen=True` keeps one extra connection on `LISTEN veil_consent` and hands each payload to the
callbacks registered with `on_change()` (the cache registers its `invalidate`). After the listener
reconnects it sends `"*"`: anything may have changed while it was away.

Other systems that write these tables must `NOTIFY veil_consent, '<subject_hash>'` too, or accept
that veil sees their writes only once cache entries expire (the cache TTL, 2 s by default). Such a
writer appends to `consent_events`, upserts `consent_current` (the newer `at` wins), then, in the
same transaction, `SELECT pg_notify('veil_consent', $1)` with the subject hash: the first 32 hex
characters of HMAC-SHA256(store key, b"veil-store-subject\\x00" + subject id as UTF-8), i.e.
`veil.keys.keyed_hash(key, subject, context="veil-store-subject")` (tests/e2e/test_postgres_replicas.py
does exactly this). Such a writer should also set `key_id` (both tables) to the id of the store key it
hashed with, so `veil consent rekey --status` can count its rows; rows without one count as unlabelled.

Key rotation: `current()` asks for the hashes under every key of the ring in one query; rows found
under an older key are re-keyed to the current key's hash by one more statement (events and current
rows in one implicit transaction, with NOTIFY of every hash touched). If that statement fails, the
answer stands and a later lookup re-keys. At most two round trips per `current()` call.

Pool and listener reconnect by themselves once the server is back; meanwhile every call raises
`ConsentUnavailable` and `ping()` returns False. Schema objects live in one schema (`public` unless
`?schema=NAME` is in the URL or `schema=` is passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
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
from veil.consent.store import Action, ConsentEvent, ConsentState, SubjectHasher
from veil.errors import ConsentUnavailable, VeilError

log = logging.getLogger("veil.consent")
T = TypeVar("T")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_NOTIFY_EACH_MAX = 1000  # a batch touching more subjects than this notifies "*" once


def split_url(url: str) -> tuple[str, str | None]:
    """Remove veil's own `schema` query parameter from a postgresql:// URL; return (dsn, schema)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in params if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in params if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresConsentStore:
    def __init__(
        self, pool: Any, dsn: str, hasher: SubjectHasher, schema: str, *, timeout: float
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self.hasher = hasher
        self.schema = schema
        self.timeout = timeout
        self._s = f'"{schema}"'
        self._callbacks: list[Callable[[str], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False
        self.rekeyed = 0  # older-key hashes re-keyed by lookups (all rows of each)

    @classmethod
    async def connect(
        cls, url: str, hasher: SubjectHasher, *, listen: bool = True, schema: str | None = None,
        timeout: float = 5.0, pool_size: int = 10,
    ) -> PostgresConsentStore:
        dsn, url_schema = split_url(url)
        name = schema or url_schema or "public"
        if not _SCHEMA_NAME.match(name):
            raise VeilError("consent store schema must be a lower-case SQL identifier", code="config_invalid")
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, timeout=timeout, command_timeout=timeout,
                server_settings={"application_name": "veil-consent"},
            )
        except _FAILURES as exc:
            raise ConsentUnavailable(f"consent store (postgresql) unreachable: {type(exc).__name__}") from exc
        except ValueError as exc:  # a DSN asyncpg cannot parse
            raise VeilError(
                "consent store URL is not a valid postgresql:// URL", code="config_invalid"
            ) from exc
        store = cls(pool, dsn, hasher, name, timeout=timeout)
        if listen:
            store._listener = asyncio.create_task(store._listen_forever(), name="veil-consent-listen")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(store._listening.wait(), timeout)
        return store

    # -- change notifications ----------------------------------------------------------------------

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call `callback(subject_hash)` for every change any replica notifies ("*": everything)."""
        self._callbacks.append(callback)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def _emit(self, payload: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(payload)
            except Exception:
                log.exception("consent change callback failed")

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._emit(payload)

    async def _listen_forever(self) -> None:
        backoff, first = 0.1, True
        while not self._closed:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self.timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self._listening.set()
                if not first:
                    self._emit(ALL_SUBJECTS)  # notifications sent while we were away are lost
                first, backoff = False, 0.1
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 5.0)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=self.timeout)  # finds dead sockets
            except _FAILURES:
                pass
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not first:
                self._emit(ALL_SUBJECTS)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    # -- plumbing ------------------------------------------------------------------------------------

    def _sql(self, template: str) -> str:
        return template.replace("{s}", self._s)

    async def _with_conn(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run fn on a pooled connection; retry once on a broken connection (writes are idempotent)."""
        if self._closed:
            raise ConsentUnavailable("consent store is closed")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire(timeout=self.timeout) as conn:
                    return await fn(conn)
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

        async def run(conn: Any) -> int:
            if await self._version(conn) >= target:
                return target
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(self.schema))
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
                await conn.execute(self._sql(q.VERSION_TABLE))
                have = await conn.fetchval(
                    self._sql("SELECT coalesce(max(version), 0) FROM {s}.veil_schema_version")
                )
                for version, sql in q.MIGRATIONS:
                    if version > have:
                        await conn.execute(self._sql(sql))
                        await conn.execute(
                            self._sql("INSERT INTO {s}.veil_schema_version (version) VALUES ($1)"), version
                        )
            return target

        return await self._with_conn(run)

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
        if not events:
            return
        rows = [self._row(e) for e in events]
        hashes = distinct([r[1] for r in rows])
        sql = self._sql(q.RECORD)

        async def run(conn: Any) -> None:
            async with conn.transaction():
                await conn.executemany(sql, rows)
                await conn.execute(q.NOTIFY, NOTIFY_CHANNEL, hashes)

        await self._with_conn(run)

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
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        try:
            await asyncio.wait_for(self._pool.close(), self.timeout)
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


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


def _lock_id(schema: str) -> int:
    digest = hashlib.sha256(f"veil-consent-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _unavailable(exc: BaseException) -> ConsentUnavailable:
    return ConsentUnavailable(f"consent store (postgresql) cannot answer: {type(exc).__name__}")
