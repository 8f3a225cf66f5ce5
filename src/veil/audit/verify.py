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
    marker_invalid a prune marker (records removed by retention) fails its MAC

A chain whose oldest segments were removed (retention, or after shipping to the store) has a signed
prune marker: verification starts after the seq it names and says so in the result's notes.
The chain rules live in `ChainCheck`, which `veil.audit.store_verify` feeds from the store.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    pruned_path,
    read_head,
    read_json,
    seq_of,
    sign,
    unseal,
)
from veil.errors import VeilError
from veil.keys import KeyRing

LOOKAHEAD = 64  # lines searched for a missing seq before calling it a gap rather than a reorder

Visitor = Callable[[dict[str, Any], Path | str, int], None]


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
    first_bad: tuple[Path | str, int] | None = None
    problem: str | None = None
    message: str = ""
    notes: tuple[str, ...] = ()  # what verification found and accepted (records pruned under a marker)
    torn_tails: tuple[TornTail, ...] = ()

    def render(self) -> str:
        if self.ok:
            torn = "".join(f"\nnote: {t.render()}" for t in self.torn_tails)
            notes = "".join(f"; {n}" for n in self.notes)
            return f"ok: {self.records} records in {self.files} files{notes}{torn}"
        where = f"{self.first_bad[0]}:{self.first_bad[1]}" if self.first_bad else "?"
        return f"FAILED at {where}: {self.problem}: {self.message}"


class ChainProblem(VeilError):
    """A chain rule broken at `where` (a file, or a chain in the store) and `line` (its line, or seq): the
    first verification problem, which ends the walk and is reported as a VerifyResult."""

    def __init__(self, problem: str, where: Path | str, line: int, message: str) -> None:
        super().__init__(message, code=problem)
        self.problem, self.file, self.line, self.message = problem, where, line, message


_Bad = ChainProblem


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
    notes: list[str] = []
    torn: list[TornTail] = []
    actives = find_chains(paths)
    for active in actives:
        chain = chain_files(active)
        files += len(chain)
        try:
            count, tail = _verify_chain(active, chain, ring, require_head, visit, notes)
        except ChainProblem as bad:
            return VerifyResult(False, records, files, len(actives), (bad.file, bad.line), bad.problem,
                                bad.message, tuple(notes))
        records += count
        if tail is not None:
            torn.append(tail)
    return VerifyResult(True, records, files, len(actives), notes=tuple(notes), torn_tails=tuple(torn))


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


def parse_record(raw: bytes | str, path: Path | str, line: int) -> dict[str, Any]:
    """A raw record parsed and checked for its envelope (seq, prev, kid, mac); ChainProblem if not."""
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


def _key(ring: KeyRing, kid: str) -> bytes | None:
    return ring.get(kid) or ring.get(WILDCARD_KID)


def check_mac(ring: KeyRing, rec: dict[str, Any], where: Path | str, line: int) -> None:
    """The record's MAC under the key its kid names; raises ChainProblem (unknown_key, mac_mismatch)."""
    kid, mac = rec["kid"], rec["mac"]
    key = _key(ring, kid)
    if key is None:
        raise _Bad("unknown_key", where, line, f"no key with id {kid!r} in the ring")
    body = {k: v for k, v in rec.items() if k != "mac"}
    if not hmac.compare_digest(sign(key, canonical(body)), mac):
        raise _Bad("mac_mismatch", where, line, f"record seq {rec['seq']} fails its MAC (modified, or wrong key)")


