"""The bench's shape corpus: seeded, valid policies, leaf counts that are what the real plan does, and
a shape enforced by a real veil over HTTP."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest

from veil.bench import SHAPE_NAMES, VeilCase
from veil.bench import servers as bench_servers
from veil.bench.fieldcost import measure
from veil.bench.inproc import ShapeRun, leaves, load_shape_policy
from veil.bench.shapes import SHAPES, Shape, build, corpus
from veil.bench.veil_factory import factory
from veil.cli import main
from veil.redact.items import subject_at


def _plain(shapes: list[Shape]) -> list[tuple[object, ...]]:
    return [(s.name, s.body, dict(s.policy_files), s.path, s.headers, s.subjects, s.consented) for s in shapes]


def test_names_are_the_bench_rows() -> None:
    assert SHAPES == SHAPE_NAMES
    assert [s.name for s in corpus(1, 5, count=False)] == list(SHAPES)


def test_a_seed_gives_the_same_corpus() -> None:
    assert _plain(corpus(7, 40, count=False)) == _plain(corpus(7, 40, count=False))
    # a shape does not depend on which others are built with it
    assert _plain([build("deep", 7, 40, count=False)]) == _plain(corpus(7, 40, ("deep",), count=False))


def test_seeds_differ() -> None:
    one, two = corpus(1, 40, count=False), corpus(2, 40, count=False)
    for a, b in zip(one, two, strict=True):
        assert a.consented != b.consented, a.name
        if a.name == "demo":  # the demo's own data and the example policies: only consent varies
            continue
        assert a.body != b.body and a.policy_files != b.policy_files and a.subjects != b.subjects, a.name


def test_sizes_and_consent_share() -> None:
    for s in corpus(3, 200, count=False):
        per_item = len(s.body) / s.items
        assert 500 <= per_item <= 2048, (s.name, per_item)
        assert len(orjson.loads(s.body)["items"]) == 200
        assert len(s.consented) == 180 and s.consented <= set(s.subjects)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_policy_passes_check_strict(seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for s in corpus(seed, 5, count=False):
        folder = tmp_path / f"{seed}-{s.name}"
        folder.mkdir()
        for name, text in s.policy_files.items():
            (folder / name).write_text(text, encoding="utf-8")
        assert main(["check", "--strict", str(folder)]) == 0, (s.name, capsys.readouterr())


def _explain_counts(shape: Shape) -> tuple[int, int, int]:
    """Leaves by fate from the plan's own explain (the reference semantics) on the consented items,
    every leaf of a withdrawn item counted as dropped."""
    policy = load_shape_policy(shape)
    found = policy.match("GET", shape.path.partition("?")[0])
    assert found is not None and found[0].each is not None
    route = found[0]
    rule = route.rules[shape.purpose]
    doc = orjson.loads(shape.body)
    subject_path = route.each[1]
    keep = [it for it in doc["items"] if subject_at(it, subject_path) in shape.consented]
    gone = sum(leaves(it) for it in doc["items"]) - sum(leaves(it) for it in keep)
    doc["items"] = keep
    fates = rule.plan.explain(doc)
    kept = dropped = transformed = 0

    def at(path: tuple[str | int, ...]) -> object:
        node: object = doc
        for step in path:
            node = node[step]  # type: ignore[index]
        return node

    for f in fates:
        if isinstance(at(f.path), (dict, list)):
            continue  # a container: its scalars have fates of their own
        if f.fate == "kept":
            kept += 1
        elif f.fate == "transformed":
            transformed += 1
        else:
            dropped += 1
    return kept, dropped + gone, transformed


@pytest.mark.parametrize("name", SHAPES)
def test_leaf_counts_are_what_the_plan_does(name: str) -> None:
    shape = build(name, 4, 60)
    total = leaves(orjson.loads(shape.body))
    assert shape.kept_leaves + shape.dropped_leaves + shape.transformed_leaves == total
    assert shape.kept_leaves > 0 and shape.dropped_leaves > 0
    assert (shape.kept_leaves, shape.dropped_leaves, shape.transformed_leaves) == _explain_counts(shape)
    if name in ("issue", "demo"):
        assert shape.transformed_leaves == len(shape.consented)  # one hashed field per kept item
    if name == "transforms":
        assert shape.transformed_leaves > shape.kept_leaves


def test_field_costs_are_measured() -> None:
    shape = build("transforms", 5, 30)
    cost = measure(shape, repeats=1)
    assert (cost.kept, cost.dropped, cost.transformed) == (shape.kept_leaves, shape.dropped_leaves,
                                                           shape.transformed_leaves)
    assert cost.us_per_request > 0
    assert cost.us_per_dropped is not None and cost.us_per_dropped > 0
    assert cost.us_per_kept is not None and cost.us_per_transformed is not None


@pytest.mark.slow
def test_a_veil_enforces_a_shape_over_http(tmp_path: Path) -> None:
    shape = build("nested_arrays", 6, 40)  # no transforms: the in-process flow's output is exact
    expected = orjson.loads(ShapeRun(shape).once().body)
    with bench_servers.start_fast_upstream({shape.path.partition("?")[0]: shape.body}, tmp_path) as upstream:
        case = VeilCase("enforce_list", upstream.url, tmp_path, bench_servers.free_port(),
                        bench_servers.free_port(), "c-000000", (), shape)
        made = factory(case)
        with bench_servers.start_veil(made.config_path, env=made.env) as veil:
            req = urllib.request.Request(veil.url + made.path, headers=dict(made.headers))
            with urllib.request.urlopen(req, timeout=10) as resp:
                got = orjson.loads(resp.read())
    assert got == expected
    ids = [it["id"] for it in got["items"]]
    assert set(ids) == shape.consented and len(ids) == len(shape.consented)
    sent = orjson.loads(shape.body)["items"]
    assert all(set(it) < set(src) for it, src in zip(got["items"], [x for x in sent if x["id"] in shape.consented],
                                                      strict=True))
