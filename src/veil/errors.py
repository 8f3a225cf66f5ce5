"""veil's errors: every one has a stable code, a message and, where it has one, a location.

    VeilError                      base; `code` is a stable slug
    ├── Diagnostics                a sorted, capped collection of Diagnostic (policy checks)
    ├── ConfigError                names the key path (`upstreams.profiles.url`)
    ├── PathError                  a bad field path in a policy (`items[*.email`)
    ├── ConsentUnavailable         the consent store cannot answer
    ├── AuditWriteError            the decision log cannot be written
    └── Refusal                    veil refuses a request or a response: carries a Reason
        ├── Unenforceable          an upstream body veil cannot enforce (encoding, type, JSON, depth)
        ├── UpstreamFailure        the upstream could not be reached or answered badly
        └── PathInvalid            a request path that is not in normal form

Messages never contain personal data: field paths, route templates and pseudonyms only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from veil.location import Location
from veil.reasons import Reason

MAX_DIAGNOSTICS = 100


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of a policy stage (parse, check, compile)."""

    code: str
    message: str
    location: Location | None = None
    hint: str | None = None
    severity: Severity = Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.file, loc.line, loc.col, self.code) if loc else ("", 0, 0, self.code)

    def render(self, sources: dict[str, str] | None = None) -> str:
        where = f"{self.location}: " if self.location else ""
        out = f"{where}{self.severity.value}[{self.code}]: {self.message}"
        if self.location and sources is not None:
            snip = self.location.snippet(sources.get(self.location.file))
            if snip:
                out += "\n" + snip
        if self.hint:
            out += f"\n      = hint: {self.hint}"
        return out

    def to_dict(self) -> dict[str, object]:
        """For `veil check --format json`: file, line and col are null when there is no location."""
        loc = self.location
        return {
            "file": loc.file if loc else None, "line": loc.line if loc else None, "col": loc.col if loc else None,
            "end_line": loc.end_line if loc else None, "end_col": loc.end_col if loc else None,
            "severity": self.severity.value, "code": self.code, "message": self.message, "hint": self.hint,
        }


class VeilError(Exception):
    """Base of veil's errors."""

    code = "veil_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


@dataclass
class Diagnostics(VeilError):
    """Errors collected by a stage; raised only once the stage has finished."""

    items: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        VeilError.__init__(self, self.summary(), code="policy_invalid")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def summary(self) -> str:
        n = len(self.errors)
        first = self.errors[0].render() if self.errors else ""
        return f"{n} error(s) in policy" + (f"; first: {first}" if first else "")

    def render(self, limit: int = MAX_DIAGNOSTICS) -> str:
        ordered = sorted(self.items, key=Diagnostic.sort_key)
        shown = [d.render(self.sources) for d in ordered[:limit]]
        if len(ordered) > limit:
            shown.append(f"... and {len(ordered) - limit} more")
        return "\n\n".join(shown)

    def one_line(self, limit: int = 5) -> str:
        """The errors on one line (for a log record): `N error(s): file:1:2: error[code]: message; ...`."""
        errors = sorted(self.errors, key=Diagnostic.sort_key)
        parts = [f"{d.location}: error[{d.code}]: {d.message}" if d.location else f"error[{d.code}]: {d.message}"
                 for d in errors[:limit]]
        more = f"; ... and {len(errors) - limit} more" if len(errors) > limit else ""
        return f"{len(errors)} error(s): " + "; ".join(p.replace("\n", " ") for p in parts) + more

    def __str__(self) -> str:
        return self.render()


def sorted_capped(items: Iterable[Diagnostic], limit: int = MAX_DIAGNOSTICS) -> list[Diagnostic]:
    return sorted(items, key=Diagnostic.sort_key)[:limit]


class ConfigError(VeilError):
    """A config file problem; `key` is the dotted key path that is wrong."""

    code = "config_invalid"

    def __init__(self, key: str, message: str, *, file: str | None = None) -> None:
        self.key = key
        self.file = file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{key}: {message}")


class PathError(VeilError):
    """A field path that does not parse; `offset` is the 0-based column in the path text."""

    code = "path_invalid"

    def __init__(self, message: str, offset: int = 0) -> None:
        self.offset = offset
        super().__init__(message)


class ConsentUnavailable(VeilError):
    code = "consent_unavailable"


class AuditWriteError(VeilError):
    code = "audit_unavailable"


class Refusal(VeilError):
    """veil refuses a request or a response for `reason`; `detail` is safe to show (no values)."""

    code = "refused"

    def __init__(self, reason: Reason, detail: str | None = None) -> None:
        super().__init__(detail or reason.title, code=reason.value)
        self.reason = reason
        self.detail = detail


class Unenforceable(Refusal):
    """An upstream body veil cannot enforce: unknown encoding or type, not JSON, too large or deep."""


class UpstreamFailure(Refusal):
    """The upstream could not be reached or answered in a way veil cannot relay; `kind` is the
    metric label (connect | timeout | reset | protocol | too_large)."""

    def __init__(self, reason: Reason, kind: str, detail: str | None = None) -> None:
        super().__init__(reason, detail)
        self.kind = kind


class PathInvalid(Refusal):
    """A request path that is not in normal form (400 path_invalid)."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.PATH_INVALID, detail)
