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

import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from veil.redact.paths import DEEP, FieldPath, Key, matches, parse_path

if TYPE_CHECKING:
    from veil.redact.engine import Outline

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
        self.bits = Bits()  # what every walk of this index finds, as bits (see Bits)
        # walks specialized to a plan's output (see Walker), per plan and template; they die with the plan
        self._walks: weakref.WeakKeyDictionary[Any, dict[Loc, Walk | None]] = weakref.WeakKeyDictionary()
        # walkers kept with a plan, per lasting set of transformed locations (see `walker`)
        self._walkers: weakref.WeakKeyDictionary[Any, dict[int | None, Walker]] = weakref.WeakKeyDictionary()

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
                  out: dict[str, set[str]] | None = None, plan: Outlined | None = None, *,
                  lasting: bool = False) -> dict[str, set[str]]:
        """{category: forms} for the document (or the subtree at template `at`) as it leaves veil.
        `plan`: the field plan `doc` is the output of (see Walker), or None. `lasting`: see `walker`."""
        out = {} if out is None else out
        if self:
            merge(out, self.walker(transformed, plan, lasting=lasting).pairs(doc, at))
        return out

    def walker(self, transformed: Mapping[Loc, str | None] | None = None, plan: Outlined | None = None, *,
               lasting: bool = False) -> Walker:
        """A Walker for `plan`'s output with these transformed locations. With `lasting` (`transformed`
        lives as long as the plan and is never changed: a shared report's, Report.shared) or with no
        transformed location, the walker is kept with the plan and reused, so what it classified
        (each template's keys, its specialized walks) is classified once per plan, not per response."""
        if plan is None or (transformed and not lasting):
            return Walker(self, transformed, plan)
        key = id(transformed) if transformed else None
        try:
            per = self._walkers.get(plan)
            if per is None:
                per = self._walkers[plan] = {}
        except TypeError:  # not weakly referenceable: nothing kept
            return Walker(self, transformed, plan)
        w = per.get(key)
        if w is None or (transformed and w.tr is not transformed):  # (an id reused by another mapping)
            w = Walker(self, transformed, plan, room=_KIDS_MAX)
            if len(per) < _MAX_WALKERS or key in per:
                per[key] = w
        return w

    def walk_for(self, plan: Outlined, at: Loc) -> Walk | None:
        """The walk of a subtree at template `at` of `plan`'s output, specialized to what the plan lets
        through there (None where it lets anything through: the plain walk)."""
        try:
            per = self._walks.get(plan)
            if per is None:
                per = self._walks[plan] = {}
        except TypeError:  # not weakly referenceable: nothing kept
            return _WalkGen(self, plan).function(at)
        if at not in per:
            if len(per) >= _MAX_WALKS:
                return None
            per[at] = _WalkGen(self, plan).function(at)
        return per[at]


_NOT = object()  # a location no transform replaced
Pairs = tuple[frozenset[str], frozenset[tuple[str, str]]]  # (categories in clear, (category, form) transformed)


class Outlined(Protocol):
    """A field plan, as far as the walk needs it (veil.redact.engine.FieldPlan)."""

    def outline(self, tmpl: Loc) -> Outline | None: ...


