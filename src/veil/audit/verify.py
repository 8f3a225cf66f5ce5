"""Verify decision log chains: every MAC, every link, no gaps, nothing missing at the end.

Problems, each reported at the first bad line (file, 1-based line):

    malformed      not a JSON object with int seq and str prev/kid/mac; also an unreadable head file
    unknown_key    the record's kid is in no key of the ring
    mac_mismatch   the record was changed (or forged without the key)
    seq_gap        records are missing before this line (deleted)
    reordered      the missing seq follows shortly after (records moved)
    seq_repeat     a seq at or before one already seen (a record copied or replayed)
    chain_break    the MAC is valid but `prev` is not the previous record's mac (spliced in with a key)
    truncated      the head file (or, without one, the lack of a final checkpoint) says records are missing
                   at the end; reported at the line after the last one

A malformed line in the middle of a chain is damage or tampering: veil never leaves one there.

An **incomplete last line** (the active file does not end in a newline) is what a crash in the middle of
a write leaves behind. It is not a failure: the record was never acknowledged (its response waits for
the whole line), so nothing that was decided is missing. The result is ok and carries `torn_tail`
(file, line, bytes, the offset to cut at); `veil serve` cuts it off when it next starts and notes
`discarded_bytes` in its start record. The head file still applies: if it names a record that is not
complete on disk, that is `truncated` (records cut off the end), not a torn write.

A path may be a log file (its whole chain is verified: rotated segments and active file), a directory
(every chain in it) or a glob. Chains are verified independently; the first failing one is reported.
"""

from __future__ import annotations

import glob as globmod
import hmac
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil.audit._chain import (
    WILDCARD_KID,
    base_of,
    canonical,
    chain_files,
    chains_in_dir,
    head_path,
    read_head,
    sign,
)
from veil.errors import VeilError
from veil.keys import KeyRing

LOOKAHEAD = 64  # lines searched for a missing seq before calling it a gap rather than a reorder

Visitor = Callable[[dict[str, Any], Path, int], None]


@dataclass(frozen=True)
class TornTail:
    """An incomplete last line of a chain's active file: a write cut short by a crash."""

    file: Path
    line: int
    bytes: int
    offset: int  # the file's size without it: where `veil serve` cuts at its next start

    def render(self) -> str:
        return (f"{self.file}:{self.line}: incomplete last line ({self.bytes} bytes, no newline): a write cut "
                f"short by a crash, never acknowledged; `veil serve` cuts it off when it next starts "
                f"(offline: truncate -s {self.offset} {self.file})")

    def to_json(self) -> dict[str, object]:
        return {"file": str(self.file), "line": self.line, "bytes": self.bytes, "offset": self.offset}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    files: int
    chains: int = 0
    first_bad: tuple[Path, int] | None = None
    problem: str | None = None
    message: str = ""
    torn_tails: tuple[TornTail, ...] = ()

    def render(self) -> str:
        if self.ok:
            torn = "".join(f"\nnote: {t.render()}" for t in self.torn_tails)
            return f"ok: {self.records} records in {self.files} files{torn}"
        where = f"{self.first_bad[0]}:{self.first_bad[1]}" if self.first_bad else "?"
        return f"FAILED at {where}: {self.problem}: {self.message}"


class _Bad(VeilError):
    """The first verification problem: ends the walk, reported as a VerifyResult."""

    def __init__(self, problem: str, file: Path, line: int, message: str) -> None:
        super().__init__(message, code=problem)
        self.problem, self.file, self.line, self.message = problem, file, line, message


def find_chains(paths: Sequence[str | Path]) -> list[Path]:
    """The active file of every chain named by paths (files, directories or globs), sorted."""
    bases: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            bases.update(chains_in_dir(p))
        elif p.exists():
            bases.add(p.with_suffix("") if p.suffix == ".head" else base_of(p))
        elif any(c in str(raw) for c in "*?["):
            for hit in globmod.glob(str(raw)):
                h = Path(hit)
                if h.is_dir():
                    bases.update(chains_in_dir(h))
                elif not h.name.endswith((".head", ".tmp")):
                    bases.add(base_of(h))
        else:
            raise VeilError(f"no such decision log: {raw}", code="audit_log_missing")
    if not bases:
        raise VeilError("no decision log files found", code="audit_log_missing")
    return sorted(bases)


def verify(
    paths: Sequence[str | Path],
    ring: KeyRing,
    *,
    require_head: bool = True,
    visit: Visitor | None = None,
) -> VerifyResult:
    """Verify every chain named by paths. `visit(record, file, line)` sees each record that verified.

    With `require_head=False` a chain without a head file is accepted if it ends in a checkpoint
    (archived logs); by default a missing head file counts as `truncated`.
    """
    records = files = 0
    torn: list[TornTail] = []
    actives = find_chains(paths)
    for active in actives:
        chain = chain_files(active)
        files += len(chain)
        try:
            count, tail = _verify_chain(active, chain, ring, require_head, visit)
        except _Bad as bad:
            return VerifyResult(False, records, files, len(actives), (bad.file, bad.line), bad.problem,
                                bad.message)
        records += count
        if tail is not None:
            torn.append(tail)
    return VerifyResult(True, records, files, len(actives), torn_tails=tuple(torn))


