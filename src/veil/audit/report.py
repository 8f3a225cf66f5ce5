"""The per-subject access report (GDPR Art. 15): who received which categories of a subject's data,
for which purposes, when.

Subjects appear in the log only as pseudonyms: `pseudonym(ring, subject_id)` is the one function that
computes them, used by the proxy when it writes and by the report when it reads. With a rotated
pseudonym key, `pseudonyms()` gives the subject's pseudonym under every key of the ring.

A disclosure is a decision record (no `kind`, or kind "decision") that released a response to its
caller (`released`) and whose `subject` or `subjects` list names the subject; its categories are those
the record says left veil (`disclosed`, by category and form; `disclosed_by_subject` on list responses
whose items differ). Records written before veil recorded disclosures count when their decision let
data out (allow / redact / filter), with their categories unknown: their `categories` field named what
a rule acted on, not what left.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.audit.verify import VerifyResult, verify
from veil.keys import KeyRing, keyed_hash, keyed_hashes
from veil.redact import native

SUBJECT_CONTEXT = "veil-subject"
DISCLOSING = frozenset({"allow", "allowed", "redact", "redacted", "filter", "filtered"})


def pseudonym(ring: KeyRing, subject_id: str) -> str:
    """The subject's pseudonym under the ring's current key: what the proxy writes in `subject`."""
    return keyed_hash(ring.current, subject_id, context=SUBJECT_CONTEXT)


def pseudonym_list(ring: KeyRing, subject_ids: Iterable[str]) -> list[str]:
    """`pseudonym` of each subject id, in order (a list response's subjects)."""
    ids = subject_ids if isinstance(subject_ids, list) else list(subject_ids)
    fast = native.keyed_hashes(ring.current, ids, SUBJECT_CONTEXT)  # the same MACs in C, where built
    return fast if fast is not None else keyed_hashes(ring.current, ids, context=SUBJECT_CONTEXT)


def pseudonyms(ring: KeyRing, subject_id: str) -> frozenset[str]:
    """The subject's pseudonym under every key in the ring (current and older)."""
    return frozenset(keyed_hash(k, subject_id, context=SUBJECT_CONTEXT) for k in ring.keys.values())


@dataclass(frozen=True)
class Disclosure:
    """One response that carried the subject's data to a caller.

    `categories` maps each category of the subject's data that left to the forms it left in ("clear",
    "hash", "mask", "generalize"), as the decision record wrote it from the response itself.
    `known` is False when the record cannot tell (a report-only response passed on a body that was not
    JSON, or a record written before veil recorded disclosures): the data left, its categories are
    not known."""

    time: str
    caller: str
    purpose: str
    categories: dict[str, tuple[str, ...]]
    decision: str
    route: str
    id: str
    known: bool = True
    report_only: bool = False


@dataclass(frozen=True)
class Recipient:
    """All disclosures to one caller for one purpose."""

    caller: str
    purpose: str
    categories: dict[str, tuple[str, ...]]  # category → forms, over all its disclosures
    count: int
    first: str
    last: str
    unknown: int = 0  # disclosures whose categories the log cannot tell


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
            cats: dict[str, set[str]] = {}
            for d in items:
                for c, forms in d.categories.items():
                    cats.setdefault(c, set()).update(forms)
            times = sorted(d.time for d in items)
            out.append(Recipient(caller, purpose, {c: tuple(sorted(f)) for c, f in sorted(cats.items())},
                                 len(items), times[0], times[-1], sum(not d.known for d in items)))
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


def wanted_set(subject_pseudonym: str | Collection[str]) -> frozenset[str]:
    return frozenset([subject_pseudonym] if isinstance(subject_pseudonym, str) else subject_pseudonym)


def subjects_of(rec: Mapping[str, Any]) -> set[str]:
    """Every pseudonym a record names (`subject`, and the `subjects` of a list response): what the
    store indexes a record under, so that `disclosure_of` sees every record that may concern a subject."""
    names = rec.get("subjects")
    subjects = {s for s in names if isinstance(s, str)} if isinstance(names, list) else set()
    if isinstance(rec.get("subject"), str):
        subjects.add(rec["subject"])
    return subjects


def disclosure_of(rec: dict[str, Any], wanted: Collection[str]) -> Disclosure | None:
    """The disclosure of a wanted subject's data a decision record holds, or None. The one reading of
    decision records for the access report (log files and stores alike).

    A record released data when `released` says so (records since disclosures are recorded), or, for
    older records, when its decision let data out (its categories are then unknown)."""
    if rec.get("kind", "decision") != "decision":
        return None
    names = rec.get("subjects")
    subjects = names if isinstance(names, list) and all(isinstance(s, str) for s in names) else []
    single = rec.get("subject")
    hits = [i for i, s in enumerate(subjects) if s in wanted]
    if not hits and not (isinstance(single, str) and single in wanted):
        return None
    if "released" in rec:
        if rec.get("released") is not True:
            return None
        disclosed = rec.get("disclosed")
        per = rec.get("disclosed_by_subject")
        known = isinstance(disclosed, dict)
        cats: dict[str, set[str]] = {}
        if known and hits and isinstance(per, dict) and not (isinstance(single, str) and single in wanted):
            sets, of = per.get("sets"), per.get("of")
            if isinstance(sets, list) and isinstance(of, list) and len(of) == len(subjects):
                for i in hits:
                    one = sets[of[i]] if isinstance(of[i], int) and 0 <= of[i] < len(sets) else None
                    _merge(cats, one)
            else:
                known = False
        elif known:
            _merge(cats, disclosed)
    elif rec.get("decision") in DISCLOSING:
        known, cats = False, {}
    else:
        return None
    return Disclosure(
        time=_time(rec.get("time")),
        caller=str(rec.get("caller") or "(unknown caller)"),
        purpose=str(rec.get("purpose") or "(no purpose)"),
        categories={c: tuple(sorted(f)) for c, f in sorted(cats.items())},
        decision=str(rec.get("decision", "")),
        route=str(rec.get("route") or ""),
        id=str(rec.get("id", "")),
        known=known,
        report_only=rec.get("mode") == "report-only",
    )


def _merge(into: dict[str, set[str]], found: Any) -> None:
    if isinstance(found, dict):
        for c, forms in found.items():
            if isinstance(c, str) and isinstance(forms, list):
                into.setdefault(c, set()).update(str(f) for f in forms)


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


def _time(value: Any) -> str:
    """ISO 8601 for display and ordering; epoch seconds are converted."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value) if value is not None else ""
