"""The per-subject access report (GDPR Art. 15) from the store: the subject's records are found through
the GIN index on `subjects` (never a scan), turned into report rows by the same `disclosure_of` as the
file-based report, and each is checked before it is listed: its MAC, that the row's seq is the
record's, and that it links to the record before it in its chain (that record's mac, or the prune
marker's when retention removed it). Whole chains (gaps and truncation anywhere) are what
`veil audit verify --store` checks; the report says so in its verification notes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from veil.audit.report import Disclosure, SubjectReport, disclosure_of, wanted_set
from veil.audit.store import AuditStore
from veil.audit.verify import ChainProblem, VerifyResult, check_mac, parse_record
from veil.keys import KeyRing

SCOPE_NOTE = ("each listed record's MAC and its link to the record before it were checked; "
              "`veil audit verify --store` checks whole chains")


async def store_report(store: AuditStore, ring: KeyRing, subject_pseudonym: str | Collection[str]) -> SubjectReport:
    wanted = wanted_set(subject_pseudonym)
    rows = await store.by_subject(sorted(wanted))
    parsed: list[tuple[Any, dict[str, Any]]] = []
    problem: ChainProblem | None = None
    for row in rows:
        where = f"{row['replica']}/{row['chain']}"
        try:
            rec = parse_record(row["line"], where, row["seq"])
            check_mac(ring, rec, where, row["seq"])
            if rec["seq"] != row["seq"]:
                raise ChainProblem("misplaced", where, row["seq"], f"the row at seq {row['seq']} holds record seq "
                                                                   f"{rec['seq']}")
        except ChainProblem as p:
            problem = problem or p
            continue
        parsed.append((row, rec))
    # the link of each record to the one before it: one batched lookup by primary key
    wanted_prev = [(row["chain_no"], row["seq"] - 1, row["prev_at"]) for row, _ in parsed
                   if row["seq"] > 1 and row["prev_at"] is not None]
    prev_macs = await store.macs(wanted_prev)
    markers = await store.markers() if len(prev_macs) < len(parsed) else {}
    found: list[Disclosure] = []
    chains = set()
    for row, rec in parsed:
        where = f"{row['replica']}/{row['chain']}"
        if rec["seq"] > 1:
            key = (row["chain_no"], rec["seq"] - 1)
            if key in prev_macs:
                prev_mac = prev_macs[key]
            else:
                through, marker, _ = markers.get(row["chain_no"], (0, None, 0))
                prev_mac = marker.get("through_mac") if marker and through == rec["seq"] - 1 else None
            if prev_mac is None:
                problem = problem or ChainProblem("seq_gap", where, rec["seq"], f"record {rec['seq'] - 1} before "
                                                                                f"seq {rec['seq']} is missing")
                continue
            if prev_mac != rec["prev"]:
                problem = problem or ChainProblem("chain_break", where, rec["seq"], f"record seq {rec['seq']} does "
                                                                                    "not link to the one before it")
                continue
        chains.add(row["chain_no"])
        d = disclosure_of(rec, wanted)
        if d is not None:
            found.append(d)
    found.sort(key=lambda d: d.time)
    if problem is None:
        result = VerifyResult(True, len(parsed), len(chains), len(chains), notes=(SCOPE_NOTE,))
    else:
        result = VerifyResult(False, len(parsed), len(chains), len(chains), (problem.file, problem.line),
                              problem.problem, problem.message, (SCOPE_NOTE,))
    return SubjectReport(tuple(sorted(wanted)), result, found)
