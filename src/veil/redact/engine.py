"""Compiled field plans: minimize, drop, transform and guard a parsed JSON document.

Semantics (deny/minimize by default), for every node of the document:

1. guards run first: array elements whose count field is missing, not a number or < k are removed;
2. a DROP matching the node (or an ancestor) removes it: drop beats keep and transform;
3. else the lowest-rule_id TRANSFORM matching the node replaces its whole value (the transform sees
   the original value; rules on its descendants are not consulted);
4. else a KEEP matching the node or an ancestor keeps it (and its subtree, less 2 and 3 below);
5. else a container survives, holding only what survives inside it, when some KEEP/TRANSFORM could
   still match below it through that container's kind (`.key`/`*` need an object, `[*]` an array,
   `**` either);
6. else the node is removed (minimization; rule_id -1). A removed root makes `apply` return None.

`apply` runs compiled closures (see _compile.py); `explain` is a separate, direct reading of the
rules above — slow, obviously right, and used by the tests to check `apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from veil.errors import PathError, VeilError
from veil.redact import _compile as c
from veil.redact import native as native_default
from veil.redact.lazy import NotLazy, has_duplicate_keys, lazy_key, materialize
from veil.redact.paths import AnyKey, Deep, Each, FieldPath, Key, format_path, positions, step, template
from veil.redact.reading import ReadChoice
from veil.redact.transforms import Transform

_MAX_SIGS = 256  # cached key-set classifications per filtered template (one shape is the norm)
_MAX_SIG_KEYS = 128
_MAX_REPORTS = 256  # cached reports per plan, by event signature


class Action(Enum):
    KEEP = "keep"
    DROP = "drop"
    TRANSFORM = "transform"


@dataclass(frozen=True, slots=True)
class FieldRule:
    path: FieldPath
    action: Action
    transform: Transform | None = None
    rule_id: int = -1
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Guard:
    """Aggregate guard: suppress elements of `list_path` whose `count_field` is below k."""

    list_path: FieldPath
    count_field: FieldPath
    k: int
    rule_id: int = -1


@dataclass(frozen=True)
class Report:
    """What one apply removed, dropped and transformed, counted per field template. Read-only: a
    report may be shared by every document of one shape (`shared`: kept for the plan's lifetime)."""

    removed: dict[str, int] = field(default_factory=dict)
    dropped: dict[tuple[str, int], int] = field(default_factory=dict)
    transformed: dict[tuple[str, int], int] = field(default_factory=dict)
    type_errors: dict[tuple[str, int], int] = field(default_factory=dict)
    suppressed: int = 0
    shared: bool = field(default=False, compare=False)
    # location template (keys, 0 for indices) of each transformed value → the transform's form
    # ("hash", "mask", "generalize"; None: nothing of the value leaves): what the disclosure reads
    transformed_at: dict[tuple[str | int, ...], str | None] = field(default_factory=dict, compare=False)
    # the document that leaves is nested at most this deep (None: not known; check_depth walks it)
    depth: int | None = field(default=None, compare=False)

    @property
    def changed(self) -> bool:
        """Whether the document that leaves differs from the one that came (the decision `redact`)."""
        return bool(self.removed or self.dropped or self.transformed or self.type_errors or self.suppressed)


@dataclass(frozen=True, slots=True)
class FieldFate:
    path: tuple[str | int, ...]
    template: str
    fate: str  # "kept" | "removed" | "dropped" | "transformed" | "suppressed"
    rule_id: int


@dataclass(frozen=True, slots=True)
class Outline:
    """What a plan's output may hold at one location template (FieldPlan.outline): a scalar (only when
    kept: `scalar`), an object with no keys but `keys`, an array (`elem`); or, when `transformed`, what
    a transform made of the value (`form`: the transform's, None when nothing of the value leaves)."""

    scalar: bool
    keys: tuple[str, ...]
    elem: bool
    transformed: bool = False
    form: str | None = None


_NOTHING = Outline(False, (), False)


class DocumentTooDeep(VeilError):
    code = "document_too_deep"


class RuleError(VeilError):
    code = "redact_rule_invalid"


def compile_plan(rules: Sequence[FieldRule], guards: Sequence[Guard] = (), name: str = "plan",
                 native: bool | None = None) -> FieldPlan:
    return FieldPlan(rules, guards, name, native)


class FieldPlan:
    """Compile once, apply many. `apply` may mutate its input; `explain` never does."""

    def __init__(self, rules: Sequence[FieldRule], guards: Sequence[Guard] = (), name: str = "plan",
                 native: bool | None = None) -> None:
        for rule in rules:
            if (rule.action is Action.TRANSFORM) != (rule.transform is not None):
                raise RuleError(f"rule {rule.rule_id}: a transform rule needs a transform, others none")
            if not rule.path:
                raise RuleError(f"rule {rule.rule_id}: empty field path")
            if any(isinstance(seg, Key) and type(seg.name) is not str for seg in rule.path):
                raise RuleError(f"rule {rule.rule_id}: a key in the field path is not a string")
        for guard in guards:
            if not guard.count_field or not all(isinstance(s, Key) for s in guard.count_field):
                raise PathError("a guard's count field must be a plain path of keys", 0)
            if not guard.list_path:
                raise RuleError(f"guard {guard.rule_id}: empty list path")
        self.rules: tuple[FieldRule, ...] = tuple(rules)
        self.guards: tuple[Guard, ...] = tuple(guards)
        self._forms = {r.rule_id: r.transform.form for r in rules if r.transform is not None}
        # The output is never nested deeper than the input plus this (a transform's container result).
        self.added_depth = max((r.transform.added_depth() for r in rules if r.transform), default=0)
        specs = [
            c.RuleSpec(r.path, r.action.value, r.transform, r.rule_id, n) for n, r in enumerate(self.rules)
        ]
        self._specs = specs
        self.name = name
        # native: filtered objects of the eager apply run in the compiled loop (veil.redact._cplan) where
        # it is built; None: the default (veil.redact.native.ENABLED). False: the generated Python only.
        self._builder = c.Builder(c.Automaton(specs), name=name,
                                  use_native=native_default.ENABLED if native is None else native)
        self.native = self._builder.native
        self._root: c.Slot = self._builder.slot(self._builder.auto.root, ())
        self._root_native = self.native and type(self._root) is native_default.cplan.Filter
        self._keys: dict[c.Event, tuple[int, Any]] = {}
        self._reports: dict[tuple[Any, ...], Report] = {}
        self._lazy_root: c.Slot | None = None
        self._lazy_depth: int | None = None
        self._lazy_ok: dict[Any, bool] = {}
        # large bodies: read lazily or parsed whole, whichever costs this plan less (the flow measures)
        self.reading = ReadChoice()

    # ---- apply ---------------------------------------------------------------------------------

    def apply(self, doc: Any) -> tuple[Any, Report]:
        ev: dict[Any, Any] = {}
        suppressed = self._run_guards(doc) if self.guards else 0  # iterative: no recursion limit
        out, depth = _run(self._root, doc, ev, _same)
        # the depth a native filter left is the document's only when that filter is the root
        return out, self._report(ev, suppressed, depth if self._root_native else None)

    def lazy_ok(self, each: tuple[FieldPath, FieldPath] | None = None) -> bool:
        """Whether `apply_lazy` pays off and is exact for this plan: no guards, a root read in place
        (a filtered object or an array), keys a proxy can look up (`lazy_key`), and
        for a list route (`each`: the list path and the item's subject path) a list the plan walks
        (nothing on the way dropped, transformed or kept whole), filtered items and filtered objects
        down to the subject, so that every object the list filter reads by key has its key set seen
        by the plan (duplicate keys then fall back to an orjson parse)."""
        hit = self._lazy_ok.get(each)
        if hit is None:
            hit = self._lazy_ok[each] = self._lazy_fits(each)
        return hit

    def _lazy_fits(self, each: tuple[FieldPath, FieldPath] | None) -> bool:
        st = self._builder.auto.root
        if self.guards or not c.walks_lazily(st):
            return False
        names = [seg.name for spec in self._specs for seg in spec.path if isinstance(seg, Key)]
        if each is not None:
            names += [seg.name for path in each for seg in path if isinstance(seg, Key)]
        if not all(lazy_key(n) for n in names):
            return False
        if each is None:
            return True
        list_path, subject_path = each
        # Every container down to the items is walked by the lazy plan itself: not dropped, transformed
        # or kept whole, and not handed to an eager closure (which would read the items plain).
        for seg in list_path:
            if isinstance(seg, Key) and c.filters(st):
                st = st.child(seg.name)
            elif isinstance(seg, Each) and st.arr_ok and c.walks_lazily(st):
                st = st.elem()
            else:
                return False
        for seg in subject_path[:-1]:
            if not (c.filters(st) and isinstance(seg, Key)):
                return False
            st = st.child(seg.name)
        return c.filters(st)

    def apply_lazy(self, doc: Any) -> tuple[Any, Report]:
        """`apply` for a lazy document (veil.redact.lazy): the same output and report, built from the
        parts the plan reads. Raises NotLazy when the document has an object with duplicate keys (an
        orjson parse keeps the last, a lazy lookup the first): the caller applies to an orjson parse.
        Only for plans with `lazy_ok()`."""
        root = self._lazy_root
        if root is None:
            lazy = c.Builder(self._builder.auto, lazy=True, name=self.name, use_native=self._builder.use_native)
            lazy.sources = self._builder.sources
            self._lazy_depth = c.lazy_depth(self._builder.auto.root)
            root = self._lazy_root = lazy.slot(self._builder.auto.root, ())
        ev: dict[Any, Any] = {}
        out, _ = _run(root, doc, ev, materialize)  # a depth here is a part's made plain: not reported
        for key, n in ev.items():
            if isinstance(key, c.Shape) and any(has_duplicate_keys(sig) for sig in n):
                raise NotLazy("an object has duplicate keys")
        # nothing made plain whole: the output is no deeper than the plan's own structure
        return out, self._report(ev, 0, None if c.MATERIALIZED in ev else self._lazy_depth)

    def _run_guards(self, doc: Any) -> int:
        n = 0
        for g in self.guards:
            names = [s.name for s in g.count_field if isinstance(s, Key)]
            for _, arr in list(_find_arrays(doc, g.list_path)):
                kept = [x for x in arr if _count_ok(x, names, g.k)]
                n += len(arr) - len(kept)
                arr[:] = kept
        return n

    def _resolve(self, key: c.Event) -> tuple[int, Any]:
        """Event → (report field index, report key); cached, so templates are formatted once."""
        hit = self._keys.get(key)
        if hit is None:
            t = template(key.tmpl)
            hit = (0, t) if key.fate is c.Fate.REMOVED else (int(key.fate), (t, key.rule_id))
            if len(self._keys) < c.MAX_CLOSURES:
                self._keys[key] = hit
        return hit

    def _report(self, ev: dict[Any, Any], suppressed: int, depth: int | None = None) -> Report:
        """The report for one apply's events. Documents of one shape give the same events, so the
        report is built once per event signature and shared (reports are read, never changed).
        `depth`: how deep the output is nested at most, when the apply knows (a lazy one)."""
        if not ev:
            return Report(suppressed=suppressed, depth=depth)
        sig = (suppressed, depth, *[(k, n if type(n) is int else tuple(n.items())) for k, n in ev.items()])
        try:
            hit = self._reports.get(sig)
        except TypeError:  # an unhashable key in a shape signature cannot occur with JSON; be safe
            return self._build_report(ev, suppressed, depth=depth)
        if hit is None:
            share = len(self._reports) < _MAX_REPORTS and len(sig) <= _MAX_SIG_KEYS
            hit = self._build_report(ev, suppressed, share, depth)
            if share:
                self._reports[sig] = hit
        return hit

    def _build_report(self, ev: dict[Any, Any], suppressed: int, shared: bool = False,
                      depth: int | None = None) -> Report:
        rep = Report(suppressed=suppressed, shared=shared, depth=depth)
        targets: tuple[dict[Any, int], ...] = (rep.removed, rep.dropped, rep.transformed, rep.type_errors)
        resolve = self._resolve
        for key, n in ev.items():
            if key is c.MATERIALIZED:
                continue
            if isinstance(key, c.Shape):
                for sig, m in n.items():
                    hits = key.seen.get(sig)
                    if hits is None:
                        hits = [resolve(k) for k in key.classify(sig)]
                        if len(key.seen) < _MAX_SIGS and len(sig) <= _MAX_SIG_KEYS:
                            key.seen[sig] = hits
                    for i, rk in hits:
                        tgt = targets[i]
                        tgt[rk] = tgt.get(rk, 0) + m
            else:
                i, rk = resolve(key)
                tgt = targets[i]
                tgt[rk] = tgt.get(rk, 0) + n
                if i == c.Fate.TRANSFORMED:
                    rep.transformed_at[key.tmpl] = self._forms.get(key.rule_id)
        return rep

    # ---- what it is ---------------------------------------------------------------------------------

    @property
    def sources(self) -> list[tuple[str, str]]:
        """(file name, source) of the code generated for this plan so far (filtered objects; closures
        built on first use are added when they are)."""
        return list(self._builder.sources)

    def describe(self, location_of: Callable[[int], str] | None = None) -> str:
        """The plan as text: its statements in the order they decide (rule id, action, path, where),
        the guards, then the generated source."""
        lines = [f"plan {self.name}"]
        for r in self.rules:
            what = r.action.value if r.transform is None else f"transform {r.transform.name}"
            at = f"  ({location_of(r.rule_id)})" if location_of else ""
            cat = f" @{r.category}" if r.category else ""
            lines.append(f"  #{r.rule_id:<3} {what:<20} {format_path(r.path)}{cat}{at}")
        for g in self.guards:
            at = f"  ({location_of(g.rule_id)})" if location_of else ""
            lines.append(f"  #{g.rule_id:<3} {'suppress':<20} {format_path(g.list_path)} where "
                         f"{format_path(g.count_field)} < {g.k}{at}")
        for filename, source in self.sources:
            lines.append("")
            lines.append(f"# ---- {filename}")
            lines.extend(source.rstrip("\n").splitlines())
        return "\n".join(lines)

    # ---- static questions ------------------------------------------------------------------------

    def fate_at(self, path: FieldPath) -> tuple[str, int] | None:
        """The fate the plan gives every value at `path` (keys, `*` and `[*]`), decided at the path or
        above it: ("dropped" | "transformed", rule_id), ("kept" | "removed", -1), or None when it depends
        on what lies below (or `path` has `**`). The compiled automaton answers: no second reading of the
        rules."""
        st = self._builder.auto.root
        for seg in path:
            if st.kind != c.VISIT:
                break
            if isinstance(seg, Key):
                st = st.child(seg.name)
            elif isinstance(seg, AnyKey):
                st = st.child(c.OTHER)
            elif isinstance(seg, Each):
                st = st.elem()
            else:
                return None
        if st.kind in (c.DROPPED, c.TRANSFORMED):
            assert st.rule is not None
            return (st.kind, st.rule.rule_id)
        if st.kind == c.WHOLE:
            return ("kept", -1)
        if st.kind == c.REMOVED:
            return ("removed", -1)
        return None

    def outline(self, tmpl: tuple[str | int, ...]) -> Outline | None:
        """What the plan's output may hold at the locations of template `tmpl` (keys, 0 for indices), or
        None when it may hold anything there (kept whole, inside a transformed value, or objects whose
        unknown keys are kept or looked into). Readers of the output (veil.redact.categories) specialize
        their walk to it."""
        st = self._builder.auto.root
        for seg in tmpl:
            if st.kind in (c.REMOVED, c.DROPPED):
                return _NOTHING
            if st.kind != c.VISIT:
                return None
            st = st.child(seg) if isinstance(seg, str) else st.elem()
        if st.kind == c.TRANSFORMED:
            assert st.rule is not None and st.rule.transform is not None
            return Outline(False, (), False, True, st.rule.transform.form)
        if st.kind in (c.REMOVED, c.DROPPED):
            return _NOTHING
        if st.kind != c.VISIT or c._scrubs(st) or (st.obj_ok and not c.filters(st)):
            return None
        keys = tuple(k for k in st.named if st.child(k).kind not in (c.REMOVED, c.DROPPED)) if st.obj_ok else ()
        return Outline(st.covered, keys, st.arr_ok, False)

    # ---- explain -------------------------------------------------------------------------------

    def explain(self, doc: Any) -> list[FieldFate]:
        """The fate of every node of `doc` (root first, then depth first), without mutating it."""
        suppressed = self._mark_guards(doc)
        out: list[FieldFate] = []
        starts = [positions(s.path, ()) for s in self._specs]
        try:
            self._explain(doc, (), starts, None, None, suppressed, out)
        except RecursionError as exc:
            raise DocumentTooDeep("document is nested too deeply to explain") from exc
        return out

    def _explain(
        self,
        node: Any,
        where: tuple[str | int, ...],
        states: list[frozenset[int]],
        cover: int | None,
        inherited: tuple[str, int] | None,
        suppressed: dict[tuple[str | int, ...], int],
        out: list[FieldFate],
    ) -> None:
        fate = inherited
        if where in suppressed:  # guards run first, even inside a dropped or transformed value
            fate = ("suppressed", suppressed[where])
        if fate is None:
            hits = [s for s, st in zip(self._specs, states, strict=True) if len(s.path) in st]
            drops = sorted((s.rule_id, s.order) for s in hits if s.action == "drop")
            trans = sorted((s.rule_id, s.order) for s in hits if s.action == "transform")
            keeps = sorted((s.rule_id, s.order) for s in hits if s.action == "keep")
            if drops:
                fate = ("dropped", drops[0][0])
            elif trans:
                fate = ("transformed", trans[0][0])
            elif cover is not None or keeps:
                if cover is None:
                    cover = keeps[0][0]
                out.append(FieldFate(where, template(where), "kept", cover))
            elif self._can_hold(node, states):
                out.append(FieldFate(where, template(where), "kept", -1))
            else:
                fate = ("removed", -1)
        if fate is not None:
            out.append(FieldFate(where, template(where), fate[0], fate[1]))
        if isinstance(node, dict):
            for k, v in node.items():
                nxt = [step(s.path, st, k) for s, st in zip(self._specs, states, strict=True)]
                self._explain(v, (*where, k), nxt, cover, fate, suppressed, out)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                nxt = [step(s.path, st, i) for s, st in zip(self._specs, states, strict=True)]
                self._explain(v, (*where, i), nxt, cover, fate, suppressed, out)

    def _can_hold(self, node: Any, states: list[frozenset[int]]) -> bool:
        """Whether some keep/transform may still match below this container, through its kind."""
        if isinstance(node, dict):
            through: tuple[type, ...] = (Key, AnyKey, Deep)
        elif isinstance(node, list):
            through = (Each, Deep)
        else:
            return False
        return any(
            i < len(spec.path) and isinstance(spec.path[i], through)
            for spec, st in zip(self._specs, states, strict=True)
            if spec.action != "drop"
            for i in st
        )

    def _mark_guards(self, doc: Any) -> dict[tuple[str | int, ...], int]:
        marked: dict[tuple[str | int, ...], int] = {}
        for g in self.guards:
            names = [s.name for s in g.count_field if isinstance(s, Key)]
            for where, arr in list(_find_arrays(doc, g.list_path, marked)):
                for i, x in enumerate(arr):
                    at = (*where, i)
                    if at not in marked and not _count_ok(x, names, g.k):
                        marked[at] = g.rule_id
        return marked


def _run(root: c.Slot, doc: Any, ev: dict[Any, Any], whole: Callable[[Any], Any]) -> tuple[Any, int | None]:
    """A plan's root slot applied to `doc` (`whole`: what a root kept whole becomes; None when removed),
    and the depth the last native filter to return left in `ev` (_cplan.c), taken out of the events."""
    if root is c.WHOLE:
        return whole(doc), None
    if isinstance(root, tuple):
        ev[root] = 1
        return None, None
    try:
        out = root(doc, ev)
    except RecursionError as exc:
        raise DocumentTooDeep("document is nested too deeply to redact") from exc
    depth: int | None = ev.pop(native_default.DEPTH, None)
    return (None if out is c.GONE else out), depth


def _same(doc: Any) -> Any:
    return doc


def _find_arrays(
    doc: Any, path: FieldPath, skip: dict[tuple[str | int, ...], int] | None = None
) -> Iterator[tuple[tuple[str | int, ...], list[Any]]]:
    """Arrays the path matches (skipping suppressed subtrees), outermost first."""
    stack: list[tuple[Any, tuple[str | int, ...], frozenset[int]]] = [(doc, (), positions(path, ()))]
    while stack:
        node, where, st = stack.pop()
        if skip and where in skip:
            continue
        if len(path) in st and isinstance(node, list):
            yield where, node
        items: Any = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
            node, list) else ()
        for k, v in reversed(list(items)):
            nxt = step(path, st, k)
            if nxt:
                stack.append((v, (*where, k), nxt))


def _count_ok(item: Any, names: list[str], k: int) -> bool:
    v = item
    for name in names:
        if not isinstance(v, dict) or name not in v:
            return False
        v = v[name]
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= k
