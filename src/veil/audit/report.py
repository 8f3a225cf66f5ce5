"""The per-subject access report (GDPR Art. 15): who received which categories of a subject's data,
for which purposes, when.

Subjects appear in the log only as pseudonyms: `pseudonym(ring, subject_id)` is the one function that
computes them, used by the proxy when it writes and by the report when it reads. With a rotated
pseudonym key, `pseudonyms()` gives the subject's pseudonym under every key of the ring.

A disclosure is a decision record (no `kind`, or kind "decision") whose decision is allow / redact /
filter (or allowed / redacted / filtered) and whose `subject` or `subjects` list names the subject.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.audit.verify import VerifyResult, verify
from veil.keys import KeyRing, keyed_hash, keyed_hashes

SUBJECT_CONTEXT = "veil-subject"
DISCLOSING = frozenset({"allow", "allowed", "redact", "redacted", "filter", "filtered"})


def pseudonym(ring: KeyRing, subject_id: str) -> str:
    """The subject's pseudonym under the ring's current key: what the proxy writes in `subject`."""
    return keyed_hash(ring.current, subject_id, context=SUBJECT_CONTEXT)


def pseudonym_list(ring: KeyRing, subject_ids: Iterable[str]) -> list[str]:
    """`pseudonym` of each subject id, in order (a list response's subjects)."""
    return keyed_hashes(ring.current, subject_ids, context=SUBJECT_CONTEXT)


def pseudonyms(ring: KeyRing, subject_id: str) -> frozenset[str]:
    """The subject's pseudonym under every key in the ring (current and older)."""
    return frozenset(keyed_hash(k, subject_id, context=SUBJECT_CONTEXT) for k in ring.keys.values())


@dataclass(frozen=True)
class Disclosure:
    time: str
    caller: str
    purpose: str
    categories: tuple[str, ...]
    decision: str
    route: str
    id: str
    # (category, form) where the record says how each category left: "clear" or "transformed"
    forms: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Recipient:
    """All disclosures to one caller for one purpose."""

    caller: str
    purpose: str
    categories: tuple[str, ...]
    count: int
    first: str
    last: str
    forms: tuple[tuple[str, str], ...] = ()  # (category, form) over all its disclosures


@dataclass(frozen=True)
class SubjectReport:
    subjects: tuple[str, ...]  # the pseudonyms searched for
    verification: VerifyResult
    disclosures: list[Disclosure] = field(default_factory=list)

    @property
    def recipients(self) -> list[Recipient]:
        groups: dict[tuple[str, str], list[Disclosure]] = {}
        for d in self.disclosures:
            groups.setdefault((d.caller, d.purpose), []).append(d)
        out = []
        for (caller, purpose), items in sorted(groups.items()):
            cats = sorted({c for d in items for c in d.categories})
            times = sorted(d.time for d in items)
            forms = tuple(sorted({f for d in items for f in d.forms}))
            out.append(Recipient(caller, purpose, tuple(cats), len(items), times[0], times[-1], forms))
        return out

    def to_dict(self) -> dict[str, Any]:
        v = self.verification
        return {
            "subjects": list(self.subjects),
            "verified": v.ok,
            "verification": {
                "ok": v.ok, "records": v.records, "files": v.files, "problem": v.problem,
                "first_bad": [str(v.first_bad[0]), v.first_bad[1]] if v.first_bad else None,
                "message": v.message, "notes": list(v.notes),
            },
            "recipients": [asdict(r) for r in self.recipients],
            "disclosures": [asdict(d) for d in self.disclosures],
        }


def report(
    paths: Sequence[str | Path],
    ring: KeyRing,
    subject_pseudonym: str | Collection[str],
    *,
    require_head: bool = True,
) -> SubjectReport:
    """Disclosures of the subject's data found in the logs, in time order, checked as they are read.

    Records after the first verification problem are not read: `verification` says where it stopped.
    """
    wanted = wanted_set(subject_pseudonym)
    found: list[Disclosure] = []

    def visit(rec: dict[str, Any], file: Path | str, line: int) -> None:
        d = disclosure_of(rec, wanted)
        if d is not None:
            found.append(d)

    result = verify(paths, ring, require_head=require_head, visit=visit)
    found.sort(key=lambda d: d.time)
    return SubjectReport(tuple(sorted(wanted)), result, found)


def wanted_set(subject_pseudonym: str | Collection[str]) -> frozenset[str]:
    return frozenset([subject_pseudonym] if isinstance(subject_pseudonym, str) else subject_pseudonym)


def subjects_of(rec: Mapping[str, Any]) -> set[str]:
    """The pseudonyms a record names (`subject` and the `subjects` of a list response)."""
    names = rec.get("subjects")
    subjects = {s for s in names if isinstance(s, str)} if isinstance(names, list) else set()
    if isinstance(rec.get("subject"), str):
        subjects.add(rec["subject"])
    return subjects


def disclosure_of(rec: Mapping[str, Any], wanted: frozenset[str]) -> Disclosure | None:
    """The report row for one decision-log record, None when it is not a disclosure of a wanted
    subject's data. The one reading of records for the report: the file-based and the store-based
    report both call it."""
    if rec.get("kind", "decision") != "decision" or rec.get("decision") not in DISCLOSING:
        return None
    if subjects_of(rec).isdisjoint(wanted):
        return None
    cats = rec.get("categories")
    return Disclosure(
        time=_time(rec.get("time")),
        caller=str(rec.get("caller", "")),
        purpose=str(rec.get("purpose", "")),
        categories=tuple(sorted(str(c) for c in cats)) if isinstance(cats, list) else (),
        decision=str(rec["decision"]),
        route=str(rec.get("route", "")),
        id=str(rec.get("id", "")),
        forms=_forms(rec.get("disclosed")),
    )


def _forms(disclosed: Any) -> tuple[tuple[str, str], ...]:
    """(category, form) pairs from a record's `disclosed`: {category: form} or [{category, form}]."""
    pairs: list[tuple[str, str]] = []
    if isinstance(disclosed, Mapping):
        pairs = [(str(c), str(f)) for c, f in disclosed.items() if isinstance(f, str)]
    elif isinstance(disclosed, list):
        pairs = [(str(d["category"]), str(d["form"])) for d in disclosed
                 if isinstance(d, Mapping) and "category" in d and isinstance(d.get("form"), str)]
    return tuple(sorted(set(pairs)))


def _time(value: Any) -> str:
    """ISO 8601 for display and ordering; epoch seconds are converted."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value) if value is not None else ""
