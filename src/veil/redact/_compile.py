"""Field rules → a deterministic automaton over JSON locations → specialized closures.

Stage 1 (`Automaton`): subset construction over the rules' path NFAs. A state is the set of
(rule, position) pairs alive at a location plus `covered` (a keep matched here or above). Each state
knows its fate: dropped, transformed, kept whole, removed, or visit (look inside).

Stage 2 (`Builder`): one closure per (state, location template). Closures take `(value, ev)` where
`ev` is the per-apply event counter dict, and return the new value or GONE. Object nodes come in
three shapes: *filter* (unknown keys are removed: one dict comprehension over the allowed keys),
*in place* (unknown keys are kept: delete/transform the named ones) and *general* (unknown keys need
a look inside: per-key closures, built lazily and cached up to a cap). Counters are keyed by location
template tuples (indices as 0) and turned into text only when the report is made.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from veil.redact import lazy as lz
from veil.redact import native
from veil.redact.paths import AnyKey, Deep, Each, FieldPath, Key
from veil.redact.transforms import Transform, TransformTypeError


class Fate(IntEnum):
    """What happened to a value, as counted in a report (the value is the report field's index)."""

    REMOVED = 0  # minimization: no keep covers it
    DROPPED = 1
    TRANSFORMED = 2
    TYPE_ERROR = 3  # a transform refused the value's type: it left as null


class Event(NamedTuple):
    """A counter key of one apply: a fate at a location template (keys, 0 for indices) by a rule.
    A tuple underneath, so counting one costs a C-level hash (events are counted per value)."""

    fate: Fate
    tmpl: tuple[str | int, ...]
    rule_id: int = -1


GONE: Any = native.GONE  # a closure's "this node is removed" result
# counted in `ev` by a lazy plan that made a container plain whole (kept whole, or handed to an eager
# closure): the output may then be nested deeper than the plan's own structure (see lazy_depth)
class _Materialized:
    __slots__ = ()


MATERIALIZED: Any = _Materialized()
MAX_CLOSURES = 20_000  # closures built per plan; beyond this, lazily built ones are not cached

Fn = Callable[[Any, dict[Any, Any]], Any]
Tmpl = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    path: FieldPath
    action: str  # "keep" | "drop" | "transform"
    transform: Transform | None
    rule_id: int
    order: int


class _Other:
    """A key no Key segment names: follows only `*` and `**` transitions."""


OTHER = _Other()
WHOLE = "whole"
DROPPED = "dropped"
TRANSFORMED = "transformed"
REMOVED = "removed"
VISIT = "visit"


class State:
    __slots__ = (
        "_auto",
        "_elem",
        "_kids",
        "_other",
        "arr_ok",
        "covered",
        "kind",
        "named",
        "obj_ok",
        "positions",
        "rule",
    )

    def __init__(self, auto: Automaton, positions: frozenset[tuple[int, int]], parent_covered: bool) -> None:
        self._auto = auto
        rules = auto.rules
        accepting = [rules[r] for r, i in positions if i == len(rules[r].path)]
        drops = sorted((s for s in accepting if s.action == "drop"), key=_rank)
        transforms = sorted((s for s in accepting if s.action == "transform"), key=_rank)
        self.covered = parent_covered or any(s.action == "keep" for s in accepting)
        if self.covered:  # keeps can add nothing under a kept node
            positions = frozenset(p for p in positions if rules[p[0]].action != "keep")
        self.positions = frozenset(p for p in positions if p[1] < len(rules[p[0]].path))
        self.rule: RuleSpec | None = drops[0] if drops else transforms[0] if transforms else None
        segs = [(rules[r], rules[r].path[i]) for r, i in self.positions]
        firsts: dict[str, int] = {}
        for spec, seg in sorted(segs, key=lambda x: x[0].order):
            if isinstance(seg, Key):
                firsts.setdefault(seg.name, spec.order)
        self.named = tuple(firsts)  # in policy order: filtered objects list their keys in this order
        live = [seg for spec, seg in segs if self.covered or spec.action != "drop"]
        self.obj_ok = self.covered or any(isinstance(s, Key | AnyKey | Deep) for s in live)
        self.arr_ok = self.covered or any(isinstance(s, Each | Deep) for s in live)
        if drops:
            self.kind = DROPPED
        elif transforms:
            self.kind = TRANSFORMED
        elif self.covered and not self.positions:
            self.kind = WHOLE
        elif not (self.obj_ok or self.arr_ok):
            self.kind = REMOVED
        else:
            self.kind = VISIT
        self._kids: dict[str, State] = {}
        self._other: State | None = None
        self._elem: State | None = None

    def child(self, key: str | _Other) -> State:
        if isinstance(key, str) and key not in self.named:
            key = OTHER
        if isinstance(key, _Other):
            if self._other is None:
                self._other = self._auto.step(self, key)
            return self._other
        kid = self._kids.get(key)
        if kid is None:
            kid = self._kids[key] = self._auto.step(self, key)
        return kid

    def elem(self) -> State:
        if self._elem is None:
            self._elem = self._auto.step(self, None)
        return self._elem


def _rank(spec: RuleSpec) -> tuple[int, int]:
    return (spec.rule_id, spec.order)


class Automaton:
    def __init__(self, rules: Sequence[RuleSpec]) -> None:
        self.rules = tuple(rules)
        self._memo: dict[tuple[frozenset[tuple[int, int]], bool], State] = {}
        self.root = self._state(self._close((r, 0) for r in range(len(self.rules))), False)

    def _close(self, items: Any) -> frozenset[tuple[int, int]]:
        out: set[tuple[int, int]] = set()
        stack = list(items)
        while stack:
            r, i = stack.pop()
            if (r, i) in out:
                continue
            out.add((r, i))
            path = self.rules[r].path
            if i < len(path) and isinstance(path[i], Deep):
                stack.append((r, i + 1))
        return frozenset(out)

    def _state(self, positions: frozenset[tuple[int, int]], covered: bool) -> State:
        key = (positions, covered)
        st = self._memo.get(key)
        if st is None:
            st = self._memo[key] = State(self, positions, covered)
        return st

    def step(self, st: State, key: str | _Other | None) -> State:
        """Transition on an object key (str / OTHER) or an array element (None)."""
        nxt: list[tuple[int, int]] = []
        for r, i in st.positions:
            seg = self.rules[r].path[i]
            if isinstance(seg, Deep):
                nxt.append((r, i))
            elif key is None:
                if isinstance(seg, Each):
                    nxt.append((r, i + 1))
            elif isinstance(seg, AnyKey) or (isinstance(seg, Key) and seg.name == key):
                nxt.append((r, i + 1))
        return self._state(self._close(nxt), st.covered)


class Shape:
    """Counts the key sets of objects filtered at one template; classified when the report is made."""

    __slots__ = ("allowed", "default", "gone", "seen", "tmpl")

    def __init__(self, tmpl: Tmpl, allowed: frozenset[str], gone: dict[str, Event],
                 default: State) -> None:
        self.tmpl, self.allowed, self.gone, self.default = tmpl, allowed, gone, default
        self.seen: dict[tuple[str, ...], list[tuple[int, Any]]] = {}  # key set → report entries (engine)

    def classify(self, sig: tuple[str, ...]) -> list[Event]:
        """The events for the keys of `sig` this filter removed (named children count their own)."""
        out: list[Event] = []
        for k in sig:
            if k in self.allowed:
                continue
            key = self.gone.get(k)
            if key is None:
                d = self.default
                t = (*self.tmpl, k)
                key = Event(Fate.DROPPED, t, d.rule.rule_id) if d.kind == DROPPED and d.rule else Event(
                    Fate.REMOVED, t)
            out.append(key)
        return out


Slot = Any  # WHOLE (str) | Event (the node is removed or dropped) | Fn


class Builder:
    """Closures for one automaton. A `lazy` builder's closures also take lazy nodes (simdjson proxies,
    see veil.redact.lazy): filtered objects are read in place, whatever they keep or transform is
    materialized, and any other object is materialized whole and handed to the eager closure."""

    def __init__(self, auto: Automaton, lazy: bool = False, name: str = "plan", use_native: bool = False) -> None:
        self.auto = auto
        self.count = 0
        self.lazy = lazy
        self.name = name
        # filtered and in-place objects of an eager builder run in veil.redact._cplan (where it is built),
        # and so do the common values of every builder's transforms (native.fast)
        self.use_native = use_native and native.cplan is not None
        self.native = self.use_native and not lazy
        self.sources: list[tuple[str, str]] = []  # (file name, source) of the code generated so far
        self._eager: Builder | None = None

    def eager(self) -> Builder:
        if self._eager is None:
            self._eager = Builder(self.auto, name=self.name, use_native=self.use_native)
            self._eager.sources = self.sources  # one listing for the plan
        return self._eager

    def xf(self, tr: Transform) -> Callable[[Any], Any]:
        """The callable that computes `tr` in this builder's code."""
        return native.fast(tr) if self.use_native else tr

    def slot(self, st: State, t: Tmpl, stack: frozenset[State] = frozenset()) -> Slot:
        kind = st.kind
        if kind == WHOLE:
            return WHOLE
        if kind == REMOVED:
            return Event(Fate.REMOVED, t)
        if kind == DROPPED:
            assert st.rule is not None
            return Event(Fate.DROPPED, t, st.rule.rule_id)
        if kind == TRANSFORMED:
            assert st.rule is not None and st.rule.transform is not None
            return _transform_fn(self.xf(st.rule.transform), t, st.rule.rule_id, self.lazy)
        if st in stack:
            return self._deferred(st, t)
        return self._visit(st, t, stack | {st})

    def _deferred(self, st: State, t: Tmpl) -> Fn:
        cell: list[Fn | None] = [None]

        def deferred(v: Any, ev: dict[Any, Any]) -> Any:
            f = cell[0]
            if f is None:
                f = self._visit(st, t, frozenset({st}))
                if self.count < MAX_CLOSURES:
                    cell[0] = f
            return f(v, ev)

        return deferred

    def _visit(self, st: State, t: Tmpl, stack: frozenset[State]) -> Fn:
        """One closure per node: the object handler itself when objects may survive (one call per
        node on the hot path); `nondict` handles arrays, covered scalars and removal."""
        if self.lazy and not walks_lazily(st):
            return _materializing(self.eager().slot(st, t, frozenset()))
        if _scrubs(st):
            self.count += 1
            return _scrub_fn(st, t)
        nondict = self.nondict(st, t, stack)
        if not st.obj_ok:
            return nondict
        if filters(st):
            return _FilterGen(self).function(st, t, stack, nondict)
        return self._obj(st, t, stack, nondict)

    def nondict(self, st: State, t: Tmpl, stack: frozenset[State]) -> Fn:
        """The non-object half of a visit (arrays, covered scalars, removal) for inlined filters."""
        self.count += 1
        arr = self._arr(st, t, stack) if st.arr_ok else None
        covered = st.covered
        rkey = Event(Fate.REMOVED, t)
        lst, dct = (lz.LIST, lz.DICT) if self.lazy else (list, dict)

        def nondict(v: Any, ev: dict[Any, Any]) -> Any:
            if isinstance(v, lst):
                if arr is not None:
                    return arr(v, ev)
            elif covered and not isinstance(v, dct):
                return v
            ev[rkey] = ev.get(rkey, 0) + 1
            return GONE

        return nondict

    def _arr(self, st: State, t: Tmpl, stack: frozenset[State]) -> Fn:
        s = self.slot(st.elem(), (*t, 0), stack)
        if s is WHOLE:
            return _materialize if self.lazy else _identity
        if isinstance(s, tuple):
            key = s

            def gone_all(v: list[Any], ev: dict[Any, Any]) -> Any:
                if v:
                    ev[key] = ev.get(key, 0) + len(v)
                return []

            return gone_all
        f: Fn = s

        def each(v: list[Any], ev: dict[Any, Any]) -> Any:
            return [r for x in v if (r := f(x, ev)) is not GONE]

        return each

    def _obj(self, st: State, t: Tmpl, stack: frozenset[State], nondict: Fn) -> Fn:
        assert not self.lazy, "a lazy builder hands unfiltered objects to the eager one"
        slots = {k: self.slot(st.child(k), (*t, k), stack) for k in st.named}
        fns = tuple((k, s) for k, s in slots.items() if callable(s))
        gone = {k: s for k, s in slots.items() if isinstance(s, tuple)}
        other = st.child(OTHER)
        if other.kind == WHOLE:
            if self.native:  # the same steps, in veil.redact._cplan
                inplace: Fn = native.cplan.InPlace(tuple(gone.items()), fns, nondict)
                return inplace
            return _inplace_obj(tuple(gone.items()), fns, nondict)
        return self._general_obj(slots, other, t, nondict)

    def _general_obj(self, slots: dict[str, Slot], other: State, t: Tmpl, nondict: Fn) -> Fn:
        cache: dict[str, Slot] = {}

        def general(d: Any, ev: dict[Any, Any]) -> Any:
            if not isinstance(d, dict):
                return nondict(d, ev)
            for k in list(d):
                s = slots.get(k)
                if s is None:
                    s = cache.get(k)
                    if s is None:
                        s = self.slot(other, (*t, k), frozenset())
                        if self.count < MAX_CLOSURES and len(cache) < MAX_CLOSURES:
                            cache[k] = s
                if s is WHOLE:
                    continue
                if isinstance(s, tuple):
                    del d[k]
                    ev[s] = ev.get(s, 0) + 1
                    continue
                r = s(d[k], ev)
                if r is GONE:
                    del d[k]
                else:
                    d[k] = r
            return d

        return general


def _scrubs(st: State) -> bool:
    """A kept subtree in which only keys named by `**.name` drops remain to be removed (a category
    dropped anywhere): the same state at every depth, so one recursive walk that skips scalars."""
    if not (st.kind == VISIT and st.covered and st.named):
        return False
    other, elem = st.child(OTHER), st.elem()
    # A state reached through an accepting keep differs from its children only by that spent keep.
    # Unnamed keys and array elements must lead to this same (visited, not dropped) state: a `**.*` or
    # `**[*]` drop would not.
    return (other.kind == VISIT and elem.kind == VISIT and other.covered and elem.covered
            and other.positions == st.positions == elem.positions
            and all(st.child(k).kind == DROPPED for k in st.named))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _scrub_fn(st: State, t: Tmpl) -> Fn:
    drops: dict[str, int] = {}
    for k in st.named:
        rule = st.child(k).rule
        assert rule is not None
        drops[k] = rule.rule_id
    names = frozenset(drops)

    def walk(v: Any, ev: dict[Any, Any], t: Tmpl) -> None:
        if isinstance(v, dict):
            if not names.isdisjoint(v):
                for k in [k for k in v if k in names]:
                    del v[k]
                    key = Event(Fate.DROPPED, (*t, k), drops[k])
                    ev[key] = ev.get(key, 0) + 1
            for k, x in v.items():
                if type(x) not in _SCALARS:
                    walk(x, ev, (*t, k))
        elif isinstance(v, list):
            for x in v:
                if type(x) not in _SCALARS:
                    walk(x, ev, (*t, 0))

    def scrub(v: Any, ev: dict[Any, Any]) -> Any:
        if type(v) not in _SCALARS:
            walk(v, ev, t)
        return v

    return scrub


def walks_lazily(st: State) -> bool:
    """A visited state a lazy builder reads in place: filtered objects and arrays. Other objects
    (unknown keys kept or looked into) and scrubbed subtrees are materialized for an eager closure."""
    return st.kind == VISIT and not _scrubs(st) and (filters(st) or not st.obj_ok)


def filters(st: State) -> bool:
    """Objects at this state are filtered: keys no rule names are removed (or dropped)."""
    return st.kind == VISIT and st.obj_ok and st.child(OTHER).kind in (REMOVED, DROPPED)


class StepKind(IntEnum):
    """What a filtered object does with one key it names (the numbering is _cplan.c's)."""

    KEEP = 0  # copied as it is
    FIXED = 1  # a transform whose result does not depend on the value: written without reading it
    TRANSFORM = 2  # the transform's result; null and a type-error event when it refuses the value
    OBJECT = 3  # a filtered object, inlined (`nd` for a value that is not an object)
    ARRAY = 4  # an array of filtered objects, inlined (`nd` for a non-array, `nde` for a non-object item)
    SCRUB = 5  # kept, but a container may hide a dropped category: `fn` walks it, scalars pass
    CALL = 6  # any other state: `fn` decides (GONE: removed)


@dataclass(slots=True)
class Step:
    key: str
    kind: StepKind
    transform: Transform | None = None
    result: Any = None  # FIXED: the transform's result
    tk: Event | None = None  # FIXED, TRANSFORM: the transformed event
    ek: Event | None = None  # TRANSFORM: the type-error event
    child: ObjSteps | None = None  # OBJECT, ARRAY: the inlined filtered object (an ARRAY's elements)
    nd: Fn | None = None
    nde: Fn | None = None
    fn: Fn | None = None  # SCRUB, CALL


@dataclass(slots=True)
class ObjSteps:
    """One filtered object: its named keys that may leave, in the plan's order, and the shape its key
    sets are counted against when something was removed. The one decision the generated Python and
    the native loop (_cplan) both render."""

    tmpl: Tmpl
    steps: list[Step]
    shape: Shape


class _FilterGen:
    """A filtered object's handler: its steps (`steps`), rendered as straight-line Python with filtered
    children inlined, or, where veil.redact._cplan is built and the builder is eager, as a native
    Filter that runs the same steps (the Python source is still generated: it is the listing).

    For `keep id, name.first; hash email` the object handler reads (names shortened):

        def filter_obj(d0, ev):
            if not isinstance(d0, dict): return nondict(d0, ev)
            o0 = {}
            if 'id' in d0: o0['id'] = d0['id']
            if 'name' in d0:
                v1 = d0['name']
                if isinstance(v1, dict):
                    o1 = {}
                    if 'first' in v1: o1['first'] = v1['first']
                    if len(o1) != len(v1): <count v1's key set against shape S1>
                    o0['name'] = o1
                else: <nondict of name>
            if 'email' in d0: <o0['email'] = T2(d0['email']) and count; null and count on a type error>
            if len(o0) != len(d0): <count d0's key set against shape S0>
            return o0

    Keys enter the source only as `repr()` literals; everything else is bound in the namespace.
    """

    MAX_INLINE_DEPTH = 4

    def __init__(self, builder: Builder) -> None:
        self.b = builder
        self.ns: dict[str, Any] = {"GONE": GONE, "TransformTypeError": TransformTypeError, "SCALARS": _SCALARS,
                                   "DICT": lz.DICT if builder.lazy else dict, "LIST": lz.LIST if builder.lazy else list,
                                   "MAT": lz.materialize,
                                   "KEPT": _kept_whole}
        self.lines: list[str] = []
        self.n = 0
        self.counters: dict[str, str] = {}  # local counter name → the event's name in the namespace

    def counter(self, key_name: str) -> str:
        """A local counter for the event bound as `key_name`, added to `ev` when the function returns."""
        n = f"n{len(self.counters)}"
        self.counters[n] = key_name
        return n

    def bind(self, value: Any, hint: str = "") -> str:
        """A name in the generated code's namespace for `value` (`hint` makes it readable)."""
        self.n += 1
        tail = re.sub(r"[^0-9A-Za-z_]+", "_", hint).strip("_")[:40]
        name = f"_{self.n}_{tail}" if tail else f"_{self.n}"
        self.ns[name] = value
        return name

    def function(self, st: State, t: Tmpl, stack: frozenset[State], nondict: Fn) -> Fn:
        b = self.b
        where = _tmpl_text(t)
        obj = self.steps(st, t, stack, 0)
        nd = self.bind(nondict, "not_an_object")
        if b.native:
            self.lines.append(f"# {b.name}: objects at {where}: run by the native loop (veil.redact._cplan);"
                              " this is the same plan in Python")
        self.lines += [f"# {b.name}: objects at {where}{' (read lazily)' if b.lazy else ''}",
                       "def filter_obj(d0, ev):", "    if not isinstance(d0, DICT):"]
        self.lines.append(f"        return {nd}(d0, ev)")
        head = len(self.lines)
        self.render(obj, 0, "    ")
        if self.counters:  # events counted in locals (a transform per field per item), added to `ev` once
            self.lines.insert(head, "    " + " = ".join(self.counters) + " = 0")
            for n, key in self.counters.items():
                self.lines.append(f"    if {n}:")
                self.lines.append(f"        ev[{key}] = ev.get({key}, 0) + {n}")
        self.lines.append("    return o0")
        source = "\n".join(self.lines) + "\n"
        filename = f"<veil plan {b.name}{' (lazy)' if b.lazy else ''} #{len(b.sources) + 1}: {where}>"
        b.sources.append((filename, source))  # `veil explain --show-plan` prints it
        if b.native:  # the listing only: the native Filter runs the same steps
            return _as_native(obj, nondict, b.xf)
        # generated from rule structure only; a real file name, its source kept, so a traceback or a
        # profiler points at a readable line
        code = compile(source, filename, "exec")
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(code, self.ns)
        fn: Fn = self.ns["filter_obj"]
        return fn

    def steps(self, st: State, t: Tmpl, stack: frozenset[State], depth: int) -> ObjSteps:
        """What the filtered object at `st` does with each key it names (closures it calls are built)."""
        out: list[Step] = []
        allowed: set[str] = set()
        gone: dict[str, Event] = {}
        for k in st.named:
            cs, ct = st.child(k), (*t, k)
            if cs.kind in (REMOVED, DROPPED):
                gone[k] = self.b.slot(cs, ct, stack)
                continue
            allowed.add(k)
            if cs.kind == WHOLE:
                out.append(Step(k, StepKind.KEEP))
            elif cs.kind == TRANSFORMED:
                assert cs.rule is not None and cs.rule.transform is not None
                tr, rid = cs.rule.transform, cs.rule.rule_id
                is_fixed, result = tr.fixed()
                tk = Event(Fate.TRANSFORMED, ct, rid)
                if is_fixed:
                    out.append(Step(k, StepKind.FIXED, tr, result, tk))
                else:
                    out.append(Step(k, StepKind.TRANSFORM, tr, None, tk, Event(Fate.TYPE_ERROR, ct, rid)))
            elif filters(cs) and cs not in stack and depth < self.MAX_INLINE_DEPTH:
                self.b.count += 1
                sub = stack | {cs}
                nd = self.b.nondict(cs, ct, sub)
                out.append(Step(k, StepKind.OBJECT, child=self.steps(cs, ct, sub, depth + 1), nd=nd))
            elif self._inlines_array(cs, stack, depth):  # an array of filtered objects: one loop, no calls
                es = cs.elem()
                self.b.count += 2
                sub = stack | {cs, es}
                nd = self.b.nondict(cs, ct, sub)
                nde = self.b.nondict(es, (*ct, 0), sub)
                out.append(Step(k, StepKind.ARRAY, child=self.steps(es, (*ct, 0), sub, depth + 1), nd=nd, nde=nde))
            elif _scrubs(cs):  # a kept field that may hide a dropped category: scalars need no call
                out.append(Step(k, StepKind.SCRUB, fn=self.b.slot(cs, ct, stack)))
            else:
                out.append(Step(k, StepKind.CALL, fn=self.b.slot(cs, ct, stack)))
        return ObjSteps(t, out, Shape(t, frozenset(allowed), gone, st.child(OTHER)))

    def render(self, obj: ObjSteps, depth: int, ind: str) -> None:
        """`obj` as Python lines: `d0`/`vN` in, `oN` out."""
        src, out = f"d{depth}" if depth == 0 else f"v{depth}", f"o{depth}"
        emit = self.lines.append
        emit(f"{ind}{out} = {{}}")
        lazy = self.b.lazy  # a lazy node read here is materialized: kept and transformed values are plain
        for s in obj.steps:
            k = s.key
            key = repr(k)
            emit(f"{ind}if {key} in {src}:")
            inner = ind + "    "
            if s.kind is StepKind.KEEP:
                if lazy:
                    emit(f"{inner}r = {src}[{key}]")
                    emit(f"{inner}{out}[{key}] = r if type(r) in SCALARS else KEPT(r, ev)")
                else:
                    emit(f"{inner}{out}[{key}] = {src}[{key}]")
            elif s.kind is StepKind.FIXED:
                assert s.transform is not None
                ntk = self.counter(self.bind(s.tk, f"transformed_{k}"))
                emit(f"{inner}{out}[{key}] = {self.bind(s.result, f'{s.transform.name}_{k}_result')}")
                emit(f"{inner}{ntk} += 1")
            elif s.kind is StepKind.TRANSFORM:
                assert s.transform is not None
                tr = self.bind(self.b.xf(s.transform), f"{s.transform.name}_{k}")
                tk = self.bind(s.tk, f"transformed_{k}")
                ek = self.bind(s.ek, f"type_error_{k}")
                arg = f"{src}[{key}]"
                if lazy:
                    emit(f"{inner}r = {arg}")
                    arg = "(r if type(r) in SCALARS else MAT(r))"
                ntk, nek = self.counter(tk), self.counter(ek)
                emit(f"{inner}try:")
                emit(f"{inner}    {out}[{key}] = {tr}({arg})")
                emit(f"{inner}    {ntk} += 1")
                emit(f"{inner}except TransformTypeError:")
                emit(f"{inner}    {out}[{key}] = None")
                emit(f"{inner}    {nek} += 1")
            elif s.kind is StepKind.OBJECT:
                assert s.child is not None
                nd = self.bind(s.nd, f"{k}_not_an_object")
                v, o = f"v{depth + 1}", f"o{depth + 1}"
                emit(f"{inner}{v} = {src}[{key}]")
                emit(f"{inner}if isinstance({v}, DICT):")
                self.render(s.child, depth + 1, inner + "    ")
                emit(f"{inner}    {out}[{key}] = {o}")
                emit(f"{inner}else:")
                emit(f"{inner}    r = {nd}({v}, ev)")
                emit(f"{inner}    if r is not GONE:")
                emit(f"{inner}        {out}[{key}] = r")
            elif s.kind is StepKind.ARRAY:
                assert s.child is not None
                nd = self.bind(s.nd, f"{k}_not_an_array")
                nde = self.bind(s.nde, f"{k}_item_not_an_object")
                w, a, v, o = f"w{depth + 1}", f"a{depth + 1}", f"v{depth + 1}", f"o{depth + 1}"
                emit(f"{inner}{w} = {src}[{key}]")
                emit(f"{inner}if isinstance({w}, LIST):")
                emit(f"{inner}    {a} = []")
                emit(f"{inner}    for {v} in {w}:")
                emit(f"{inner}        if isinstance({v}, DICT):")
                self.render(s.child, depth + 1, inner + "            ")
                emit(f"{inner}            {a}.append({o})")
                emit(f"{inner}        else:")
                emit(f"{inner}            r = {nde}({v}, ev)")
                emit(f"{inner}            if r is not GONE:")
                emit(f"{inner}                {a}.append(r)")
                emit(f"{inner}    {out}[{key}] = {a}")
                emit(f"{inner}else:")
                emit(f"{inner}    r = {nd}({w}, ev)")
                emit(f"{inner}    if r is not GONE:")
                emit(f"{inner}        {out}[{key}] = r")
            elif s.kind is StepKind.SCRUB:
                fn = self.bind(s.fn, f"scrub_{k}")
                emit(f"{inner}r = {src}[{key}]")
                emit(f"{inner}{out}[{key}] = r if type(r) in SCALARS else {fn}(r, ev)")
            else:
                fn = self.bind(s.fn, f"visit_{k}")
                emit(f"{inner}r = {fn}({src}[{key}], ev)")
                emit(f"{inner}if r is not GONE:")
                emit(f"{inner}    {out}[{key}] = r")
        shape = self.bind(obj.shape, f"keys_at_{_tmpl_text(obj.tmpl)}")
        emit(f"{ind}if len({out}) != len({src}):")
        emit(f"{ind}    sg = ev.get({shape})")
        emit(f"{ind}    if sg is None:")
        emit(f"{ind}        sg = ev[{shape}] = {{}}")
        emit(f"{ind}    sk = tuple({src})")
        emit(f"{ind}    sg[sk] = sg.get(sk, 0) + 1")

    def _inlines_array(self, st: State, stack: frozenset[State], depth: int) -> bool:
        """Arrays (and no objects) at `st` whose elements are filtered objects: the loop is written out."""
        if not (st.kind == VISIT and st.arr_ok and not st.obj_ok and st not in stack
                and depth < self.MAX_INLINE_DEPTH):
            return False
        es = st.elem()
        return filters(es) and es not in stack


def _as_native(obj: ObjSteps, nondict: Fn, xf: Callable[[Transform], Callable[[Any], Any]]) -> Fn:
    """`obj` as a native Filter (veil.redact._cplan): counters numbered in the order the Python
    rendering numbers its locals (depth first, in step order), so `ev` is filled in the same order."""
    counters: list[Event] = []

    def slot(e: Event | None) -> int:
        assert e is not None
        counters.append(e)
        return len(counters) - 1

    def make(o: ObjSteps, top: bool) -> Any:
        entries: list[tuple[str, int, Any, Any, Any, int, int]] = []
        for s in o.steps:
            c1 = c2 = -1
            a: Any = None
            if s.kind is StepKind.FIXED:
                a, c1 = s.result, slot(s.tk)
            elif s.kind is StepKind.TRANSFORM:
                assert s.transform is not None
                a = xf(s.transform)
                c1, c2 = slot(s.tk), slot(s.ek)
            elif s.kind in (StepKind.OBJECT, StepKind.ARRAY):
                assert s.child is not None
                a = make(s.child, False)
            elif s.kind in (StepKind.SCRUB, StepKind.CALL):
                a = s.fn
            entries.append((s.key, int(s.kind), a, s.nd, s.nde, c1, c2))
        # the top filter checks that every slot its children count into is one of its counters
        return native.cplan.Filter(entries, o.shape, nondict, tuple(counters) if top else None)

    fn: Fn = make(obj, True)
    return fn


def _tmpl_text(t: Tmpl) -> str:
    """A location template as a path (`items[*].email`; `$` for the root)."""
    out = ""
    for seg in t:
        if isinstance(seg, int):
            out += "[*]"
        else:
            key = seg if seg.isidentifier() else repr(seg)
            out += ("." if out else "") + key
    return out or "$"


def _identity(v: Any, ev: dict[Any, Any]) -> Any:
    return v


def _kept_whole(v: Any, ev: dict[Any, Any]) -> Any:
    """A lazy container kept whole, made plain (counted: see MATERIALIZED)."""
    ev[MATERIALIZED] = 1
    return lz.materialize(v)


_materialize = _kept_whole


def _materializing(f: Fn) -> Fn:
    """A lazy node made plain, then handed to an eager closure."""

    def plain(v: Any, ev: dict[Any, Any]) -> Any:
        if type(v) not in _SCALARS:
            ev[MATERIALIZED] = 1
        return f(lz.materialize(v), ev)

    return plain


def _transforming(f: Fn) -> Fn:
    """A lazy node made plain for a transform (its result is no deeper than the transform says)."""

    def plain(v: Any, ev: dict[Any, Any]) -> Any:
        return f(lz.materialize(v), ev)

    return plain


def lazy_depth(st: State, seen: frozenset[State] = frozenset()) -> int | None:
    """How deep a lazy plan's output at `st` (a state it walks lazily) can be nested by the plan's own
    structure: filtered objects and arrays, transforms' results (Transform.added_depth), anything kept
    whole or made plain counting as a scalar (its containers are counted as MATERIALIZED). None when
    the structure recurses (`**`)."""
    if st in seen:
        return None
    seen = seen | {st}
    kids = [st.child(k) for k in st.named] if st.obj_ok else []
    if st.arr_ok:
        kids.append(st.elem())
    deepest = 0
    for kid in kids:
        if kid.kind == TRANSFORMED:
            assert kid.rule is not None and kid.rule.transform is not None
            d: int | None = kid.rule.transform.added_depth()
        elif kid.kind == VISIT and walks_lazily(kid):
            d = lazy_depth(kid, seen)
        else:
            d = 0
        if d is None:
            return None
        deepest = max(deepest, d)
    return 1 + deepest


def _transform_fn(tr: Callable[[Any], Any], t: Tmpl, rule_id: int, lazy: bool = False) -> Fn:
    tkey = Event(Fate.TRANSFORMED, t, rule_id)
    ekey = Event(Fate.TYPE_ERROR, t, rule_id)

    def transform(v: Any, ev: dict[Any, Any]) -> Any:
        try:
            r = tr(v)
        except TransformTypeError:
            ev[ekey] = ev.get(ekey, 0) + 1
            return None
        ev[tkey] = ev.get(tkey, 0) + 1
        return r

    return _transforming(transform) if lazy else transform


def _inplace_obj(
    gone: tuple[tuple[str, tuple[Any, ...]], ...], fns: tuple[tuple[str, Fn], ...], nondict: Fn
) -> Fn:
    def inplace_obj(d: Any, ev: dict[Any, Any]) -> Any:
        if not isinstance(d, dict):
            return nondict(d, ev)
        for k, key in gone:
            if k in d:
                del d[k]
                ev[key] = ev.get(key, 0) + 1
        for k, f in fns:
            if k in d:
                r = f(d[k], ev)
                if r is GONE:
                    del d[k]
                else:
                    d[k] = r
        return d

    return inplace_obj
