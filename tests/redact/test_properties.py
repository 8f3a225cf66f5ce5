"""Property tests: the compiled `apply` against the rules and against `explain` (a direct reading)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.redact import Action, FieldPlan, FieldRule, Guard, compile_plan, matches
from veil.redact import transforms as tr
from veil.redact.categories import CategoryIndex, Walker
from veil.redact.paths import AnyKey, Deep, Each, FieldPath, Key, Segment
from veil.redact.transforms import Transform, TransformTypeError

KEYS = ["a", "b", "id", "x y"]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text("pqrs", max_size=7),
    st.sampled_from(["2024-02-29", "10.1.2.3", "::1"]),
)
documents = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS), kids, max_size=4)
    ),
    max_leaves=12,
)
segments: st.SearchStrategy[Segment] = st.one_of(
    st.sampled_from(KEYS).map(Key), st.just(AnyKey()), st.just(Each()), st.just(Deep())
)
paths: st.SearchStrategy[FieldPath] = st.lists(segments, min_size=1, max_size=4).map(tuple)

HIDING: list[Transform] = [tr.hash(bytes(32)), tr.mask(), tr.mask(1, 0), tr.mask(0, 1), tr.mask(1, 1)]
SAFE: list[Transform] = [*HIDING, tr.null(), tr.replace("R"), tr.replace(0)]
SCALAR: list[Transform] = [
    *SAFE, tr.prefix(2), tr.bucket(10), tr.bucket(2.5), tr.date("month"), tr.round_(1), tr.ip(),
]
ANY: list[Transform] = [*SCALAR, tr.replace({"R": [1]})]  # a replaced container is new data, not a field


@st.composite
def rule_sets(draw: st.DrawFn, pool: list[Transform]) -> list[FieldRule]:
    n = draw(st.integers(0, 6))
    ids = draw(st.permutations(list(range(n))))
    out = []
    for i in range(n):
        action = draw(st.sampled_from(list(Action)))
        t = draw(st.sampled_from(pool)) if action is Action.TRANSFORM else None
        out.append(FieldRule(draw(paths), action, t, rule_id=ids[i]))
    return out


guard_lists = st.lists(
    st.builds(Guard, paths, st.sampled_from(KEYS).map(lambda k: (Key(k),)), st.integers(-5, 500),
              st.integers(100, 110)),
    max_size=1,
)


def nodes(doc: Any, where: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield where, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from nodes(v, (*where, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from nodes(v, (*where, i))


def prefixes(where: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    for n in range(len(where) + 1):
        yield where[:n]


@SETTINGS
@given(documents, rule_sets(SCALAR), guard_lists)
def test_every_output_leaf_is_covered_and_not_dropped(
    doc: Any, rules: list[FieldRule], guards: list[Guard]
) -> None:
    out, _ = compile_plan(rules, guards).apply(doc)
    if out is None:
        return  # removed root (or a kept null): nothing is revealed
    covering = [r.path for r in rules if r.action is not Action.DROP]
    dropping = [r.path for r in rules if r.action is Action.DROP]
    for where, value in nodes(out):
        covered = any(matches(p, w) for p in covering for w in prefixes(where))
        if isinstance(value, dict | list) and (value or not covered):
            continue  # leaves are checked; an empty container may be kept on the way to a kept path
        assert covered, where
        assert not any(matches(p, w) for p in dropping for w in prefixes(where)), where


def strings(doc: Any) -> Iterator[str]:
    for _, v in nodes(doc):
        if isinstance(v, str):
            yield v


@SETTINGS
@given(documents, rule_sets(SAFE), guard_lists)
def test_hashed_and_masked_values_never_appear_in_clear(
    doc: Any, rules: list[FieldRule], guards: list[Guard]
) -> None:
    hiding = [r.path for r in rules if r.action is Action.TRANSFORM and r.transform in HIDING]
    secret_roots = {w for w, _ in nodes(doc) if any(matches(p, w) for p in hiding)}
    secrets: set[str] = set()
    public: list[str] = []
    for where, v in nodes(doc):
        if isinstance(v, str):
            inside = any(w in secret_roots for w in prefixes(where))
            if inside and len(v) >= 4:
                secrets.add(v)
            elif not inside:
                public.append(v)
    out, _ = compile_plan(rules, guards).apply(copy.deepcopy(doc))
    for s in secrets:
        if any(s in p for p in public):
            continue  # the same text also sits at a field that is not hidden
        assert not any(s in o for o in strings(out)), s


def expected_from_explain(plan: FieldPlan, doc: Any) -> Any:
    fates = {f.path: f for f in plan.explain(doc)}
    by_id = {r.rule_id: r.transform for r in plan.rules}
    gone = object()

    def unsuppressed(node: Any, where: tuple[str | int, ...]) -> Any:
        if isinstance(node, dict):
            return {k: unsuppressed(v, (*where, k)) for k, v in node.items()
                    if fates[(*where, k)].fate != "suppressed"}
        if isinstance(node, list):
            return [unsuppressed(v, (*where, i)) for i, v in enumerate(node)
                    if fates[(*where, i)].fate != "suppressed"]
        return node

    def build(node: Any, where: tuple[str | int, ...]) -> Any:
        fate = fates[where]
        if fate.fate == "transformed":
            t = by_id[fate.rule_id]
            assert t is not None
            try:
                return t(unsuppressed(node, where))
            except TransformTypeError:
                return None
        if fate.fate != "kept":
            return gone
        if isinstance(node, dict):
            items = ((k, build(v, (*where, k))) for k, v in node.items())
            return {k: v for k, v in items if v is not gone}
        if isinstance(node, list):
            return [v for v in (build(x, (*where, i)) for i, x in enumerate(node)) if v is not gone]
        return node

    out = build(doc, ())
    return None if out is gone else out


@SETTINGS
@given(st.one_of(st.tuples(documents, rule_sets(ANY)), st.deferred(lambda: listed())), guard_lists)
def test_apply_agrees_with_explain(case: tuple[Any, list[FieldRule]], guards: list[Guard]) -> None:
    """On random documents, and on lists whose items the rules name (arrays of filtered objects, whose
    loops the generated code writes out)."""
    doc, rules = case
    plan = compile_plan(rules, guards)
    before = copy.deepcopy(doc)
    want = expected_from_explain(plan, doc)
    assert doc == before
    got, report = plan.apply(doc)
    assert got == want
    fates = plan.explain(before)
    top_suppressed = [f for f in fates if f.fate == "suppressed" and (len(f.path) == 0 or not any(
        g.path == f.path[:-1] and g.fate == "suppressed" for g in fates))]
    assert report.suppressed >= len(top_suppressed)


@settings(max_examples=80, deadline=None)
@given(documents, rule_sets(ANY))
def test_apply_is_repeatable_with_one_plan(doc: Any, rules: list[FieldRule]) -> None:
    plan = compile_plan(rules)
    first = plan.apply(copy.deepcopy(doc))
    assert plan.apply(copy.deepcopy(doc)) == first


@st.composite
def category_rule_sets(draw: st.DrawFn) -> list[FieldRule]:
    """Keeps, transforms and `drop **.name` (a category dropped anywhere): kept subtrees are scrubbed."""
    out = [FieldRule(draw(paths), Action.KEEP, rule_id=i) for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        out.append(FieldRule(draw(paths), Action.TRANSFORM, tr.mask(), rule_id=len(out)))
    for name in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True)):
        out.append(FieldRule((Deep(), Key(name)), Action.DROP, rule_id=len(out)))
    if draw(st.booleans()):  # a drop of every element or every key below: no longer a plain scrub
        out.append(FieldRule((Deep(), draw(st.sampled_from([Each(), AnyKey()]))), Action.DROP, rule_id=len(out)))
    return out


@SETTINGS
@given(documents, category_rule_sets())
def test_dropped_categories_are_scrubbed_from_kept_subtrees(doc: Any, rules: list[FieldRule]) -> None:
    plan = compile_plan(rules)
    want = expected_from_explain(plan, doc)
    dropped: dict[tuple[str, int], int] = {}
    fates = plan.explain(doc)
    fate_at = {f.path: f.fate for f in fates}
    for f in fates:  # a dropped node counts once, not its contents
        if f.fate == "dropped" and fate_at.get(f.path[:-1]) != "dropped":
            dropped[(f.template, f.rule_id)] = dropped.get((f.template, f.rule_id), 0) + 1
    for _ in range(2):  # the second apply reads the plan's shared report for this shape
        got, report = plan.apply(copy.deepcopy(doc))
        assert got == want
        assert report.dropped == dropped


category_sets = st.lists(st.tuples(
    st.sampled_from(["c1", "c2", "c3"]),
    st.lists(st.one_of(st.sampled_from(KEYS).map(lambda k: (Key(k),)), paths), min_size=1, max_size=2)),
    max_size=4)


def template_of(where: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(0 if isinstance(s, int) else s for s in where)


item_paths: st.SearchStrategy[FieldPath] = st.lists(
    st.one_of(st.sampled_from(KEYS).map(Key), st.sampled_from(KEYS).map(Key), st.just(Each())), min_size=1,
    max_size=2).map(tuple)


item_values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(KEYS), kids, max_size=3)),
    max_leaves=5)


@st.composite
def listed(draw: st.DrawFn) -> tuple[Any, list[FieldRule]]:
    """A list response: items of random shape under `items`; keeps and transforms of paths in the items
    (the filtered objects and arrays a walk is specialized to), and any other rules."""
    doc = {"items": draw(st.lists(st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, item_values),
                                                  min_size=2, max_size=4), min_size=1, max_size=4))}
    rules = []
    for i in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from([Action.KEEP, Action.KEEP, Action.TRANSFORM]))
        t = draw(st.sampled_from(ANY)) if action is Action.TRANSFORM else None
        rules.append(FieldRule((Key("items"), Each(), *draw(item_paths)), action, t, rule_id=i))
    if draw(st.booleans()):
        rules += [FieldRule(r.path, r.action, r.transform, r.rule_id + len(rules)) for r in draw(rule_sets(ANY))]
    return doc, rules


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.tuples(documents, rule_sets(ANY)), listed(), listed()), guard_lists, category_sets)
def test_the_disclosure_walk_specialized_to_a_plan_reads_as_the_plain_walk(
    case: tuple[Any, list[FieldRule]], guards: list[Guard], categories: list[tuple[str, list[FieldPath]]]
) -> None:
    """Walker(plan=...) runs code generated from what the plan lets through; on the plan's output it finds
    what the plain walk finds, at the root and at every node (the items of a list are walked so)."""
    doc, rules = case
    plan = compile_plan(rules, guards)
    out, report = plan.apply(copy.deepcopy(doc))
    if out is None:
        return
    index = CategoryIndex(categories)
    plain, fast = Walker(index, report.transformed_at), Walker(index, report.transformed_at, plan)
    for where, node in nodes(out):
        at = template_of(where)
        assert fast.pairs(node, at) == plain.pairs(node, at), (where, plan.describe())
    assert index.disclosed(out, report.transformed_at, plan=plan) == index.disclosed(out, report.transformed_at)