class Walker:
    """What documents disclose, for one set of transformed locations (one response's report). Each
    (template, key) is classified once per walker, so the items of a list, which share their shape,
    cost a dict lookup per field.

    Given the `plan` whose output the documents are, a subtree is read by code generated from what
    the plan lets through at its template (`CategoryIndex.walk_for`): the keys the plan can have left,
    their categories and transforms' forms decided once, not per value. It reads the same as the plain
    walk (a transformed location holds the transform's output, or null where the transform refused
    the value, so its form is the plan's), and hands anything the plan does not bound to it."""

    __slots__ = ("_at", "index", "kids", "plan", "room", "tr")

    def __init__(self, index: CategoryIndex, transformed: Mapping[Loc, str | None] | None = None,
                 plan: Outlined | None = None, room: int = sys.maxsize) -> None:
        self.index = index
        self.tr = transformed or {}
        self.kids: dict[Loc, dict[Any, tuple[Loc, str | None, Any, int]]] = {}
        self.plan = plan
        self.room = room  # (template, key) classifications it may still keep (a kept walker is bounded)
        self._at: dict[Loc, tuple[str | None, Walk | None]] = {}

    def pairs(self, doc: Any, at: Loc = ()) -> Pairs:
        """(categories disclosed in clear, (category, form) pairs disclosed transformed)."""
        if not self.index:
            return _NONE
        cat, walk = self._resolve(at)
        return self.index.bits.decode(walk[0](doc, self) if walk is not None else self._walk(doc, at, cat))

    def pairs_each(self, docs: Sequence[Any], at: Loc) -> list[Pairs]:
        """`pairs` of each of `docs` (the items of a list, all at template `at`)."""
        if not self.index:
            return [_NONE] * len(docs)
        cat, walk = self._resolve(at)
        decode = self.index.bits.decode
        if walk is None:
            return [decode(self._walk(d, at, cat)) for d in docs]
        fn = walk[0]
        return [decode(fn(d, self)) for d in docs]

    def _resolve(self, at: Loc) -> tuple[str | None, Walk | None]:
        hit = self._at.get(at)
        if hit is None:
            hit = self._at[at] = (self.index.of(at),
                                  self.index.walk_for(self.plan, at) if self.plan is not None else None)
        return hit

    def _classify(self, tmpl: Loc, cat: str | None, k: Any) -> tuple[Loc, str | None, Any, int]:
        """(template, category, form or _NOT, the bit a value there sets: its category in clear, or
        (category, form) when transformed; 0 for none)."""
        ct = (*tmpl, k)
        ccat = self.index.naming(ct) or cat
        form: Any = self.tr.get(ct, _NOT) if self.tr else _NOT
        bits = self.index.bits
        if ccat is None or form is None:
            bit = 0
        elif form is _NOT:
            bit = bits.bit(ccat)
        else:
            bit = bits.bit((ccat, str(form)))
        return ct, ccat, form, bit

    def _walk(self, node: Any, tmpl: Loc, cat: str | None) -> int:
        """The plain walk: what `node` at template `tmpl`, in category `cat`, discloses, as bits
        (CategoryIndex.bits). Specialized walks hand it what the plan does not bound."""
        t = type(node)
        if t is dict:
            kids = self._kids(tmpl)
            m = 0
            for k, v in node.items():
                info = kids.get(k)
                if info is None:
                    info = self._kid(kids, tmpl, cat, k)
                ct, ccat, form, bit = info
                if form is not _NOT:  # a transformed value: its form, once, unless it left as null
                    if v is not None:
                        m |= bit
                elif type(v) in _SCALARS:
                    m |= bit
                elif v is not None:
                    m |= self._walk(v, ct, ccat)
            return m
        if t is list:
            if not node:
                return 0
            kids = self._kids(tmpl)
            ct, ccat, form, bit = kids.get(0) or self._kid(kids, tmpl, cat, 0)  # every element's
            m = 0
            for v in node:
                if form is not _NOT:
                    if v is not None:
                        m |= bit
                elif type(v) in _SCALARS:
                    m |= bit
                elif v is not None:
                    m |= self._walk(v, ct, ccat)
            return m
        return self.index.bits.bit(cat) if node is not None and cat is not None else 0

    def _kids(self, tmpl: Loc) -> dict[Any, tuple[Loc, str | None, Any, int]]:
        kids = self.kids.get(tmpl)
        if kids is None:
            kids = {}
            if self.room > 0:
                self.kids[tmpl] = kids
        return kids

    def _kid(self, kids: dict[Any, tuple[Loc, str | None, Any, int]], tmpl: Loc, cat: str | None, k: Any
             ) -> tuple[Loc, str | None, Any, int]:
        info = self._classify(tmpl, cat, k)
        if self.room > 0:
            kids[k] = info
            self.room -= 1
        return info


class Bits:
    """What a walk found, as bits of an int: one per category in clear (str) and per (category, form)
    pair, numbered as first met (one numbering per CategoryIndex; a handful: categories and forms are
    few). `decode` gives the pairs of a set of bits (kept: sets of bits that occur are few too)."""

    __slots__ = ("_decoded", "items", "of")

    def __init__(self) -> None:
        self.of: dict[str | tuple[str, str], int] = {}
        self.items: list[str | tuple[str, str]] = []
        self._decoded: dict[int, Pairs] = {}  # what `decode` made of a set of bits (bounded)

    def bit(self, c: str | tuple[str, str]) -> int:
        b = self.of.get(c)
        if b is None:
            b = self.of[c] = 1 << len(self.items)
            self.items.append(c)
        return b

    def decode(self, m: int) -> Pairs:
        hit = self._decoded.get(m)
        if hit is not None:
            return hit
        pairs = self._decode(m)
        if len(self._decoded) < _MEMO_MAX:
            self._decoded[m] = pairs
        return pairs

    def _decode(self, m: int) -> Pairs:
        clear: set[str] = set()
        other: set[tuple[str, str]] = set()
        i = 0
        while m:
            if m & 1:
                c = self.items[i]
                if isinstance(c, str):
                    clear.add(c)
                else:
                    other.add(c)
            m >>= 1
            i += 1
        return frozenset(clear), frozenset(other)


_NONE: Pairs = (frozenset(), frozenset())
WalkFn = Callable[[Any, Walker], int]
Walk = tuple[WalkFn, Bits]  # a specialized walk and how to read what it returns
_MAX_WALKS = 64  # specialized walks per plan (one per list template is the norm)
_MAX_WALKERS = 256  # walkers kept per plan (one per shared report: Report.shared, at most 256 per plan)
_KIDS_MAX = 4096  # (template, key) classifications a kept walker keeps


