"""Reading one chain's local files from a record on, following the writer through rotation.

The writer appends whole lines and renames the active file to the next segment number when it rotates
(after writing the rotation checkpoint); it never writes to a segment again. So a reader at the end of
a file that is no longer the active one (its inode changed) reads it once more to its end, then moves
to the next file in chain order. Only complete lines are read; a line being written stays for later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil.audit._chain import chain_files, seq_of
from veil.errors import VeilError

CHUNK = 1 << 20
LINE_GUESS = 2048  # bytes read ahead per record wanted (records are about 1 KB)


class LocalChainError(VeilError):
    """The local chain is not readable as a chain (a gap, a broken link, a line that is not a record):
    it is not shipped past that point."""

    code = "audit_local_invalid"


@dataclass(frozen=True)
class Position:
    """Where the next record starts: a file (by inode, and its name when last seen) and an offset."""

    ino: int
    name: str
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    line: bytes  # without the newline
    rec: dict[str, Any]


def _first_seq(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            line = f.readline(CHUNK * 64)
    except OSError:
        return None
    if not line.endswith(b"\n"):
        return None
    try:
        seq = orjson.loads(line).get("seq")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


class ChainReader:
    def __init__(self, active: Path) -> None:
        self.active = active
        self._fd: int | None = None
        self._ino = 0
        self._name = ""
        self._offset = 0
        self.next_seq = 1
        self.last_mac = ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def position(self) -> Position:
        return Position(self._ino, self._name, self._offset)

    def _open(self, path: Path, offset: int) -> None:
        self.close()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._fd, self._ino, self._name, self._offset = fd, os.fstat(fd).st_ino, path.name, offset

    def seek(self, after_seq: int, last_mac: str, hint: Position | None = None) -> bool:
        """Position the reader so that the next record read is `after_seq + 1` (linked to `last_mac`).
        False when that record is not in the local files (removed, or the files start later)."""
        self.next_seq, self.last_mac = after_seq + 1, last_mac
        files = chain_files(self.active)
        if hint is not None:
            for path in files:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if st.st_ino == hint.ino and st.st_size >= hint.offset:
                    self._open(path, hint.offset)
                    peek = self._peek_seq()
                    if peek is None or peek == self.next_seq:
                        return True
                    break
        start: Path | None = None
        for path in files:
            first = _first_seq(path)
            if first is None:
                continue
            if first > self.next_seq:
                break
            start = path
        if start is None:
            # no file starts at or before the wanted record: fine only if nothing was written yet
            firsts = [f for f in (_first_seq(p) for p in files) if f is not None]
            if firsts and firsts[0] > self.next_seq:
                return False
            if files:
                self._open(files[0], 0)
            return True
        self._open(start, 0)
        while True:
            lines = self._complete_lines()
            if not lines:
                return self._at_end_ok()
            for raw in lines:
                seq = seq_of(raw)
                if seq is not None and seq >= self.next_seq:
                    return seq == self.next_seq
                self._offset += len(raw) + 1

    def _at_end_ok(self) -> bool:
        """At the end of a file while seeking: the wanted record is the next one written (or in the
        next file)."""
        nxt = self._next_file()
        if nxt is None:
            return True
        self._open(nxt, 0)
        peek = self._peek_seq()
        return peek is None or peek == self.next_seq

    def _peek_seq(self) -> int | None:
        lines = self._complete_lines(limit=1)
        return seq_of(lines[0]) if lines else None

    def _complete_lines(self, limit: int = 0, want: int = CHUNK) -> list[bytes]:
        """Complete lines from the current offset (not consumed): about `want` bytes of them (more when
        one line is longer)."""
        if self._fd is None:
            return []
        size = max(4096, min(want, CHUNK))
        while True:
            data = os.pread(self._fd, size, self._offset)
            cut = data.rfind(b"\n")
            if cut >= 0:
                lines = data[:cut].split(b"\n")
                return lines[:limit] if limit else lines
            if len(data) < size:
                return []
            size *= 2  # a line longer than the chunk

    def _next_file(self) -> Path | None:
        """The file after the current one, once the current one is no longer written to."""
        try:
            active_ino = os.stat(self.active).st_ino
        except OSError:
            active_ino = -1
        if active_ino == self._ino:
            return None  # still the active file: wait for more
        if self._complete_lines():
            return None  # it was renamed after our last read: read it to its end first
        files = chain_files(self.active)
        inos = []
        for p in files:
            try:
                inos.append(os.stat(p).st_ino)
            except OSError:
                inos.append(-1)
        if self._ino in inos:
            i = inos.index(self._ino)
            return files[i + 1] if i + 1 < len(files) else None
        return files[0] if files else None

    def read(self, upto_seq: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from the position on, up to seq `upto_seq` (what the writer has acknowledged),
        checked for continuity (seq and link); `position` is then where the record after them starts.
        Raises LocalChainError on a gap or a broken link."""
        out: list[Record] = []
        size = 0
        if self._fd is None:
            files = chain_files(self.active)
            if not files:
                return out
            self._open(files[0], 0)
        while len(out) < max_records and size < max_bytes and self.next_seq <= upto_seq:
            lines = self._complete_lines(want=min(max_bytes - size, (max_records - len(out)) * LINE_GUESS))
            if not lines:
                nxt = self._next_file()
                if nxt is None:
                    break
                self._open(nxt, 0)
                continue
            for raw in lines:
                if len(out) >= max_records or size >= max_bytes or self.next_seq > upto_seq:
                    break
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise LocalChainError(f"{self._name}: a line at offset {self._offset} is not JSON") from None
                seq = rec.get("seq") if isinstance(rec, dict) else None
                if seq != self.next_seq:
                    raise LocalChainError(f"{self._name}: seq {seq} where {self.next_seq} was expected")
                if rec.get("prev") != self.last_mac:
                    raise LocalChainError(f"{self._name}: seq {seq} does not link to the record before it")
                self._offset += len(raw) + 1
                self.next_seq, self.last_mac = seq + 1, str(rec.get("mac", ""))
                size += len(raw) + 1
                out.append(Record(seq, raw, rec))
        return out

    def backlog_bytes(self, pos: Position | None) -> int:
        """Bytes in the chain's files from `pos` on (everything when None or when its file is gone)."""
        total, counting = 0, pos is None
        sizes = []
        for path in chain_files(self.active):
            try:
                st = os.stat(path)
            except OSError:
                continue
            sizes.append((st.st_ino, st.st_size))
        if pos is not None and all(ino != pos.ino for ino, _ in sizes):
            counting = True
        for ino, sz in sizes:
            if not counting and pos is not None and ino == pos.ino:
                counting = True
                total += max(0, sz - pos.offset)
                continue
            if counting:
                total += sz
        return total


