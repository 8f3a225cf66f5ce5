"""`veil audit verify --store postgresql://…`: every chain in the store, checked with the same chain
rules as the files (`veil.audit.verify.ChainCheck`), reported per replica.

For each chain (including chains of replicas that no longer exist): its rows are streamed in seq
order (keyset pages) into a ChainCheck that starts after the chain's latest signed prune marker (if
retention removed a prefix) and must end at the store's signed ship head. On top of the chain rules:

    head_invalid    the ship head is missing (records exist), fails its MAC, names another chain, or
                    disagrees with the chain's row
    marker_invalid  the latest prune marker fails its MAC or names another chain
    misplaced       a row's seq column is not the seq of the record it holds
    extra_rows      the table holds rows of the chain that the seq-ordered walk did not see (two rows
                    with one seq) — or rows of no known chain (`orphan_rows`, store-wide)
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from veil.audit._chain import seq_of, unseal
from veil.audit.store import AuditStore, ChainRow
from veil.audit.verify import LOOKAHEAD, ChainCheck, ChainProblem, pruned_note
from veil.keys import KeyRing

PAGE = 10_000


@dataclass(frozen=True)
class ChainVerdict:
    replica: str
    chain: str
    chain_no: int
    genesis: str
    ok: bool
    records: int
    first_seq: int | None = None
    last_seq: int | None = None
    status: str = "open"  # closed: ends with the writer's closing checkpoint
    last_ship: str | None = None
    problem: str | None = None
    at_seq: int | None = None
    message: str = ""
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.replica}/{self.chain}"

    def render(self) -> str:
        if not self.ok:
            return f"FAILED  {self.label} (#{self.chain_no}) at seq {self.at_seq}: {self.problem}: {self.message}"
        span = f"seq {self.first_seq}..{self.last_seq}" if self.records else "no records"
        shipped = f", last shipped {self.last_ship}" if self.last_ship else ""
        notes = "".join(f"; {n}" for n in self.notes)
        return (f"ok      {self.label} (#{self.chain_no}): {self.records} records ({span}), "
                f"{self.status}{shipped}{notes}")


@dataclass(frozen=True)
class StoreVerifyResult:
    ok: bool
    chains: list[ChainVerdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # store-wide (orphan rows)

    @property
    def records(self) -> int:
        return sum(c.records for c in self.chains)

    def render(self) -> str:
        lines = [c.render() for c in self.chains] + [f"FAILED  {p}" for p in self.problems]
        replicas = len({c.replica for c in self.chains})
        bad = sum(not c.ok for c in self.chains) + len(self.problems)
        lines.append(f"{'ok' if self.ok else 'FAILED'}: {self.records} records in {len(self.chains)} chains "
                     f"from {replicas} replicas" + (f"; {bad} problems" if bad else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "records": self.records, "problems": self.problems,
            "chains": [{
                "replica": c.replica, "chain": c.chain, "chain_no": c.chain_no, "genesis": c.genesis,
                "ok": c.ok, "records": c.records, "first_seq": c.first_seq, "last_seq": c.last_seq,
                "status": c.status, "last_ship": c.last_ship, "problem": c.problem, "at_seq": c.at_seq,
                "message": c.message, "notes": list(c.notes),
            } for c in self.chains],
        }


Visitor = Callable[[dict[str, Any], str, int], None]


async def verify_store(store: AuditStore, ring: KeyRing, *, visit: Visitor | None = None,
                       page: int = PAGE) -> StoreVerifyResult:
    chains = await store.chains()
    markers = await store.markers()
    counts = await store.counts()
    verdicts = []
    for chain in chains:
        verdicts.append(await _verify_chain(store, chain, ring, markers.get(chain.chain_no),
                                            counts.get(chain.chain_no, 0), visit, page))
    known = {c.chain_no for c in chains}
    problems = [f"orphan_rows: {n} rows of chain #{no}, which the store does not know"
                for no, n in sorted(counts.items()) if no not in known]
    return StoreVerifyResult(all(v.ok for v in verdicts) and not problems, verdicts, problems)


def _verdict(chain: ChainRow, **kw: Any) -> ChainVerdict:
    last = chain.last_ship.isoformat(timespec="seconds") if chain.last_ship else None
    return ChainVerdict(chain.replica, chain.chain, chain.chain_no, chain.genesis, last_ship=last, **kw)


async def _verify_chain(store: AuditStore, chain: ChainRow, ring: KeyRing,
                        marker_row: tuple[int, dict[str, Any] | None, int] | None, rows: int,
                        visit: Visitor | None, page: int) -> ChainVerdict:
    label = f"{chain.replica}/{chain.chain}"

    def bad(problem: str, at: int, message: str, records: int = 0) -> ChainVerdict:
        return _verdict(chain, ok=False, records=records, problem=problem, at_seq=at, message=message)

    notes: list[str] = []
    start_seq, start_mac = 0, ""
    if marker_row is not None:
        through, marker, _ = marker_row
        if marker is None or not unseal(ring, marker) or marker.get("through_seq") != through \
                or not isinstance(marker.get("through_mac"), str) \
                or marker.get("genesis") not in ("", None, chain.genesis):
            return bad("marker_invalid", through, "the latest prune marker fails its MAC or names another chain")
        start_seq, start_mac = through, marker["through_mac"]
        notes.append(pruned_note("pruned", marker))
    head: dict[str, Any] | None = None
    if chain.head is not None or rows:
        h = chain.head
        if h is None or not unseal(ring, h) or h.get("genesis") != chain.genesis \
                or not isinstance(h.get("seq"), int) or not isinstance(h.get("head_mac"), str):
            return bad("head_invalid", chain.shipped_seq,
                       "the ship head is missing, fails its MAC or names another chain")
        if h["seq"] != chain.shipped_seq or not hmac.compare_digest(h["head_mac"], chain.shipped_mac):
            return bad("head_invalid", chain.shipped_seq, f"the chain's row (seq {chain.shipped_seq}) disagrees with "
                                                          f"its signed head (seq {h['seq']})")
        head = {"seq": h["seq"], "mac": h["head_mac"]}
    if head is None:  # registered, nothing shipped yet
        return _verdict(chain, ok=True, records=0, notes=("nothing shipped yet",))
    check = ChainCheck(ring, start_seq=start_seq, start_mac=start_mac, head=head, head_name="the ship head",
                       visit=(lambda rec, where, n: visit(rec, str(where), n)) if visit else None)
    buf: deque[tuple[int, str]] = deque()
    after, exhausted, seen, first = 0, False, 0, None
    try:
        while True:
            if len(buf) <= LOOKAHEAD and not exhausted:
                got = await store.page(chain.chain_no, after, page)
                exhausted = len(got) < page
                if got:
                    after = got[-1][0]
                    buf.extend(got)
            if not buf:
                break
            seq, line = buf.popleft()
            seen += 1
            rec = check.feed(line, label, seq, lambda: [s for _, ln in list(buf)[:LOOKAHEAD]
                                                        if (s := seq_of(ln)) is not None])
            if rec["seq"] != seq:
                raise ChainProblem("misplaced", label, seq, f"the row at seq {seq} holds record seq {rec['seq']}")
            if first is None and check.count:
                first = rec["seq"]
        end = (label, (check.last_seq if check.last_pos else start_seq) + 1)
        check.finish(end, require_head=True)
    except ChainProblem as p:
        return bad(p.problem, p.line, p.message, check.count)
    if seen != rows:
        return bad("extra_rows", check.last_seq, f"the table holds {rows} rows of this chain, {seen} in seq order "
                                                 "(rows sharing a seq)", check.count)
    if check.skipped:
        notes.append(f"{check.skipped} rows at or below the prune marker are still stored")
    if check.unrecorded:
        notes.append(f"{check.unrecorded} decisions were not recorded (backlog over its bound)")
    last = check.last_rec or {}
    status = "closed" if last.get("kind") == "checkpoint" and last.get("reason") == "close" else "open"
    return _verdict(chain, ok=True, records=check.count, first_seq=first,
                    last_seq=check.last_seq if check.count else None, status=status, notes=tuple(notes))
