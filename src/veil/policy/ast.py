"""The policy AST: frozen dataclasses; every node has a location (ignored by equality, so that
`parse(fmt(x)) == parse(x)` compares meaning, not layout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from veil.location import Location

NOWHERE = Location("<none>", 0, 0)


def _loc() -> Any:
    return field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Header:
    name: str
    version: str | None
    loc: Location = _loc()


@dataclass(frozen=True)
class Import:
    target: str
    loc: Location = _loc()


@dataclass(frozen=True)
class SchemaRef:
    """`schema "openapi.yaml"` (top level: the API's OpenAPI document) or, inside a route, the JSON
    Schema of its response body (`"customer.json"`, `"api.yaml#/components/schemas/Customer"`).
    Relative to the file that names it."""

    target: str
    loc: Location = _loc()


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str  # days | weeks | months | years (singular accepted)
    loc: Location = _loc()

    @property
    def days(self) -> float:
        per = {"day": 1, "week": 7, "month": 30.4375, "year": 365.25}
        return self.amount * per.get(self.unit.rstrip("s"), 0)

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}"


@dataclass(frozen=True)
class Attr:
    """One purpose attribute: name plus its value(s)."""

    name: str  # description, basis, consent, retention, recipients, processing, gpc, ...
    # (`description.de`: the description in another language, written `description de "..."`)
    values: tuple[Any, ...]
    loc: Location = _loc()


@dataclass(frozen=True)
class Purpose:
    name: str
    attrs: tuple[Attr, ...]
    loc: Location = _loc()

    def get(self, name: str) -> Attr | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None


@dataclass(frozen=True)
class Ident:
    """A bare word where a value may be a string or a name (`jurisdictions gdpr`, `dpo none`)."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Notice:
    """A `notice { ... }` block: attributes of the privacy notice (values: str for a string, Ident
    for a bare word). A policy set may spread them over several blocks; each attribute is set once."""

    attrs: tuple[Attr, ...]
    loc: Location = _loc()


@dataclass(frozen=True)
class PathRef:
    text: str
    loc: Location = _loc()


@dataclass(frozen=True)
class Category:
    name: str
    sensitive: bool
    paths: tuple[PathRef, ...]
    loc: Location = _loc()


@dataclass(frozen=True)
class CallerKey:
    kind: str  # sha256 | env | file | plain
    value: str
    loc: Location = _loc()


@dataclass(frozen=True)
class Caller:
    name: str
    description: str | None
    keys: tuple[CallerKey, ...]
    may: tuple[tuple[str, Location], ...]
    vendor: int | None
    certs: tuple[str, ...]
    loc: Location = _loc()
    # (attribute name, location) in source order; layout only (used by `veil fmt`), not meaning
    layout: tuple[tuple[str, Location], ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Target:
    """A field path or a category reference (`@contact`)."""

    text: str
    is_category: bool
    loc: Location = _loc()

    def __str__(self) -> str:
        return f"@{self.text}" if self.is_category else self.text


class StmtKind(StrEnum):
    """The statements of a rule body (the keyword, `require consent` as require_consent)."""

    KEEP = "keep"
    DROP = "drop"
    HASH = "hash"
    MASK = "mask"
    NULL = "null"
    REPLACE = "replace"
    GENERALIZE = "generalize"
    SUPPRESS = "suppress"
    REQUIRE_CONSENT = "require_consent"
    REQUIRE_CALLER = "require_caller"
    RESPECT_GPC = "respect_gpc"
    BLOCK = "block"

    @property
    def transforms(self) -> bool:
        """A statement that replaces the values it names (hash, mask, null, replace, generalize)."""
        return self in _TRANSFORMS

    @property
    def acts_on_fields(self) -> bool:
        """A statement whose effect is on response fields (keep, drop, a transform, suppress), as
        opposed to one on the request (require …, respect gpc, block)."""
        return self not in _REQUEST_STATEMENTS


_TRANSFORMS = frozenset({StmtKind.HASH, StmtKind.MASK, StmtKind.NULL, StmtKind.REPLACE, StmtKind.GENERALIZE})
_REQUEST_STATEMENTS = frozenset({StmtKind.REQUIRE_CONSENT, StmtKind.REQUIRE_CALLER, StmtKind.RESPECT_GPC,
                                 StmtKind.BLOCK})


@dataclass(frozen=True)
class Stmt:
    """One statement of a rule body: its kind, the fields or categories it names, its arguments
    (mask: ((first|last, N), ...); generalize: (method, arg?); suppress: (k,); replace: (value,);
    require consent: keys; require caller: names; block: (message,))."""

    kind: StmtKind
    targets: tuple[Target, ...] = ()
    args: tuple[Any, ...] = ()
    loc: Location = _loc()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StmtKind):
            object.__setattr__(self, "kind", StmtKind(self.kind))  # an unknown kind is a ValueError


@dataclass(frozen=True)
class Rule:
    purposes: tuple[tuple[str, Location], ...]
    body: tuple[Stmt, ...]
    loc: Location = _loc()


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    subject: tuple[str, str] | None  # (source, name): ("path", "id")
    each: tuple[PathRef, PathRef] | None  # list path, per-item subject path
    upstream: str | None
    mode: str | None
    rules: tuple[Rule, ...]
    loc: Location = _loc()
    subject_loc: Location = _loc()
    mode_loc: Location = _loc()
    # (attribute name, location) in source order, rules as "rule"; layout only (used by `veil fmt`)
    layout: tuple[tuple[str, Location], ...] = field(default=(), compare=False, repr=False)
    schema: SchemaRef | None = None


@dataclass(frozen=True)
class Module:
    """One policy file."""

    file: str
    header: Header | None
    imports: tuple[Import, ...]
    purposes: tuple[Purpose, ...]
    categories: tuple[Category, ...]
    callers: tuple[Caller, ...]
    routes: tuple[Route, ...]
    notices: tuple[Notice, ...] = ()
    schemas: tuple[SchemaRef, ...] = ()
    comments: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    order: tuple[Any, ...] = field(default=(), compare=False, repr=False)  # items in source order
