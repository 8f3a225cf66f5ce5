"""The consent store's interface and its value types.

A store keeps an append-only history of consent events per (subject, consent key) and derives the
current state from it. Stores never hold subject ids in clear: they key rows by `SubjectHasher`
output (HMAC under the store key). Lookups are batched: one call answers many subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol, runtime_checkable

from veil.keys import KeyRing, keyed_hash


class Action(str, Enum):
    GIVEN = "given"
    WITHDRAWN = "withdrawn"


class Status(str, Enum):
    GIVEN = "given"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One recorded choice (GDPR Art. 7(1) proof; ISO/IEC TS 27560 fields).

    `subject` is the raw id at the API edge; stores persist only its hash.
    """

    subject: str
    consent_key: str
    action: Action
    at: datetime
    source: str = "api"
    method: str = "unspecified"
    notice_version: int | None = None
    expires_at: datetime | None = None
    jurisdiction: str | None = None
    purposes: tuple[str, ...] = ()
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentState:
    """The current state of one (subject, consent key), derived from its history."""

    consent_key: str
    status: Status
    at: datetime | None = None
    notice_version: int | None = None
    expires_at: datetime | None = None
    source: str | None = None

    def is_given(self, now: datetime) -> bool:
        if self.status is not Status.GIVEN:
            return False
        return self.expires_at is None or self.expires_at > now


MISSING_STATE = ConsentState(consent_key="", status=Status.MISSING)


@dataclass(frozen=True)
class SubjectHasher:
    """Turns subject ids into store keys. Separate key from the pseudonym keys (issue: at rest).

    `hasher(s)` is the hash under the current key: what stores write. During a rotation the ring also
    holds older keys; `all(s)` gives the hashes under every key (current first), which stores look up
    and re-key to the current hash (docs/keys.md, "Consent store key").
    """

    ring: KeyRing
    context: str = "veil-store-subject"

    @property
    def key_id(self) -> str:
        """The id of the current key (stores record it with every row they write)."""
        return self.ring.current_id

    @property
    def rotating(self) -> bool:
        """True when the ring holds keys besides the current one."""
        return len(self.ring.keys) > 1

    def __call__(self, subject: str) -> str:
        return keyed_hash(self.ring.current, subject, context=self.context)

    def all(self, subject: str) -> list[str]:
        """The subject's hash under the current key, then under each older key (distinct, in ring order)."""
        first = self(subject)
        out = [first]
        for kid, key in self.ring.keys.items():
            if kid != self.ring.current_id:
                h = keyed_hash(key, subject, context=self.context)
                if h not in out:
                    out.append(h)
        return out


@runtime_checkable
class ConsentStore(Protocol):
    """What the proxy and the admin API need of a consent store."""

    async def current(
        self, subjects: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], ConsentState]:
        """Current state for every (subject, key) pair; absent pairs are MISSING. One round trip.

        Raises ConsentUnavailable when the store cannot answer.
        """
        ...

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        """Append events atomically (all or none)."""
        ...

    async def history(self, subject: str) -> list[ConsentEvent]:
        """All events of a subject, oldest first (subject field holds the hash, not the raw id)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass
class StoreHealth:
    ok: bool = True
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)
