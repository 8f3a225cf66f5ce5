"""The decision log writer: one hash-chained JSON line per record, batched, fsynced, rotated.

`append()` returns once its record is written. Appends that arrive within `flush_interval`
milliseconds of the first pending one are written together by one background task (group commit);
with `flush_interval=0` a batch is written as soon as the writer is free. Durability (`fsync`):

    always    each batch is written and fdatasynced in a worker thread before its appends return
    interval  each batch is written to the OS on the event loop before its appends return (a crash of
              veil loses nothing); a background task fdatasyncs every `fsync_interval` ms, so a crash
              of the machine loses at most that much. No thread hand-off per batch: measured about
              +40% requests/s over `always` on the bench
    never     written to the OS only, which writes it back in its own time

The head file never leads what is on disk: with `interval` it is replaced after a background sync, at
most every HEAD_SYNC_INTERVAL.

Every record gets `seq` (1, 2, ... per chain), `prev` (the previous record's mac), `kid` and `mac`.
The writer adds its own records: `start` (each start, continuing the chain from the head file or the
last record on disk) and `checkpoint` (every `checkpoint_every` records, before rotation and on close)
with `count` (records before it) and `head` (the mac of the record before it).

When writing fails the append raises AuditWriteError, the metric `veil_audit_up` drops to 0 and the
chain does not advance; the next batch retries (reopening the file, cutting off any partial write).

`hold(mode)` / `release()`: while the unshipped backlog is over its bound (veil.audit.ship), appends
either raise AuditBacklogFull (`refuse`) or are counted and not written (`serve`); on release the
writer records how many decisions went unrecorded, and between which times, in an own `unrecorded`
record, so the chain itself says what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from veil import __version__, metrics
from veil.audit._chain import (
    ENVELOPE,
    OWN_KINDS,
    active_path,
    canonical,
    chain_files,
    fsync_dir,
    head_path,
    now_iso,
    read_head,
    segment_path,
    segments,
    sign,
    valid_chain_id,
    write_head,
)
from veil.errors import AuditBacklogFull, AuditWriteError, VeilError
from veil.keys import KeyRing, private_dir

log = logging.getLogger("veil.audit")

HEAD_INTERVAL = 0.05  # seconds between head-file replacements (each costs a write, an fsync, a rename)
# With fsync `interval` the head moves after a background sync at most this often: every move costs
# the syncer thread several GIL hand-offs (open, write, fsync, rename), and on a busy machine each
# hand-off can stall the event loop for a scheduling slice (measured as p99 spikes).
HEAD_SYNC_INTERVAL = 1.0
FSYNC_MODES = ("always", "interval", "never")
HOLD_MODES = ("refuse", "serve")

_Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


class AuditRecordInvalid(VeilError):
    code = "audit_record_invalid"


class AuditLog:
    """One chain of the decision log. Create it, `await start()`, `await append(...)`, `await close()`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        ring: KeyRing,
        *,
        chain_id: str = "main",
        flush_interval: float = 2.0,
        checkpoint_every: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        fsync: bool | str = "always",
        fsync_interval: float = 100.0,
    ) -> None:
        if not valid_chain_id(chain_id):
            raise VeilError("audit chain id must be 1-64 of A-Z a-z 0-9 _ -", code="audit_config_invalid")
        mode = ("always" if fsync else "never") if isinstance(fsync, bool) else fsync
        if mode not in FSYNC_MODES:
            raise VeilError(f"audit fsync must be one of {', '.join(FSYNC_MODES)}", code="audit_config_invalid")
        if flush_interval < 0 or checkpoint_every < 1 or max_bytes < 1 or fsync_interval <= 0:
            raise VeilError("audit flush_interval must be >= 0, checkpoint_every and max_bytes >= 1, "
                            "fsync_interval > 0", code="audit_config_invalid")
        self.path = active_path(Path(path), chain_id)
        self.head_file = head_path(self.path)
        self.chain_id = chain_id
        self._ring = ring
        self._interval = flush_interval / 1000.0
        self._checkpoint_every = checkpoint_every
        self._max_bytes = max_bytes
        self.fsync_mode = mode
        self._sync = mode == "always"  # fdatasync every batch (in the worker thread)
        self._durable = mode != "never"  # fdatasync on start, rotation and close
        self._sync_every = fsync_interval / 1000.0
        self._synced_seq = 0  # interval mode: the last seq a background sync made durable
        self._synced_tail: tuple[int, str, str] = (0, "", "")  # (seq, mac, file) of that sync
        self._tail: tuple[int, str, str] = (0, "", "")  # (seq, mac, file) of the last record written
        self._head_lock = threading.Lock()  # the head file is replaced by the writer and the syncer
        self._head_seq = -1
        self._syncer: asyncio.Task[None] | None = None
        # Chain state, touched only by the single writer (one batch in flight at a time).
        self._seq = 0
        self._prev = ""
        self._since_checkpoint = 0
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._size = 0
        self._head_at = 0.0
        # Event-loop side.
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._healthy = False
        self._hold: str | None = None  # refuse | serve while the unshipped backlog is over its bound
        self._written_total = 0  # bytes written by this writer (all files)
        self._bound: tuple[int, int, int, str] | None = None  # (measured backlog, _written_total then, limit, mode)
        self.on_hold: Callable[[], None] | None = None  # called when the writer holds itself (over the bound)
        self._rotate_asked: asyncio.Future[bool] | None = None
        self._unrecorded = 0
        self._unrecorded_since = ""

    # -- public ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True when the last write succeeded."""
        return self._healthy

    @property
    def seq(self) -> int:
        """The seq of the last record written."""
        return self._seq

    @property
    def durable_seq(self) -> int:
        """The seq up to which records are on disk as durably as `fsync` promises (with `interval`,
        the last background sync): what a shipper may copy without a crash ever taking it back."""
        return self._synced_seq if self.fsync_mode == "interval" else self._seq

    @property
    def held(self) -> str | None:
        return self._hold

    def hold(self, mode: str) -> None:
        """Stop writing appended records: `refuse` raises AuditBacklogFull, `serve` counts them."""
        if mode not in HOLD_MODES:
            raise VeilError(f"hold mode must be one of {', '.join(HOLD_MODES)}", code="audit_config_invalid")
        if self._hold is None:
            self._unrecorded_since = now_iso()
        self._hold = mode

    def bound(self, measured: int, limit: int, mode: str) -> None:
        """The unshipped backlog as just measured (bytes), its bound and the hold mode: from now on the
        writer adds what it writes to the measurement and holds itself (`hold(mode)`, then `on_hold()`)
        after the batch that takes it over the bound, so the bound holds between two measurements."""
        self._bound = (measured, self._written_total, limit, mode)

    def release(self) -> None:
        """Write again; records an `unrecorded` record when appends were counted and not written."""
        if self._hold is None:
            return
        self._hold = None
        count, self._unrecorded = self._unrecorded, 0
        if not count or self._task is None or self._closing:
            self._unrecorded += count
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rec = {"kind": "unrecorded", "count": count, "since": self._unrecorded_since, "until": now_iso(),
               "reason": "backlog_full"}

        def done(f: asyncio.Future[None]) -> None:
            if f.exception() is not None:  # not written: the count goes into the next one
                self._unrecorded += count

        fut.add_done_callback(done)
        self._pending.append((rec, fut))
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(self._start_sync)
        except OSError as exc:
            self._failed()
            raise self._error(exc) from exc
        self._succeeded()
        self._synced_seq, self._synced_tail = self._seq, self._tail
        self._task = asyncio.create_task(self._run(), name=f"veil-audit-{self.chain_id}")
        if self.fsync_mode == "interval":
            self._syncer = asyncio.create_task(self._sync_loop(), name=f"veil-audit-sync-{self.chain_id}")
        else:
            self._syncer = asyncio.create_task(self._head_loop(), name=f"veil-audit-head-{self.chain_id}")

    async def append(self, record: Mapping[str, Any]) -> None:
        """Write one record; returns once it is written (and with fsync `always`, synced). Raises
        AuditWriteError when it cannot be."""
        if self._task is None or self._closing:
            raise AuditWriteError("the decision log is not open")
        if not isinstance(record, Mapping):
            raise AuditRecordInvalid("an audit record must be a JSON object")
        clash = [k for k in ENVELOPE if k in record]
        if clash:
            raise AuditRecordInvalid(f"audit record must not set {', '.join(clash)}")
        kind = record.get("kind")
        if isinstance(kind, str) and kind in OWN_KINDS:
            raise AuditRecordInvalid(f"audit record kind {record['kind']!r} is reserved")
        if self._hold is not None:
            if self._hold == "refuse":
                raise AuditBacklogFull("the decision log's unshipped backlog is over its bound")
            self._unrecorded += 1
            metrics.audit_unrecorded_total.inc()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((dict(record), fut))
        self._wakeup.set()
        await fut

    async def rotate(self) -> bool:
        """Rotate the active file now (after what is pending), so that retention can remove its records
        (only rotated segments are ever removed). True when the active file is empty afterwards."""
        if self._task is None or self._closing:
            return False
        if self._rotate_asked is None:
            self._rotate_asked = asyncio.get_running_loop().create_future()
        fut = self._rotate_asked
        self._wakeup.set()
        return await asyncio.shield(fut)

    async def close(self) -> None:
        """Write everything pending, then a closing checkpoint. Idempotent."""
        if self._task is None or self._closing:
            return
        if self._unrecorded:  # held in `serve` mode until now: the chain says how many went unrecorded
            self._hold = self._hold or "serve"
            self.release()
        self._closing = True
        self._wakeup.set()
        await self._task
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        try:
            await asyncio.to_thread(self._close_sync)
        except OSError as exc:
            self._failed()
            raise self._error(exc) from exc
        self._synced_seq = self._seq  # the closing checkpoint is written with the head (synced unless `never`)

    # -- event loop side ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._interval and not self._closing:
                await asyncio.sleep(self._interval)
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._flush(batch)
            if self._rotate_asked is not None and not self._closing:
                asked, self._rotate_asked = self._rotate_asked, None
                try:
                    if self._size:  # an empty active file has nothing to rotate
                        await asyncio.to_thread(self._rotate) if self._sync else self._rotate()
                    asked.set_result(self._size == 0)
                except OSError as exc:
                    asked.set_exception(self._error(exc))
            if self._closing and not self._pending:
                return

    async def _flush(self, batch: list[_Pending]) -> None:
        records = [rec for rec, _ in batch]
        try:
            # `always` waits for the disk in a worker thread; otherwise a write to the OS is a copy
            # into the page cache, cheaper than the hand-off to a thread and back.
            outcome = await asyncio.to_thread(self._write_batch, records) if self._sync else self._write_batch(records)
        except OSError as exc:
            self._failed()
            err = self._error(exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        except Exception as exc:  # a bug: never leave an appender waiting
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._succeeded()
        bound = self._bound
        if bound is not None and self._hold is None and bound[0] + self._written_total - bound[1] >= bound[2]:
            self.hold(bound[3])  # this batch took the unshipped backlog over its bound: the next one waits
            if self.on_hold is not None:
                self.on_hold()
        written = 0
        for (_, fut), problem in zip(batch, outcome, strict=True):
            if problem is None:
                written += 1
            if not fut.done():
                if problem is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(problem)
        metrics.audit_records_total.inc(written)

    async def _sync_loop(self) -> None:
        """`interval` mode: make what was written durable every `fsync_interval`, then move the head."""
        while True:
            await asyncio.sleep(self._sync_every)
            if self._fd is None:
                continue
            if self._seq == self._synced_seq:
                # the last writes of a burst are synced, the head may still be behind: move it too
                seq, mac, name = self._synced_tail
                if self._head_seq < seq and time.monotonic() - self._head_at >= HEAD_SYNC_INTERVAL:
                    try:
                        await asyncio.to_thread(self._put_head, seq, mac, name, sync=True)
                    except OSError as exc:
                        log.error("decision log head not written: %s", exc.strerror or type(exc).__name__)
                    self._head_at = time.monotonic()
                continue
            seq, mac, name = self._seq, self._prev, self.path.name
            now = time.monotonic()
            head = now - self._head_at >= HEAD_SYNC_INTERVAL
            fd = os.dup(self._fd)  # the writer may rotate and close its own descriptor meanwhile
            try:
                await asyncio.to_thread(self._sync_to, fd, seq, mac, name, head)
                self._synced_seq, self._synced_tail = seq, (seq, mac, name)
                if head:
                    self._head_at = now
            except OSError as exc:
                log.error("decision log sync failed: %s", exc.strerror or type(exc).__name__)
                self._failed()
            finally:
                os.close(fd)

    async def _head_loop(self) -> None:
        """`always`/`never`: the writer moves the head at most every HEAD_INTERVAL as it writes; after
        the last write of a burst this moves it the rest of the way (a sidecar shipper follows it)."""
        while True:
            await asyncio.sleep(2 * HEAD_INTERVAL)
            seq, mac, name = self._tail
            if seq > self._head_seq and time.monotonic() - self._head_at >= HEAD_INTERVAL:
                try:
                    await asyncio.to_thread(self._put_head, seq, mac, name, sync=self._sync)
                except OSError as exc:
                    log.error("decision log head not written: %s", exc.strerror or type(exc).__name__)
                self._head_at = time.monotonic()

    def _sync_to(self, fd: int, seq: int, mac: str, name: str, head: bool) -> None:
        os.fdatasync(fd)
        if head:
            self._put_head(seq, mac, name, sync=True)

    def _failed(self) -> None:
        self._healthy = False
        metrics.audit_up.set(0)
        metrics.audit_write_errors_total.inc()

    def _succeeded(self) -> None:
        self._healthy = True
        metrics.audit_up.set(1)

    def _error(self, exc: OSError) -> AuditWriteError:
        reason = exc.strerror or str(exc)
        return AuditWriteError(f"cannot write the decision log {self.path}: {reason}")

    # -- writer thread side ---------------------------------------------------------------------

    def _start_sync(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            private_dir(directory)
            os.chmod(directory, 0o700)
        torn = self._recover()
        self._open()
        if self._durable:
            fsync_dir(directory)  # the file's name is durable too
        start: dict[str, Any] = {
            "kind": "start", "chain": self.chain_id, "time": now_iso(), "pid": os.getpid(),
            "version": __version__, "resumed_from": self._seq,
            # unique even for two replicas started in the same millisecond as the same pid (1, in a
            # container) under one key: a new chain's first record is its identity in the store
            "nonce": os.urandom(8).hex(),
        }
        if torn:
            start["discarded_bytes"] = torn
        line, mac = self._seal(start, self._seq + 1, self._prev)
        self._write([line], self._seq + 1, mac, force_head=True)

    def _recover(self) -> int:
        """Find where the chain stands: the head file or the last record on disk, whichever is later.

        A partial last line (a crash mid-write, never acknowledged) is cut off; returns its length.
        """
        head = None
        with contextlib.suppress(ValueError):
            head = read_head(self.head_file)
        torn = 0
        tail: dict[str, Any] | None = None
        for path in reversed(chain_files(self.path)):
            line, cut = _last_line(path, truncate=(path == self.path))
            torn += cut
            if line is not None:
                with contextlib.suppress(ValueError):
                    parsed = orjson.loads(line)
                    if isinstance(parsed, dict) and isinstance(parsed.get("seq"), int):
                        tail = parsed
                break
        if tail is not None and (head is None or tail["seq"] >= head["seq"]):
            self._seq, self._prev = int(tail["seq"]), str(tail.get("mac", ""))
        elif head is not None:
            self._seq, self._prev = int(head["seq"]), str(head["mac"])
        return torn

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        ino = (st.st_dev, st.st_ino)
        if ino != self._ino or st.st_size < self._size:
            self._size = st.st_size  # a new (or externally replaced) file: append where it ends
        self._fd, self._ino = fd, ino
        return fd

    def _drop_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _seal(self, record: dict[str, Any], seq: int, prev: str) -> tuple[bytes, str]:
        body = {**record, "seq": seq, "prev": prev, "kid": self._ring.current_id}
        mac = sign(self._ring.current, canonical(body))
        body["mac"] = mac
        return canonical(body) + b"\n", mac

    def _checkpoint(self, reason: str, seq: int, prev: str) -> tuple[bytes, str]:
        record = {"kind": "checkpoint", "chain": self.chain_id, "time": now_iso(), "reason": reason,
                  "count": seq, "head": prev}
        return self._seal(record, seq + 1, prev)

    def _write_batch(self, records: list[dict[str, Any]]) -> list[VeilError | None]:
        outcome: list[VeilError | None] = []
        lines: list[bytes] = []
        seq, prev, since = self._seq, self._prev, self._since_checkpoint
        for rec in records:
            try:
                line, mac = self._seal(rec, seq + 1, prev)
            except TypeError as exc:  # orjson.JSONEncodeError: not JSON-serializable
                outcome.append(AuditRecordInvalid(f"audit record is not JSON-serializable: {exc}"))
                continue
            outcome.append(None)
            seq, prev, since = seq + 1, mac, since + 1
            lines.append(line)
            if since >= self._checkpoint_every:
                line, prev = self._checkpoint("periodic", seq, prev)
                seq, since = seq + 1, 0
                lines.append(line)
        if lines:
            self._write(lines, seq, prev)
            self._since_checkpoint = since
        if self._size >= self._max_bytes:
            with contextlib.suppress(OSError):  # the records are safe; rotation retries next batch
                self._rotate()
        return outcome

    def _write(self, lines: list[bytes], seq: int, mac: str, *, force_head: bool = False) -> None:
        """Append lines, fsync, advance the chain, update the head. The chain advances only on success.

        The head file is replaced at most every HEAD_INTERVAL seconds (and always on rotation and
        close): it may lag the log by that much, never lead it, which `verify` accepts.
        """
        try:
            fd = self._fd if self._fd is not None else self._open()
            st = os.stat(self.path)  # fails when the file or its directory is gone
            if (st.st_dev, st.st_ino) != self._ino:  # replaced (restored from elsewhere): follow it
                self._drop_fd()
                fd = self._open()
            on_disk = os.fstat(fd).st_size
            if on_disk > self._size:
                os.ftruncate(fd, self._size)  # a failed batch left a partial write behind
            data = memoryview(b"".join(lines))
            while data:
                n = os.write(fd, data)
                data = data[n:]
            if self._sync or (force_head and self._durable):
                os.fdatasync(fd)
        except OSError:
            self._drop_fd()
            raise
        n = sum(len(line) for line in lines)
        self._size += n
        self._written_total += n
        self._seq, self._prev = seq, mac
        self._tail = (seq, mac, self.path.name)  # one reference: read whole by the head loop
        if force_head:
            self._put_head(seq, mac, self.path.name, sync=self._durable)
        elif self.fsync_mode != "interval":  # (interval: the syncer moves the head after each sync)
            now = time.monotonic()
            if now - self._head_at >= HEAD_INTERVAL:
                self._put_head(seq, mac, self.path.name, sync=self._sync)
                self._head_at = now

    def _put_head(self, seq: int, mac: str, name: str, *, sync: bool) -> None:
        """Replace the head file unless a later record's head is already there (the writer and the
        background syncer may race: the head only moves forward)."""
        with self._head_lock:
            if seq <= self._head_seq:
                return
            head = {"chain": self.chain_id, "seq": seq, "mac": mac, "file": name, "time": now_iso()}
            write_head(self.head_file, head, sync=sync)
            self._head_seq = seq

    def _rotate(self) -> None:
        line, mac = self._checkpoint("rotate", self._seq, self._prev)
        self._write([line], self._seq + 1, mac, force_head=True)
        self._since_checkpoint = 0
        self._drop_fd()
        existing = segments(self.path)
        target = segment_path(self.path, existing[-1][0] + 1 if existing else 1)
        os.rename(self.path, target)
        self._ino, self._size = None, 0
        self._open()
        if self._durable:
            fsync_dir(self.path.parent)

    def _close_sync(self) -> None:
        try:
            line, mac = self._checkpoint("close", self._seq, self._prev)
            self._write([line], self._seq + 1, mac, force_head=True)
        finally:
            self._drop_fd()


def _last_line(path: Path, *, truncate: bool) -> tuple[bytes | None, int]:
    """The last complete line of a file and the length of a partial line after it (cut off if asked)."""
    try:
        with open(path, "rb+" if truncate else "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None, 0
            block, pos, data = 65536, size, b""
            while pos > 0:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
                if data.count(b"\n") >= 2 or (pos == 0 and b"\n" in data):
                    break
            cut = 0
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                cut = len(data) - keep
                data = data[:keep]
                if truncate:
                    f.truncate(size - cut)
            lines = data.rstrip(b"\n").rsplit(b"\n", 1)
            return (lines[-1] or None), cut
    except FileNotFoundError:
        return None, 0
