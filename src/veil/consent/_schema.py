"""Shared row model of the consent stores: timestamps, event ids, stored-event receipts, import marks,
and the key-rotation plumbing (hash plans, latest-state merge, re-key results).

Timestamps are UTC. A naive datetime is taken as UTC (the importer and the CLI document that).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from veil.consent.store import Action, ConsentEvent, ConsentState, Status, SubjectHasher
from veil.errors import VeilError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOTIFY_CHANNEL = "veil_consent"
ALL_SUBJECTS = "*"  # on_change payload: anything may have changed (listener reconnected, bulk import)


def utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch (SQLite stores integers: compact, ordered, unambiguous)."""
    delta = utc(dt) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def now_utc() -> datetime:
    return datetime.now(UTC)


class ConsentEventInvalid(VeilError):
    code = "consent_event_invalid"


def event_id_of(event: ConsentEvent) -> str:
    """The event's id as a canonical UUID string; a fresh UUID when it has none."""
    if event.event_id is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(event.event_id))
    except ValueError as exc:
        raise ConsentEventInvalid("consent event id must be a UUID") from exc


def state_of(
    key: str, action: str, at: datetime, notice_version: int | None, expires_at: datetime | None,
    source: str | None,
) -> ConsentState:
    """Derive the current state from the latest event: withdrawal → WITHDRAWN, else GIVEN.

    Expiry is carried, not judged: callers use `ConsentState.is_given(now)`.
    """
    status = Status.WITHDRAWN if action == Action.WITHDRAWN.value else Status.GIVEN
    return ConsentState(key, status, at, notice_version, expires_at, source)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A stored event with the store's receipt: when it was written. `event.subject` is the hash."""

    event: ConsentEvent
    recorded_at: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class ImportMark:
    """How far an import of one file got: the last committed line, and whether it finished."""

    line: int
    done: bool


def file_key(path: Path) -> str:
    """Identifies one version of an import file: its absolute path, size and mtime, hashed."""
    st = path.stat()
    raw = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def distinct(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# -- key rotation ------------------------------------------------------------------------------------

Pair = tuple[str, str]  # (subject, consent key)


@dataclass(frozen=True, slots=True)
class HashPlan:
    """The store hashes of a batch of subjects under every key of the ring.

    `by_hash` maps each hash (current or older key) to the raw subjects it stands for; `moves` maps an
    older-key hash to the same subject's current-key hash; `current` lists the current-key hashes.
    """

    by_hash: dict[str, list[str]]
    moves: dict[str, str]
    current: list[str]

    @property
    def hashes(self) -> list[str]:
        return list(self.by_hash)


def plan_hashes(hasher: SubjectHasher, subjects: Sequence[str]) -> HashPlan:
    by_hash: dict[str, list[str]] = {}
    moves: dict[str, str] = {}
    current: list[str] = []
    rotating = hasher.rotating
    for s in distinct(subjects):
        hs = hasher.all(s) if rotating else [hasher(s)]
        by_hash.setdefault(hs[0], []).append(s)
        current.append(hs[0])
        for h in hs[1:]:
            by_hash.setdefault(h, []).append(s)
            moves[h] = hs[0]
    return HashPlan(by_hash, moves, distinct(current))


def pick_latest(
    plan: HashPlan, rows: Iterable[tuple[str, int, ConsentState]]
) -> tuple[dict[Pair, ConsentState], list[tuple[str, str]]]:
    """Current states from `(subject_hash, event_seq, state)` rows found under any key of the plan.

    A subject may have a row under the current key and one under an older key for the same consent
    key (a choice recorded during the overlap, before its old rows were re-keyed): the later `at` wins,
    ties to the later write (higher event seq), as in the stores' upserts. Also returns the (old hash,
    current hash) moves for the older-key rows found, for the caller to re-key.
    """
    out: dict[Pair, ConsentState] = {}
    if not plan.moves:
        for h, _seq, state in rows:
            for s in plan.by_hash[h]:
                out[(s, state.consent_key)] = state
        return out, []
    rank: dict[Pair, tuple[datetime, int]] = {}
    found: dict[str, str] = {}
    for h, seq, state in rows:
        new = plan.moves.get(h)
        if new is not None:
            found[h] = new
        r = (state.at or EPOCH, seq)
        for s in plan.by_hash[h]:
            pair = (s, state.consent_key)
            best = rank.get(pair)
            if best is None or r > best:
                rank[pair] = r
                out[pair] = state
    return out, list(found.items())


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """What one re-key call changed: rows moved from older-key hashes, and unlabelled rows labelled."""

    events: int = 0
    current: int = 0
    labelled: int = 0

    def __add__(self, other: Rekeyed) -> Rekeyed:
        return Rekeyed(
            self.events + other.events, self.current + other.current, self.labelled + other.labelled
        )


@dataclass(frozen=True, slots=True)
class KeyCounts:
    """Rows per key id (None: written before veil recorded key ids, or by a writer that does not)."""

    events: dict[str | None, int]
    current: dict[str | None, int]
