"""Field paths against shapes: can a policy path address anything a schema lets a response hold?

    producible(roots, path)        → bool           a search over (shape, path-NFA states) pairs
    locations(roots, …)            → [Location]     every location of the schema, as a path template
    suggest(roots, path)           → str | None     "did you mean …" from the schema's locations

The search reuses the path automaton of veil.redact.paths (the one the engine compiles from), so
`*`, `**`, `[*]` and quoted keys mean exactly what they mean when enforcing. A key a schema does not
name but lets through (`additionalProperties`) matches any Key segment. Cycles (recursive schemas) end
because each (shape, state set) pair is visited once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from veil.redact.paths import AnyKey, Deep, FieldPath, Key, _close, format_path, positions, step
from veil.schema.shape import Shape, element, flatten, json_kind, key_children, kinds

OTHER_KEY = "*"  # how a key the schema does not name is written in a location template


def _step_any_key(path: FieldPath, states: frozenset[int], named: Iterable[str] = ()) -> frozenset[int]:
    """States after a key the schema does not name (any Key segment may match it, except the names
    the object declares: those hold what their own schema says)."""
    nxt: list[int] = []
    for i in states:
        if i >= len(path):
            continue
        seg = path[i]
        if isinstance(seg, Deep):
            nxt.append(i)
        elif isinstance(seg, AnyKey) or (isinstance(seg, Key) and seg.name not in named):
            nxt.append(i + 1)
    return _close(path, nxt)


def producible(roots: Sequence[Shape], path: FieldPath, *, named_only: bool = False) -> bool:
    """Can a response of these shapes hold something at `path`? With `named_only`, an object that names
    properties lets no other key through even where it allows others (`additionalProperties: true`
    beside `properties`): the question "does the schema name this?" rather than "does it allow it?"."""
    start = positions(path, ())
    stack: list[tuple[Shape, frozenset[int]]] = [(r, start) for r in roots]
    seen: set[tuple[int, frozenset[int]]] = set()
    end = len(path)
    while stack:
        shape, st = stack.pop()
        if end in st:
            return True
        mark = (id(shape), st)
        if mark in seen:
            continue
        seen.add(mark)
        for base in flatten(shape):
            for name, sub in base.props.items():
                nst = step(path, st, name)
                if nst:
                    stack.append((sub, nst))
            if base.extra is not None and not (named_only and base.props):
                nst = _step_any_key(path, st, base.props)
                if nst:
                    stack.append((base.extra, nst))
        for sub in element(shape):
            nst = step(path, st, 0)
            if nst:
                stack.append((sub, nst))
    return False


@dataclass(frozen=True, slots=True)
class Location:
    """One place in a response: keys from the root (`*` for an unnamed key, 0 for every element)."""

    steps: tuple[str | int, ...]
    shape: Shape
    recursive: bool = False  # the schema recurses here; nothing below it is listed

    @property
    def template(self) -> str:
        return template_of(self.steps)

    @property
    def names(self) -> list[str]:
        return [s for s in self.steps if isinstance(s, str) and s != OTHER_KEY]


def template_of(steps: Sequence[str | int]) -> str:
    """Like veil.redact.paths.template, with an unnamed key written `*`."""
    from veil.redact.paths import ANY_KEY, EACH

    segs = tuple(EACH if isinstance(s, int) else ANY_KEY if s == OTHER_KEY else Key(s) for s in steps)
    return format_path(segs) if segs else "$"


def locations(roots: Sequence[Shape], *, max_depth: int = 12, limit: int = 20_000) -> tuple[list[Location], bool]:
    """Every location of the schema, breadth first (shallow first); (locations, truncated). A shape
    that recurses into itself is listed once on each branch and not expanded again."""
    out: list[Location] = []
    queue: list[tuple[tuple[str | int, ...], Shape, frozenset[int]]] = [((), r, frozenset()) for r in roots]
    seen: set[tuple[tuple[str | int, ...], int]] = set()
    truncated = False
    i = 0
    while i < len(queue):
        steps, shape, ancestors = queue[i]
        i += 1
        mark = (steps, id(shape))
        if mark in seen:
            continue
        seen.add(mark)
        recursive = id(shape) in ancestors
        if len(out) >= limit:
            truncated = True
            break
        out.append(Location(steps, shape, recursive))
        if recursive:
            continue
        if len(steps) >= max_depth:
            truncated = truncated or _has_children(shape)
            continue
        below = ancestors | {id(shape)}
        for name, sub in key_children(shape):
            queue.append(((*steps, OTHER_KEY if name is None else name), sub, below))
        for sub in element(shape):
            queue.append(((*steps, 0), sub, below))
    return out, truncated


def _has_children(shape: Shape) -> bool:
    return any(True for _ in key_children(shape)) or bool(element(shape))


def merged(found: Iterable[Location]) -> list[tuple[tuple[str | int, ...], list[Shape]]]:
    """Locations with the same steps (reached through different alternatives) as one, in order."""
    by: dict[tuple[str | int, ...], list[Shape]] = {}
    for loc in found:
        by.setdefault(loc.steps, []).append(loc.shape)
    return list(by.items())


def kinds_at(shapes: Sequence[Shape]) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for s in shapes:
        out |= kinds(s)
    return out


def suggest(roots: Sequence[Shape], path: FieldPath, *, limit: int = 5000) -> str | None:
    """The closest path the schema can produce, as text (for "did you mean")."""
    found, _ = locations(roots, limit=limit)
    wild = any(isinstance(s, AnyKey | Deep) for s in path)
    if wild:  # `**.ssn` / `*.phone`: compare the last key with every key name
        last = next((s.name for s in reversed(path) if isinstance(s, Key)), None)
        if last is None:
            return None
        names = sorted({n for loc in found for n in loc.names})
        close = difflib.get_close_matches(last, names, n=1, cutoff=0.6)
        if not close:
            return None
        fixed = list(path)
        idx = max(i for i, s in enumerate(path) if isinstance(s, Key))
        fixed[idx] = Key(close[0])
        return format_path(tuple(fixed))
    text = format_path(path)
    templates = sorted({loc.template for loc in found if loc.steps and OTHER_KEY not in loc.steps})
    close = difflib.get_close_matches(text, templates, n=1, cutoff=0.6)
    if close:
        return close[0]
    # the right name in another place (`sid` for `accounts[*].sid`), or a near one
    last = path[-1].name if isinstance(path[-1], Key) else None
    if last is None:
        return None
    by_name: dict[str, list[str]] = {}
    for loc in found:
        if loc.steps and isinstance(loc.steps[-1], str) and loc.steps[-1] != OTHER_KEY:
            by_name.setdefault(loc.steps[-1], []).append(loc.template)
    name = last if last in by_name else next(iter(difflib.get_close_matches(last, list(by_name), n=1, cutoff=0.75)),
                                               None)
    return min(by_name[name], key=lambda t: (len(t), t)) if name else None


def all_names(shapes: Iterable[Shape]) -> set[str]:
    out: set[str] = set()
    for sh in shapes:
        for s in flatten(sh):
            out |= set(s.props)
    return out


__all__ = ["OTHER_KEY", "Location", "kinds_at", "locations", "merged", "producible", "suggest", "template_of"]


def misfits(roots: Sequence[Shape], doc: object, *, limit: int = 5) -> list[str]:
    """Where a JSON document does not fit the shapes: `customer.adress: not in the schema`,
    `items[*].id: a string where the schema has integer`. Names paths and JSON types, never values."""
    from veil.schema.shape import child as child_of

    out: list[str] = []
    stack: list[tuple[object, list[Shape], tuple[str | int, ...]]] = [(doc, list(roots), ())]
    seen: set[str] = set()
    while stack and len(out) < limit:
        node, shapes, where = stack.pop()
        allowed = kinds_at(shapes)
        kind = json_kind(node)
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            msg = f"{template_of(where)}: {'an' if kind[0] in 'aeiou' else 'a'} {kind} where the schema has " \
                  f"{'/'.join(sorted(allowed)) or 'nothing'}"
            if msg not in seen:
                seen.add(msg)
                out.append(msg)
            continue
        if isinstance(node, dict):
            for k, v in node.items():
                subs = [c for s in shapes for c in child_of(s, k)]
                if not subs:
                    msg = f"{template_of((*where, k))}: not in the schema"
                    if msg not in seen:
                        seen.add(msg)
                        out.append(msg)
                    continue
                stack.append((v, subs, (*where, k)))
        elif isinstance(node, list):
            subs = [e for s in shapes for e in element(s)]
            for v in node:
                stack.append((v, subs, (*where, 0)))
    return out


