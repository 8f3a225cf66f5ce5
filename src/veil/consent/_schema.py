"""Shared row model of the consent stores: timestamps, event ids, stored-event receipts, import marks.

Timestamps are UTC. A naive datetime is taken as UTC (the importer and the CLI document that).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from veil.consent.store import Action, ConsentEvent, ConsentState, Status
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


def secure_dir(path: Path) -> None:
    """Create a directory (and parents) owner-only; existing directories are left as they are."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        os.mkdir(d, 0o700)
        os.chmod(d, 0o700)