class ChainCheck:
    """The chain rules, written once: fed the raw records of one chain in order (from files, or from
    the store), it checks every MAC, link, seq and checkpoint, and at the end the head.

    `start_seq`/`start_mac`: where a pruned chain resumes (from a signed prune marker): the first
    record must be start_seq + 1 and link to start_mac. Records at or below start_seq before it (a
    segment whose removal was interrupted) are skipped. `head`: {"seq", "mac"} the chain must reach
    (a head file, the store's signed ship head); `head_name` names it in messages.
    """

    def __init__(self, ring: KeyRing, *, start_seq: int = 0, start_mac: str = "",
                 head: Mapping[str, Any] | None = None, head_name: str = "the head",
                 visit: Callable[[dict[str, Any], Path | str, int], None] | None = None) -> None:
        self.ring, self.head, self.head_name, self.visit = ring, head, head_name, visit
        self.start_seq = start_seq
        self.last_seq, self.last_mac = start_seq, start_mac
        self.last_kind: Any = None
        self.last_rec: dict[str, Any] | None = None
        self.last_pos: tuple[Path | str, int] | None = None
        self.count = 0
        self.skipped = 0  # records at or below start_seq, ignored
        self.unrecorded = 0  # decisions the writer could not record (its `unrecorded` records say so)

    def feed(self, raw: bytes | str, where: Path | str, line: int,
             ahead: Callable[[], list[int]] = lambda: []) -> dict[str, Any]:
        """Check one raw record; `ahead()` gives the seqs of the records after it (for reorder
        detection, asked only on a gap). Returns the parsed record; raises ChainProblem."""
        rec = parse_record(raw, where, line)
        seq, mac = rec["seq"], rec["mac"]
        if seq <= self.start_seq and self.count == 0:
            self.skipped += 1
            return rec
        check_mac(self.ring, rec, where, line)
        expected = self.last_seq + 1
        if seq > expected:
            if expected in ahead():
                raise _Bad("reordered", where, line, f"seq {seq} where {expected} was expected; it comes later")
            missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}..{seq - 1} are"
            raise _Bad("seq_gap", where, line, f"{missing} missing before seq {seq}")
        if seq < expected:
            raise _Bad("seq_repeat", where, line, f"seq {seq} again after {self.last_seq}")
        if rec["prev"] != self.last_mac:
            raise _Bad("chain_break", where, line, f"record seq {seq} does not link to seq {self.last_seq}")
        kind = rec.get("kind")
        if kind == "checkpoint" and (rec.get("count") != seq - 1 or rec.get("head") != self.last_mac):
            raise _Bad("chain_break", where, line, "checkpoint does not match the chain before it")
        head = self.head
        if head is not None and seq == head["seq"] and not hmac.compare_digest(mac, head["mac"]):
            raise _Bad("chain_break", where, line, f"record seq {seq} is not the one in {self.head_name}")
        if kind == "unrecorded" and isinstance(rec.get("count"), int):
            self.unrecorded += rec["count"]
        self.last_seq, self.last_mac, self.last_kind, self.last_pos = seq, mac, kind, (where, line)
        self.last_rec = rec
        self.count += 1
        if self.visit is not None:
            self.visit(rec, where, line)
        return rec

    def finish(self, end: tuple[Path | str, int], *, require_head: bool = True) -> int:
        """After the last record: the chain must reach its head (without a head, with require_head
        False, it must end in a checkpoint). `end` is where a missing record would have been.
        Returns the number of records checked."""
        head = self.head
        if head is not None:
            if head["seq"] > self.last_seq:
                raise _Bad("truncated", *end, f"{self.head_name} says seq {head['seq']}, the log ends at "
                                              f"{self.last_seq}")
        elif require_head:
            raise _Bad("truncated", *end, f"no {self.head_name}: cannot rule out records cut off the end")
        elif self.last_kind != "checkpoint" and not (self.count == 0 and self.start_seq > 0):
            raise _Bad("truncated", *end, "the chain does not end in a checkpoint")
        return self.count


def read_prune_marker(path: Path, ring: KeyRing) -> dict[str, Any] | None:
    """A chain's signed prune marker (local file), None when there is none; ChainProblem when it is
    unreadable or its MAC fails (a forged marker would hide removed records)."""
    try:
        marker = read_json(path)
    except (ValueError, OSError) as exc:
        raise _Bad("malformed", path, 1, f"unreadable prune marker ({exc})") from None
    if marker is None:
        return None
    if not unseal(ring, marker) or not isinstance(marker.get("through_seq"), int) \
            or not isinstance(marker.get("through_mac"), str):
        raise _Bad("marker_invalid", path, 1, "the prune marker fails its MAC or is incomplete")
    return marker


def pruned_note(label: str, marker: Mapping[str, Any]) -> str:
    """How a verification states what a prune marker says was removed."""
    why = str(marker.get("reason", "pruned"))
    if marker.get("before"):
        why += f", older than {marker['before']}"
    if marker.get("at"):
        why += f", at {marker['at']}"
    count = f"{marker['records']} records" if isinstance(marker.get("records"), int) else "records"
    return f"{label}: {count} up to seq {marker['through_seq']} removed ({why})"


def _verify_chain(
    active: Path, files: list[Path], ring: KeyRing, require_head: bool, visit: Visitor | None,
    notes: list[str],
) -> tuple[int, TornTail | None]:
    hpath = head_path(active)
    try:
        head = read_head(hpath)
    except (ValueError, OSError) as exc:
        raise _Bad("malformed", hpath, 1, f"unreadable head file ({exc})") from None
    marker = read_prune_marker(pruned_path(active), ring)
    start_seq, start_mac = (marker["through_seq"], marker["through_mac"]) if marker else (0, "")
    check = ChainCheck(ring, start_seq=start_seq, start_mac=start_mac, head=head, head_name=hpath.name,
                       visit=visit)
    lines = _Lines(files)
    torn: TornTail | None = None

    def ahead() -> list[int]:
        return [s for _, _, r in lines.peek(LOOKAHEAD) if (s := seq_of(r)) is not None]

    for path, n, raw in lines:
        if not raw.endswith(b"\n"):  # only ever the last line of a file
            if path == active:
                torn = TornTail(path, n, len(raw), path.stat().st_size - len(raw))
                break
            raise _Bad("malformed", path, n, "a rotated segment ends in an incomplete line (segments are "
                       "closed with a complete checkpoint; a crash can only tear the active file)")
        check.feed(raw, path, n, ahead)
    last = check.last_pos or (files[0] if files else active, 0)
    count = check.finish((last[0], last[1] + 1), require_head=require_head)
    if marker is not None:
        notes.append(pruned_note(active.name, marker))
    if check.unrecorded:
        notes.append(f"{active.name}: {check.unrecorded} decisions were not recorded (backlog over its bound)")
    return count, torn
