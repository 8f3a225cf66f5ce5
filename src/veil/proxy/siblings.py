"""The workers of one veil (`veil serve --workers N`) talk to each other over Unix datagram sockets.

The supervisor creates a private directory (0700) and names it in `VEIL_BUS_DIR`, with the number of
workers in `VEIL_WORKERS` and the replica's name in `VEIL_REPLICA`; worker `w<i>` binds
`<dir>/w<i>.sock` before it opens its consent store. Messages are small JSON datagrams:

    {"t": "inv", "id": 7, "from": "w0", "h": [hash, ...]}  → drop these subject hashes, then
    {"t": "ack", "id": 7, "from": "w1"}                       answer
    {"t": "ready?", "id": 8, "from": "w0"}                  → this worker's readiness report
    {"t": "ready", "id": 8, "from": "w1", "r": {...}}

A consent write waits for every sibling's `ack` before it answers (veil.consent.propagate); `/readyz`
asks every sibling for its report and answers for the whole veil. A sibling whose socket is absent or
refuses (not started yet, or gone: the supervisor then stops every worker) holds no cache: it counts as
having dropped the subjects, and as not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("veil.workers")

BUS_ENV = "VEIL_BUS_DIR"
WORKERS_ENV = "VEIL_WORKERS"
REPLICA_ENV = "VEIL_REPLICA"
MAX_DATAGRAM = 60_000  # bytes; an invalidation carries at most this many hashes per datagram
HASHES_PER_DATAGRAM = 1000


@dataclass
class _Waiting:
    expected: set[str]
    replies: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reply(self, sender: str, value: Any) -> None:
        if sender in self.expected:
            self.replies[sender] = value
            if set(self.replies) >= self.expected:
                self.done.set()


class Siblings:
    """This worker's end of the bus. `on_invalidate(hashes)` drops subjects from the cache;
    `on_ready()` gives this worker's readiness report (JSON-serializable)."""

    def __init__(self, directory: Path, me: str, workers: int, replica: str, *,
                 on_invalidate: Callable[[list[str]], None], on_ready: Callable[[], dict[str, Any]]) -> None:
        self.directory = directory
        self.me = me
        self.replica = replica
        self.names = [f"w{i}" for i in range(workers)]
        self.others = [n for n in self.names if n != me]
        self._on_invalidate = on_invalidate
        self._on_ready = on_ready
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_env(cls, me: str, *, on_invalidate: Callable[[list[str]], None],
                 on_ready: Callable[[], dict[str, Any]]) -> Siblings | None:
        """The bus of a supervised worker; None when this process runs alone."""
        directory, workers = os.environ.get(BUS_ENV), os.environ.get(WORKERS_ENV, "")
        if not directory or not workers.isdigit() or int(workers) < 2:
            return None
        replica = os.environ.get(REPLICA_ENV) or "veil"
        return cls(Path(directory), me, int(workers), replica, on_invalidate=on_invalidate, on_ready=on_ready)

    def full(self, name: str) -> str:
        """A worker's name in answers: `replica/w1`."""
        return f"{self.replica}/{name}"

    def _path(self, name: str) -> str:
        return str(self.directory / f"{name}.sock")

    async def start(self) -> None:
        path = self._path(self.me)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path(self.me))

    # -- asking ------------------------------------------------------------------------------------------

    async def invalidate(self, hashes: Sequence[str], timeout: float) -> tuple[list[str], list[str]]:
        """Every other worker drops these hashes; (acknowledged, not acknowledged) as full names."""
        missing: set[str] = set()
        for start in range(0, max(len(hashes), 1), HASHES_PER_DATAGRAM):
            chunk = list(hashes[start:start + HASHES_PER_DATAGRAM])
            replies = await self._ask({"t": "inv", "h": chunk}, timeout)
            missing |= {n for n, v in replies.items() if v is None}
        acked = set(self.others) - missing
        return [self.full(n) for n in sorted(acked)], [self.full(n) for n in sorted(missing)]

    async def readiness(self, timeout: float) -> dict[str, dict[str, Any] | None]:
        """Every other worker's readiness report (None: it did not answer)."""
        replies = await self._ask({"t": "ready?"}, timeout, absent_counts=False)
        return {n: replies.get(n) for n in self.others}

    async def _ask(self, message: dict[str, Any], timeout: float, *,
                   absent_counts: bool = True) -> dict[str, Any]:
        """Send to every other worker and collect replies; an absent worker answers `True` when
        `absent_counts` (it holds no cache), else None."""
        msg_id = next(self._ids)
        wait = _Waiting(set(self.others))
        self._waiting[msg_id] = wait
        data = orjson.dumps({**message, "id": msg_id, "from": self.me})
        try:
            for name in self.others:
                if not self._send(name, data):
                    wait.reply(name, True if absent_counts else None)
            if not wait.done.is_set() and wait.expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait.done.wait(), timeout)
        finally:
            self._waiting.pop(msg_id, None)
        return {n: wait.replies.get(n) for n in self.others}

    def _send(self, name: str, data: bytes) -> bool:
        """False when the worker is absent (no socket, or nobody bound to it)."""
        if self._sock is None:
            return False
        for _ in range(50):
            try:
                self._sock.sendto(data, self._path(name))
                return True
            except (FileNotFoundError, ConnectionRefusedError):
                return False
            except BlockingIOError:  # its queue is full: it is busy; try again briefly
                continue
            except OSError as exc:
                log.warning("cannot reach worker %s: %s", name, exc.strerror)
                return False
        return True  # still full: count it as sent; the wait decides

    # -- answering ---------------------------------------------------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MAX_DATAGRAM * 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                self._handle(orjson.loads(data))
            except Exception:
                log.exception("bad message between workers")

    def _handle(self, msg: dict[str, Any]) -> None:
        kind, msg_id, sender = msg.get("t"), msg.get("id"), msg.get("from")
        if not isinstance(msg_id, int) or sender not in self.names:
            return
        if kind == "inv":
            self._on_invalidate([str(h) for h in msg.get("h", ())])
            self._send(str(sender), orjson.dumps({"t": "ack", "id": msg_id, "from": self.me}))
        elif kind == "ready?":
            report = self._on_ready()
            self._send(str(sender), orjson.dumps({"t": "ready", "id": msg_id, "from": self.me, "r": report}))
        elif kind in ("ack", "ready"):
            wait = self._waiting.get(msg_id)
            if wait is not None:
                wait.reply(str(sender), msg.get("r", True))
