"""Field paths: addresses into parsed JSON (never into text).

    a.b                 key `b` of key `a`
    "first name".x      a quoted key (JSON string escapes), needed for keys that are not identifiers
    *.phone             `phone` under any one object key
    items[*].email      `email` of every element of the array `items`; `[*].id` for a top-level array
    **.ssn              `ssn` at any depth (zero or more levels through objects and arrays)

A path is a tuple of segments. Matching runs a tiny NFA over a concrete location (a sequence of keys
and array indices); `positions` exposes its state set so callers can ask "can this path still match
below here?".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from veil.errors import PathError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Key:
    name: str


@dataclass(frozen=True, slots=True)
class AnyKey:
    """`*`: any one object key."""


@dataclass(frozen=True, slots=True)
class Each:
    """`[*]`: every element of an array."""


@dataclass(frozen=True, slots=True)
class Deep:
    """`**`: zero or more levels through objects and arrays."""


Segment = Key | AnyKey | Each | Deep
FieldPath = tuple[Segment, ...]

ANY_KEY = AnyKey()
EACH = Each()
DEEP = Deep()


def parse_path(text: str) -> FieldPath:
    """Parse path text; a PathError carries the 0-based offset of the problem."""
    if not text:
        raise PathError("empty field path", 0)
    segs: list[Segment] = []
    pos, n = 0, len(text)
    expect_segment = True  # at the start, or right after a `.`
    while pos < n:
        ch = text[pos]
        if text.startswith("[*]", pos):
            segs.append(EACH)
            pos += 3
            expect_segment = False
            continue
        if ch == "[":
            raise PathError("only `[*]` (every element) may appear in brackets", pos)
        if not expect_segment:
            if ch != ".":
                raise PathError(f"expected `.` or `[*]` here, found {ch!r}", pos)
            pos += 1
            if pos >= n:
                raise PathError("field path ends with `.`", pos)
            if text[pos] == "[":
                raise PathError("`[*]` follows a segment directly, without `.`", pos)
            expect_segment = True
            continue
        if text.startswith("**", pos):
            segs.append(DEEP)
            pos += 2
        elif ch == "*":
            segs.append(ANY_KEY)
            pos += 1
        elif ch == '"':
            try:
                name, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            except json.JSONDecodeError as exc:
                raise PathError(f"bad quoted key: {exc.msg}", exc.pos) from exc
            segs.append(Key(name))
        else:
            m = _IDENT.match(text, pos)
            if m is None:
                what = "empty segment" if ch == "." else f"unexpected {ch!r}"
                raise PathError(f"{what}; keys that are not identifiers must be quoted", pos)
            segs.append(Key(m.group()))
            pos = m.end()
        if pos < n and text[pos] not in ".[":
            raise PathError(f"expected `.` or `[*]` here, found {text[pos]!r}", pos)
        expect_segment = False
    return tuple(segs)


def _format_key(name: str) -> str:
    return name if _IDENT.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def format_path(path: FieldPath) -> str:
    """Canonical text: `parse_path(format_path(p)) == p` for every non-empty path."""
    out: list[str] = []
    for seg in path:
        if isinstance(seg, Each):
            out.append("[*]")
            continue
        if out:
            out.append(".")
        if isinstance(seg, Key):
            out.append(_format_key(seg.name))
        elif isinstance(seg, AnyKey):
            out.append("*")
        else:
            out.append("**")
    return "".join(out)


def template(concrete: Sequence[str | int]) -> str:
    """A concrete location as a path template: indices become `[*]`, odd keys are quoted."""
    return format_path(tuple(EACH if isinstance(step, int) else Key(step) for step in concrete))


def _close(path: FieldPath, states: Iterable[int]) -> frozenset[int]:
    """Epsilon closure: a `**` may match zero levels."""
    out: set[int] = set()
    stack = list(states)
    while stack:
        i = stack.pop()
        if i in out:
            continue
        out.add(i)
        if i < len(path) and isinstance(path[i], Deep):
            stack.append(i + 1)
    return frozenset(out)


def step(path: FieldPath, states: frozenset[int], item: str | int) -> frozenset[int]:
    """Advance the NFA state set over one key (str) or array index (int)."""
    nxt: list[int] = []
    is_index = isinstance(item, int)
    for i in states:
        if i >= len(path):
            continue
        seg = path[i]
        if isinstance(seg, Deep):
            nxt.append(i)
        elif is_index:
            if isinstance(seg, Each):
                nxt.append(i + 1)
        elif isinstance(seg, AnyKey) or (isinstance(seg, Key) and seg.name == item):
            nxt.append(i + 1)
    return _close(path, nxt)


def positions(path: FieldPath, concrete: Sequence[str | int]) -> frozenset[int]:
    """The NFA states after reading `concrete`: `len(path) in result` means the path matches it."""
    states = _close(path, (0,))
    for item in concrete:
        if not states:
            break
        states = step(path, states, item)
    return states


def matches(path: FieldPath, concrete: Sequence[str | int]) -> bool:
    return len(path) in positions(path, concrete)


def ends_with(path: FieldPath, suffix: FieldPath) -> bool:
    """Whether the last segments of `path` are exactly `suffix` (structural, no wildcard reasoning)."""
    return len(suffix) <= len(path) and path[len(path) - len(suffix) :] == suffix