class _WalkGen:
    """Generates a Walker's walk for one template of a plan's output. For `keep items[*].id,
    items[*].tags[*].name; hash items[*].email` with `category identity = id`, `category contact =
    email` and `category behaviour = tags`, the walk of an item reads (what it finds as bits, see Bits:
    here identity 1, behaviour 2, (contact, hash) 4):

        def walk(v0, W):
            m = 0
            t0 = type(v0)
            if t0 is dict:
                if 'id' in v0:
                    v1 = v0['id']
                    if type(v1) in SCALARS: m |= 1
                    elif v1 is not None: m |= W._walk(v1, <items[*].id>, 'identity')
                if 'tags' in v0:
                    v1 = v0['tags']
                    t1 = type(v1)
                    if t1 is list:
                        for v2 in v1: <the same for an element, in 'behaviour'>
                    else: <the plain walk of v1>
                if 'email' in v0:
                    v1 = v0['email']
                    if v1 is not None: m |= 4
            else: <the plain walk of v0>
            return m

    Keys enter the source only as repr() of strings, everything else through the namespace."""

    MAX_DEPTH = 6

    def __init__(self, index: CategoryIndex, plan: Outlined) -> None:
        self.index, self.plan = index, plan
        self.ns: dict[str, Any] = {"SCALARS": _SCALARS}
        self.lines: list[str] = []
        self.n = 0
        self.bits = index.bits

    def bind(self, value: Any) -> str:
        self.n += 1
        name = f"_{self.n}"
        self.ns[name] = value
        return name

    def function(self, at: Loc) -> Walk | None:
        o = self.plan.outline(at)
        if o is None or o.transformed:
            return None
        self.lines += ["def walk(v0, W):", "    m = 0"]
        self.container(o, "v0", at, self.index.of(at), 0, "    ")
        self.lines.append("    return m")
        source = "\n".join(self.lines) + "\n"
        exec(compile(source, "<veil disclosure walk>", "exec"), self.ns)
        fn: WalkFn = self.ns["walk"]
        return fn, self.bits

    def plain(self, var: str, tmpl: Loc, cat: str | None, ind: str) -> None:
        """The plain walk's reading of a value (not transformed) at `tmpl`."""
        emit = self.lines.append
        walk = f"m |= W._walk({var}, {self.bind(tmpl)}, {self.bind(cat)})"
        if cat is not None:
            emit(f"{ind}if type({var}) in SCALARS:")
            emit(f"{ind}    m |= {self.bits.bit(cat)}")
            emit(f"{ind}elif {var} is not None:")
        else:
            emit(f"{ind}if type({var}) not in SCALARS and {var} is not None:")
        emit(f"{ind}    {walk}")

    def value(self, var: str, tmpl: Loc, cat: str | None, depth: int, ind: str) -> None:
        """A value held by an object or an array at `tmpl`, in category `cat`."""
        o = self.plan.outline(tmpl)
        if o is not None and o.transformed:
            if cat is not None and o.form is not None:
                self.lines.append(f"{ind}if {var} is not None:")
                self.lines.append(f"{ind}    m |= {self.bits.bit((cat, o.form))}")
            else:
                self.lines.append(f"{ind}pass")
        elif o is None or depth >= self.MAX_DEPTH or not (o.keys or o.elem):
            self.plain(var, tmpl, cat, ind)
        else:
            self.container(o, var, tmpl, cat, depth, ind)

    def container(self, o: Outline, var: str, tmpl: Loc, cat: str | None, depth: int, ind: str) -> None:
        """A value at `tmpl` where the plan leaves objects with `o.keys` only, or arrays (`o.elem`)."""
        emit = self.lines.append
        t, x = f"t{depth}", f"v{depth + 1}"
        emit(f"{ind}{t} = type({var})")
        word = "if"
        if o.keys:
            emit(f"{ind}if {t} is dict:")
            for k in o.keys:
                ct = (*tmpl, k)
                emit(f"{ind}    if {k!r} in {var}:")
                emit(f"{ind}        {x} = {var}[{k!r}]")
                self.value(x, ct, self.index.naming(ct) or cat, depth + 1, ind + "        ")
            word = "elif"
        if o.elem:
            ct = (*tmpl, 0)
            emit(f"{ind}{word} {t} is list:")
            emit(f"{ind}    for {x} in {var}:")
            self.value(x, ct, self.index.naming(ct) or cat, depth + 1, ind + "        ")
            word = "elif"
        emit(f"{ind}else:" if word == "elif" else f"{ind}if True:")
        self.plain(var, tmpl, cat, ind + "    ")


def merge(out: dict[str, set[str]], pairs: Pairs) -> dict[str, set[str]]:
    """Add what `pairs` discloses to {category: forms}."""
    clear, other = pairs
    for c in clear:
        forms = out.get(c)
        if forms is None:
            out[c] = {CLEAR}
        else:
            forms.add(CLEAR)
    for c, form in other:
        forms = out.get(c)
        if forms is None:
            out[c] = {form}
        else:
            forms.add(form)
    return out


def as_record(disclosed: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """The JSON form in decision records: categories and their forms, sorted."""
    return {c: sorted(disclosed[c]) for c in sorted(disclosed)}


__all__ = ["CLEAR", "Bits", "CategoryIndex", "Outlined", "Pairs", "Walk", "WalkFn", "Walker", "as_record", "merge"]
