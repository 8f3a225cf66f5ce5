"""Data categories of locations in a document, and what a document discloses by category.

The one rule of category membership, used by metrics, the decision record and the access report:

    A location belongs to the category that names it or its nearest ancestor. A category path names
    a location at any depth (`category contact = email` names `email`, `a.email`, `items[3].email`);
    where several categories name the same location, the first defined wins.

    CategoryIndex(categories).of(location)               → category or None
    CategoryIndex(categories).disclosed(doc, transformed) → {category: {form, ...}}

`disclosed` reads a document that leaves veil: every non-null scalar counts as disclosed in clear in
the category of its location; a transformed location (by its template, see Report.transformed_at)
counts once in the form of its transform ("hash", "mask", "generalize") and its value is not read; a
transform that lets nothing of the value leave (null, replace) counts as nothing. Locations of no
category disclose nothing that can be named (they are not listed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from veil.redact.paths import DEEP, FieldPath, Key, matches, parse_path

Loc = tuple[str | int, ...]  # keys and array indices; a template has 0 for every index
CLEAR = "clear"
_SCALARS = frozenset({str, int, float, bool})
_MEMO_MAX = 4096


class CategoryIndex:
    def __init__(self, categories: Sequence[tuple[str, Sequence[FieldPath]]]) -> None:
        self.names = tuple(name for name, _ in categories)
        self._by_key: dict[str, list[tuple[int, str, FieldPath]]] = {}
        self._wild: list[tuple[int, str, FieldPath]] = []  # paths whose last segment is no plain key
        for order, (name, paths) in enumerate(categories):
            for p in paths:
                if not p:
                    continue
                deep = p if p[:1] == (DEEP,) else (DEEP, *p)
                last = p[-1]
                if isinstance(last, Key):
                    self._by_key.setdefault(last.name, []).append((order, name, deep))
                else:
                    self._wild.append((order, name, deep))
        self._memo: dict[Loc, str | None] = {}
        self._templates: dict[str, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self._by_key or self._wild)

    def naming(self, loc: Loc) -> str | None:
        """The category that names exactly `loc` (not an ancestor of it), or None."""
        if not loc:
            return None
        last = loc[-1]
        cands = self._by_key.get(last) if type(last) is str else None
        if not cands and not self._wild:
            return None
        hit = self._memo.get(loc, self)
        if hit is not self:
            return hit  # type: ignore[return-value]
        best: tuple[int, str] | None = None
        for group in (cands or (), self._wild):
            for order, name, path in group:
                if (best is None or order < best[0]) and matches(path, loc):
                    best = (order, name)
        found = best[1] if best else None
        if len(self._memo) < _MEMO_MAX:
            self._memo[loc] = found
        return found

    def of(self, loc: Loc) -> str | None:
        """The category `loc` belongs to: the one naming it or its nearest ancestor."""
        for end in range(len(loc), 0, -1):
            found = self.naming(loc[:end])
            if found is not None:
                return found
        return None

    def of_template(self, template: str) -> str | None:
        """`of` for a path template (`items[*].email`), as reports and metrics carry them."""
        if template in self._templates:
            return self._templates[template]
        try:
            loc: Loc = tuple(s.name if isinstance(s, Key) else 0 for s in parse_path(template)) if template else ()
        except Exception:  # a template veil did not write: no category
            loc = ()
        found = self.of(loc)
        if len(self._templates) < _MEMO_MAX:
            self._templates[template] = found
        return found

    # ---- what a document discloses ------------------------------------------------------------------

    def disclosed(self, doc: Any, transformed: Mapping[Loc, str | None] | None = None, at: Loc = (),
                  out: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
        """{category: forms} for the document (or the subtree at template `at`) as it leaves veil."""
        out = {} if out is None else out
        if self:
            merge(out, Walker(self, transformed).pairs(doc, at))
        return out


_NOT = object()  # a location no transform replaced
Pairs = tuple[frozenset[str], frozenset[tuple[str, str]]]  # (categories in clear, (category, form) transformed)


class Walker:
    """What documents disclose, for one set of transformed locations (one response's report). Each
    (template, key) is classified once per walker, so the items of a list, which share their shape,
    cost a dict lookup per field."""

    __slots__ = ("index", "kids", "tr")

    def __init__(self, index: CategoryIndex, transformed: Mapping[Loc, str | None] | None = None) -> None:
        self.index = index
        self.tr = transformed or {}
        self.kids: dict[Loc, dict[Any, tuple[Loc, str | None, Any]]] = {}

    def pairs(self, doc: Any, at: Loc = ()) -> Pairs:
        """(categories disclosed in clear, (category, form) pairs disclosed transformed)."""
        clear: set[str] = set()
        other: set[tuple[str, str]] = set()
        if self.index:
            self._walk(doc, at, self.index.of(at), clear, other)
        return frozenset(clear), frozenset(other)

    def _classify(self, tmpl: Loc, cat: str | None, k: Any) -> tuple[Loc, str | None, Any]:
        ct = (*tmpl, k)
        return ct, self.index.naming(ct) or cat, self.tr.get(ct, _NOT) if self.tr else _NOT

    def _walk(self, node: Any, tmpl: Loc, cat: str | None, clear: set[str], other: set[tuple[str, str]]) -> None:
        t = type(node)
        if t is dict:
            items: Any = node.items()
        elif t is list:
            if not node:
                return
            items = ((0, v) for v in node)
        else:
            if node is not None and cat is not None:
                clear.add(cat)
            return
        kids = self.kids.get(tmpl)
        if kids is None:
            kids = self.kids[tmpl] = {}
        scalars = _SCALARS
        for k, v in items:
            info = kids.get(k)
            if info is None:
                info = kids[k] = self._classify(tmpl, cat, k)
            ct, ccat, form = info
            if form is not _NOT:  # a transformed value: its form, once, unless it left as null
                if v is not None and ccat is not None and form is not None:
                    other.add((ccat, form))
            elif type(v) in scalars:
                if ccat is not None:
                    clear.add(ccat)
            elif v is not None:
                self._walk(v, ct, ccat, clear, other)


def merge(out: dict[str, set[str]], pairs: Pairs) -> dict[str, set[str]]:
    """Add what `pairs` discloses to {category: forms}."""
    clear, other = pairs
    for c in clear:
        _add(out, c, CLEAR)
    for c, form in other:
        _add(out, c, form)
    return out


def _add(out: dict[str, set[str]], cat: str, form: str) -> None:
    forms = out.get(cat)
    if forms is None:
        out[cat] = {form}
    else:
        forms.add(form)


def as_record(disclosed: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """The JSON form in decision records: categories and their forms, sorted."""
    return {c: sorted(disclosed[c]) for c in sorted(disclosed)}


__all__ = ["CLEAR", "CategoryIndex", "Pairs", "Walker", "as_record", "merge"]
