"""The access report equals what the response contained: generated policies (categories, keeps, drops,
transforms) and generated bodies go through the request flow; the decision record is written to a real
decision log and read back by the Art. 15 report; the report's categories and forms must be exactly
those of the fields in the body that was sent — read here from that body, with the transformed
locations taken from the plan's explanation (`FieldPlan.explain`, the slow reference reading)."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.audit import AuditLog, pseudonym, report
from veil.keys import KeyRing, generate_key
from veil.policy.cases import Request, Response
from veil.policy.compile import CompiledPolicy
from veil.policy.load import load_policy
from veil.policy.testing import evaluate_async
from veil.proxy.records import Recorder

KEYS = ["id", "a", "b", "c", "d", "e"]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
FORMS = {"hash": "hash", "mask": "mask", "generalize": "generalize", "null": None, "replace": None}

paths = st.sampled_from(KEYS[1:]) | st.lists(st.sampled_from(KEYS[1:]), min_size=1, max_size=3).map(
    ".".join) | st.sampled_from(["a[*].b", "b[*]", "c.*", "d[*].e", "*.a"])


@st.composite
def policies(draw: st.DrawFn) -> str:
    cats = []
    for i in range(draw(st.integers(1, 4))):
        ps = draw(st.lists(paths, min_size=1, max_size=2, unique=True))
        cats.append(f"category k{i} = {', '.join(ps)}")
    stmts = [f"keep {', '.join(draw(st.lists(paths, min_size=1, max_size=4, unique=True)))}"]
    for _ in range(draw(st.integers(0, 4))):
        verb = draw(st.sampled_from(["keep", "drop", "hash", "mask", "generalize", "null", "replace"]))
        target = draw(paths | st.sampled_from([f"@k{i}" for i in range(len(cats))]))
        tail = {"mask": " last 2", "generalize": " prefix 1", "replace": ' with "x"'}.get(verb, "")
        stmts.append(f"{verb} {target}{tail}")
    return "\n".join([
        'purpose p { description "d" basis contract retention 1 year recipients "r" }',
        "caller c { key sha256:" + "a" * 64 + " may p }",
        *cats,
        "route GET /things/{id} {\n  subject path.id\n  for p {\n    " + "\n    ".join(stmts) + "\n  }\n}",
    ])


scalars = st.one_of(st.text(alphabet="xyz01", max_size=4), st.integers(-5, 50), st.booleans(), st.none())
docs = st.recursive(scalars, lambda kids: st.lists(kids, min_size=1, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS), kids, min_size=1, max_size=4), max_leaves=30)


def oracle(policy: CompiledPolicy, doc: Any, sent: Any) -> dict[str, set[str]]:
    """{category: forms} read off the body that was sent: a field left transformed where the plan's
    explanation says the input's field at that location was transformed, else in clear."""
    rule = policy.routes[0].rules["p"]

    def tmpl(path: tuple[str | int, ...]) -> tuple[str | int, ...]:
        return tuple(0 if isinstance(s, int) else s for s in path)

    # a field path cannot tell array elements apart: a fate holds for a location template (and the sent
    # body's indices differ from the input's where elements were removed)
    transformed = {tmpl(f.path): f.rule_id for f in rule.plan.explain(doc) if f.fate == "transformed"}
    forms = {fr.rule_id: fr.transform.form for fr in rule.plan.rules if fr.transform is not None}
    index = policy.category_index
    out: dict[str, set[str]] = {}

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if tmpl(path) in transformed:
            cat, form = index.of(tmpl(path)), forms.get(transformed[tmpl(path)])
            if cat is not None and form is not None and node is not None:
                out.setdefault(cat, set()).add(form)
            return
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))
        elif node is not None:
            cat = index.of(tmpl(path))
            if cat is not None:
                out.setdefault(cat, set()).add("clear")

    walk(sent, ())
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.dictionaries(st.sampled_from(KEYS), docs, min_size=1, max_size=6))
def test_the_access_report_equals_what_the_response_contained(text: str, body: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "p.veil"
        f.write_text(text)
        policy = load_policy([f])
        out = asyncio.run(evaluate_async(policy, Request("GET", "/things/t-1", caller="c", purposes=("p",)),
                                         {}, Response(body=body, has_body=True), NOW))
        if not out.released:
            return  # nothing left (an enforced body cannot be empty here, but a plan may remove the root)
        sent = orjson.loads(out.body)
        want = oracle(policy, orjson.loads(orjson.dumps(body)), sent)
        assert out.disclosed == want
        ring, pring = (KeyRing.single(bytes.fromhex(generate_key()), k) for k in ("a", "p"))
        rec = Recorder(pring).record(policy, out, "d-1", Recorder(pring).summary(policy, out.rule, out.report))

        async def write() -> None:
            log = AuditLog(Path(tmp) / "audit" / "decisions.log", ring, flush_interval=0)
            await log.start()
            await log.append(rec)
            await log.close()

        asyncio.run(write())
        rep = report([Path(tmp) / "audit"], ring, pseudonym(pring, "t-1"))
        assert rep.verification.ok and len(rep.disclosures) == 1
        assert rep.disclosures[0].categories == {c: tuple(sorted(f)) for c, f in sorted(want.items())}


def test_a_list_response_reports_each_subject_its_own_item(tmp_path: Path) -> None:
    """Items of one list may carry different categories: each subject's report lists its own item's and
    the envelope's, never another subject's."""
    f = tmp_path / "p.veil"
    f.write_text("\n".join([
        'purpose p { description "d" basis contract retention 1 year recipients "r" }',
        "caller c { key sha256:" + "a" * 64 + " may p }",
        "category contact = email", "category health = diagnosis", "category paging = total",
        "route GET /things { each items[*] subject id for p { keep total, items[*].id, items[*].email, "
        "items[*].diagnosis } }",
    ]))
    policy = load_policy([f])
    body = {"total": 2, "items": [{"id": "u1", "email": "u1@example.com"}, {"id": "u2", "diagnosis": "x"}]}
    out = asyncio.run(evaluate_async(policy, Request("GET", "/things", caller="c", purposes=("p",)), {},
                                     Response(body=body, has_body=True), NOW))
    assert out.disclosed == {"contact": {"clear"}, "health": {"clear"}, "paging": {"clear"}}
    assert out.disclosed_by_subject == {"u1": {"contact": {"clear"}, "paging": {"clear"}},
                                        "u2": {"health": {"clear"}, "paging": {"clear"}}}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(st.dictionaries(st.sampled_from(KEYS), docs, min_size=1, max_size=6), min_size=2,
                            max_size=6))
def test_responses_of_one_policy_in_turn_each_report_what_they_contained(text: str, bodies: list[dict[str, Any]]
                                                                        ) -> None:
    """What one response's disclosure walk classified is kept with the plan (CategoryIndex.walker) and
    reused by the next responses of the same policy: each still reports exactly what it contained."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "p.veil"
        f.write_text(text)
        policy = load_policy([f])
        for body in [*bodies, *bodies]:
            out = asyncio.run(evaluate_async(policy, Request("GET", "/things/t-1", caller="c", purposes=("p",)),
                                             {}, Response(body=body, has_body=True), NOW))
            if not out.released:
                continue
            assert out.disclosed == oracle(policy, orjson.loads(orjson.dumps(body)), orjson.loads(out.body))
