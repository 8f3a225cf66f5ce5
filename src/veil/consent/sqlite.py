"""The embedded consent store: one SQLite file (WAL), all database work on one worker thread.

Rows are keyed by `SubjectHasher(subject)` and carry the id of the key that made the hash; no subject id
is written to the file. The file and any directory veil creates for it are owner-only. Every sqlite3
error leaves as `ConsentUnavailable`.

Key rotation: lookups ask for the hashes under every key of the ring in one query; rows found under an
older key are re-keyed to the current key's hash in the same worker call (a short lock wait: if the
file is busy, the re-key waits for a later lookup; the answer is right either way).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from veil.consent import _schema_sqlite as q
from veil.consent._schema import (
    ImportMark,
    KeyCounts,
    Recorded,
    Rekeyed,
    distinct,
    event_id_of,
    from_us,
    now_utc,
    pick_latest,
    plan_hashes,
    state_of,
    to_us,
)
from veil.consent.store import Action, ConsentEvent, ConsentState, SubjectHasher
from veil.errors import ConsentUnavailable
from veil.keys import private_dir

log = logging.getLogger("veil.consent")
T = TypeVar("T")
Row = tuple[object, ...]
LAZY_REKEY_WAIT_MS = 50  # how long a lookup's re-key waits for the write lock before deferring


class SqliteConsentStore:
    """`ConsentStore` over a SQLite file. `busy_timeout` is how long a write waits for a lock (s)."""

    def __init__(self, path: str | Path, hasher: SubjectHasher, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.hasher = hasher
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] = (0, 0)  # (device, inode) of the file the connection has open
        self.rekeyed = 0  # older-key hashes re-keyed by lookups (all rows of each)
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="veil-sqlite")

    # -- the worker thread -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise ConsentUnavailable("consent store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._connection())
        except sqlite3.Error as exc:
            raise ConsentUnavailable(f"consent store (sqlite) cannot answer: {_reason(exc)}") from exc
        except OSError as exc:
            raise ConsentUnavailable(f"consent store (sqlite) cannot open its file: {exc.strerror}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            try:
                st = os.stat(self.path)
                same = (st.st_dev, st.st_ino) == self._ident
            except OSError:
                same = False
            if same:
                return self._conn
            # The file was replaced (a restore by rename) or removed: answer from what is on disk now.
            self._close_conn()
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: random-key B-trees (hashes, UUIDs)
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        self._conn = conn
        return conn

    # -- ConsentStore --------------------------------------------------------------------------------

    async def current(
        self, subjects: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], ConsentState]:
        if not subjects or not keys:
            return {}
        plan = plan_hashes(self.hasher, subjects)
        hashes = json.dumps(plan.hashes)
        key_list = json.dumps(distinct(keys))
        moves = plan.moves

        def read(conn: sqlite3.Connection) -> list[Row]:
            rows = conn.execute(q.SELECT_CURRENT, (hashes, key_list)).fetchall()
            if moves:
                found = {str(r[0]) for r in rows if r[0] in moves}
                if found:
                    self._lazy_rekey(conn, [(h, moves[h]) for h in found])
            return rows

        out, _ = pick_latest(plan, (
            (str(h), _int(seq), state_of(
                str(key), str(action), from_us(_int(at)), _opt_int(nv),
                None if exp is None else from_us(_int(exp)), None if source is None else str(source),
            ))
            for h, key, action, at, nv, exp, source, seq in await self._run(read)
        ))
        return out

    def _lazy_rekey(self, conn: sqlite3.Connection, moves: list[tuple[str, str]]) -> None:
        """Re-key what a lookup found under older keys; on a busy or read-only file, leave it for later."""
        conn.execute(f"PRAGMA busy_timeout = {LAZY_REKEY_WAIT_MS}")
        try:
            _rekey(conn, moves, self.hasher.key_id, None)
            self.rekeyed += len(moves)
        except sqlite3.Error as exc:
            log.warning("consent store (sqlite): re-key of %d subject(s) deferred: %s",
                        len(moves), _reason(exc))
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        rows = [self._row(e) for e in events]
        if rows:
            await self._run(lambda conn: _write(conn, rows, None))

    async def history(self, subject: str) -> list[ConsentEvent]:
        return [r.event for r in await self.proof(subject)]

    async def proof(self, subject: str) -> list[Recorded]:
        """The full history with the store's receipts (recorded_at), oldest first."""
        hashes = json.dumps(self.hasher.all(subject))
        rows = await self._run(lambda conn: conn.execute(q.SELECT_HISTORY, (hashes,)).fetchall())
        return [_recorded(r) for r in rows]

    # -- key rotation ----------------------------------------------------------------------------------

    async def rekey(self, subjects: Sequence[str]) -> Rekeyed:
        """Move every row of these subjects to the current key's hash; label their unlabelled rows."""
        plan = plan_hashes(self.hasher, subjects)
        if not plan.current:
            return Rekeyed()
        moves, label, kid = list(plan.moves.items()), plan.current, self.hasher.key_id
        return await self._run(lambda conn: _rekey(conn, moves, kid, label))

    async def key_counts(self) -> KeyCounts:
        """Rows per key id in both tables (how many still sit under an older key)."""
        rows = await self._run(lambda conn: conn.execute(q.KEY_COUNTS).fetchall())
        counts = KeyCounts({}, {})
        for table, kid, n in rows:
            target = counts.events if table == "events" else counts.current
            target[None if kid is None else str(kid)] = _int(n)
        return counts

    async def ping(self) -> bool:
        try:
            await self._run(lambda conn: conn.execute("SELECT 1 FROM consent_current LIMIT 1").fetchall())
        except ConsentUnavailable:
            return False
        return True

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, self._close_conn)
        executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- import --------------------------------------------------------------------------------------

    async def import_mark(self, file_key: str) -> ImportMark | None:
        def read(conn: sqlite3.Connection) -> list[Row]:
            sql = "SELECT line, done FROM veil_import_progress WHERE file_key = ?"
            return conn.execute(sql, (file_key,)).fetchall()

        rows = await self._run(read)
        return ImportMark(_int(rows[0][0]), bool(rows[0][1])) if rows else None

    async def import_batch(
        self, events: Sequence[ConsentEvent], *, file_key: str, line: int, done: bool
    ) -> None:
        """Append events and move the file's import mark to `line`, in one transaction."""
        rows = [self._row(e) for e in events]
        await self._run(lambda conn: _write(conn, rows, (file_key, line, done)))

    async def reset_import(self, file_key: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM veil_import_progress WHERE file_key = ?", (file_key,))

        await self._run(delete)

    # -- rows ------------------------------------------------------------------------------------------

    def _row(self, e: ConsentEvent) -> Row:
        return (
            event_id_of(e), self.hasher(e.subject), e.consent_key, Action(e.action).value, to_us(e.at),
            e.source, e.method, e.notice_version, None if e.expires_at is None else to_us(e.expires_at),
            e.jurisdiction, json.dumps(list(e.purposes)), self.hasher.key_id,
        )


def _write(conn: sqlite3.Connection, rows: list[Row], mark: tuple[str, int, bool] | None) -> None:
    recorded = to_us(now_utc())
    conn.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            cur = conn.execute(q.INSERT_EVENT, (*row, recorded))
            if cur.rowcount != 1:
                continue  # the same event_id again: already recorded
            seq = cur.lastrowid
            conn.execute(
                q.UPSERT_CURRENT, (row[1], row[2], row[3], row[4], row[7], row[8], row[5], seq, row[11])
            )
        if mark is not None:
            conn.execute(
                "INSERT INTO veil_import_progress (file_key, line, done, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (file_key) DO UPDATE SET line = excluded.line, done = excluded.done, "
                "updated_at = excluded.updated_at",
                (mark[0], mark[1], int(mark[2]), recorded),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _rekey(
    conn: sqlite3.Connection, moves: list[tuple[str, str]], key_id: str, label: list[str] | None
) -> Rekeyed:
    """In one transaction: move rows from older-key hashes to current ones (current rows merge, the
    latest wins), then set `key_id` on the unlabelled rows of the `label` hashes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        events = current = labelled = 0
        if moves:
            conn.execute(q.REKEY_MAP)
            conn.execute(q.REKEY_MAP_CLEAR)
            conn.executemany(q.REKEY_MAP_FILL, moves)
            conn.execute(q.REKEY_CURRENT_MERGE, (key_id,))
            current = conn.execute(q.REKEY_CURRENT_DELETE).rowcount
            events = conn.execute(q.REKEY_EVENTS, (key_id,)).rowcount
            conn.execute(q.REKEY_MAP_CLEAR)
        if label:
            hashes = json.dumps(label)
            labelled = conn.execute(q.LABEL_EVENTS, (key_id, hashes)).rowcount
            labelled += conn.execute(q.LABEL_CURRENT, (key_id, hashes)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Rekeyed(events, current, labelled)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS veil_schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)"
        )
        have = conn.execute("SELECT coalesce(max(version), 0) FROM veil_schema_version").fetchone()[0]
        for version, sql in q.MIGRATIONS:
            if version > have:
                for stmt in (s for s in sql.split(";") if s.strip()):
                    conn.execute(stmt)
                conn.execute("INSERT INTO veil_schema_version VALUES (?, ?)", (version, to_us(now_utc())))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _recorded(r: Row) -> Recorded:
    seq, event_id, h, key, action, at, source, method, nv, exp, jur, purposes, rec = r
    event = ConsentEvent(
        subject=str(h), consent_key=str(key), action=Action(str(action)), at=from_us(_int(at)),
        source=str(source), method=str(method), notice_version=_opt_int(nv),
        expires_at=None if exp is None else from_us(_int(exp)),
        jurisdiction=None if jur is None else str(jur),
        purposes=tuple(str(p) for p in json.loads(str(purposes))), event_id=str(event_id),
    )
    return Recorded(event, from_us(_int(rec)), _int(seq))


def _int(v: object) -> int:
    if not isinstance(v, int):
        raise sqlite3.DatabaseError("unexpected value type in consent store")
    return v


def _opt_int(v: object) -> int | None:
    return None if v is None else _int(v)


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "database is locked"
    if "not a database" in text or "malformed" in text:
        return "file is not a valid consent database"
    if "unable to open" in text or "readonly" in text or "permission" in text:
        return "cannot open or write the database file"
    return type(exc).__name__