class _Lines:
    """(file, line number, bytes) over the files of a chain, with lookahead."""

    def __init__(self, files: list[Path]) -> None:
        self._it = self._read(files)
        self._buf: deque[tuple[Path, int, bytes]] = deque()

    @staticmethod
    def _read(files: list[Path]) -> Iterator[tuple[Path, int, bytes]]:
        for path in files:
            with open(path, "rb") as f:
                for n, line in enumerate(f, 1):
                    yield path, n, line

    def __iter__(self) -> Iterator[tuple[Path, int, bytes]]:
        return self

    def __next__(self) -> tuple[Path, int, bytes]:
        return self._buf.popleft() if self._buf else next(self._it)

    def peek(self, n: int) -> list[tuple[Path, int, bytes]]:
        while len(self._buf) < n:
            try:
                self._buf.append(next(self._it))
            except StopIteration:
                break
        return list(self._buf)[:n]


def _parse(raw: bytes, path: Path, line: int) -> dict[str, Any]:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Bad("malformed", path, line, "not valid JSON (a complete line: changed after it was written; "
                   "a crash only ever leaves an incomplete last line)") from None
    if not isinstance(rec, dict):
        raise _Bad("malformed", path, line, "not a JSON object")
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise _Bad("malformed", path, line, "no positive integer seq")
    for name in ("prev", "kid", "mac"):
        if not isinstance(rec.get(name), str):
            raise _Bad("malformed", path, line, f"no string {name}")
    return rec


def _seq_of(raw: bytes) -> int | None:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return seq if isinstance(seq, int) else None


def _key(ring: KeyRing, kid: str) -> bytes | None:
    return ring.get(kid) or ring.get(WILDCARD_KID)


def _verify_chain(
    active: Path, files: list[Path], ring: KeyRing, require_head: bool, visit: Visitor | None
) -> tuple[int, TornTail | None]:
    hpath = head_path(active)
    try:
        head = read_head(hpath)
    except (ValueError, OSError) as exc:
        raise _Bad("malformed", hpath, 1, f"unreadable head file ({exc})") from None
    last_seq, last_mac, last_kind = 0, "", None
    last_pos: tuple[Path, int] = (files[0] if files else active, 0)
    count = 0
    lines = _Lines(files)
    torn: TornTail | None = None
    for path, n, raw in lines:
        if not raw.endswith(b"\n"):  # only ever the last line of a file
            if path == active:
                torn = TornTail(path, n, len(raw), path.stat().st_size - len(raw))
                break
            raise _Bad("malformed", path, n, "a rotated segment ends in an incomplete line (segments are "
                       "closed with a complete checkpoint; a crash can only tear the active file)")
        rec = _parse(raw, path, n)
        seq, kid, mac = rec["seq"], rec["kid"], rec["mac"]
        key = _key(ring, kid)
        if key is None:
            raise _Bad("unknown_key", path, n, f"no key with id {kid!r} in the ring")
        body = {k: v for k, v in rec.items() if k != "mac"}
        if not hmac.compare_digest(sign(key, canonical(body)), mac):
            raise _Bad("mac_mismatch", path, n, f"record seq {seq} fails its MAC (modified, or wrong key)")
        expected = last_seq + 1
        if seq > expected:
            ahead = [s for _, _, r in lines.peek(LOOKAHEAD) if (s := _seq_of(r)) is not None]
            if expected in ahead:
                raise _Bad("reordered", path, n, f"seq {seq} where {expected} was expected; it comes later")
            missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}..{seq - 1} are"
            raise _Bad("seq_gap", path, n, f"{missing} missing before seq {seq}")
        if seq < expected:
            raise _Bad("seq_repeat", path, n, f"seq {seq} again after {last_seq}")
        if rec["prev"] != last_mac:
            raise _Bad("chain_break", path, n, f"record seq {seq} does not link to seq {last_seq}")
        if rec.get("kind") == "checkpoint" and (rec.get("count") != seq - 1 or rec.get("head") != last_mac):
            raise _Bad("chain_break", path, n, "checkpoint does not match the chain before it")
        if head is not None and seq == head["seq"] and not hmac.compare_digest(mac, head["mac"]):
            raise _Bad("chain_break", path, n, f"record seq {seq} is not the one in {hpath.name}")
        last_seq, last_mac, last_kind, last_pos = seq, mac, rec.get("kind"), (path, n)
        count += 1
        if visit is not None:
            visit(rec, path, n)
    end = (last_pos[0], last_pos[1] + 1)
    if head is not None:
        if head["seq"] > last_seq:
            raise _Bad("truncated", *end, f"{hpath.name} says seq {head['seq']}, the log ends at {last_seq}")
    elif require_head:
        raise _Bad("truncated", *end, f"no head file {hpath.name}: cannot rule out records cut off the end")
    elif last_kind != "checkpoint":
        raise _Bad("truncated", *end, "the chain does not end in a checkpoint")
    return count, torn
