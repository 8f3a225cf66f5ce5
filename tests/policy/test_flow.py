"""The request flow's own edges (veil.policy.flow), in-process: when the upstream is called, what a
report-only pass-through discloses, and requests that must never be forwarded whatever the mode."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from veil.config import FlowSettings
from veil.consent.store import ConsentState, Status
from veil.policy.cases import Request, Response
from veil.policy.compile import CompiledPolicy
from veil.policy.flow import decide
from veil.policy.load import load_policy
from veil.policy.testing import CaseConsent, RecordedExchange, caller_view, request_facts, run_sync
from veil.reasons import Reason

NOW = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = """
purpose p { description "d" basis consent consent "k" retention 1 year recipients "r" }
caller c { key sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa may p }
category contact = email
category identity = name
route POST /recs { subject request_body.customer for p { keep recs } }
route GET /orders/{id} { subject body.customer.id for p { keep order, customer.id, customer.email } }
route GET /users/{id} { subject path.id mode report-only for p { keep name } }
route GET /list { each items[*] subject id for p { keep items[*].id, items[*].tags, items[*].h[*].t } }
"""
GIVEN = {"k": ConsentState("k", Status.GIVEN, NOW)}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    f = tmp_path_factory.mktemp("flow") / "p.veil"
    f.write_text(POLICY)
    return load_policy([Path(f)])


def run(policy: CompiledPolicy, req: Request, resp: Response, consent: dict[str, dict[str, ConsentState]],
        settings: FlowSettings | None = None) -> tuple[object, RecordedExchange]:
    settings = settings or FlowSettings()
    view, token = caller_view(policy, "c")
    ex = RecordedExchange(req, resp)
    out = run_sync(decide(view, request_facts(req, token, settings), ex, CaseConsent(consent), settings, NOW))
    return out, ex


def test_a_request_body_subject_is_judged_before_the_upstream_and_forwarded_as_read(policy: CompiledPolicy
                                                                                    ) -> None:
    body = b'{"customer": "u1", "page": 2}'
    req = Request("POST", "/recs", caller="c", purposes=("p",), body=body)
    out, ex = run(policy, req, Response(body={"recs": [1]}, has_body=True), {"u1": GIVEN})
    assert out.reason is Reason.OK and out.subject == "u1" and ex.forwarded == body  # type: ignore[attr-defined]
    out, ex = run(policy, req, Response(body={"recs": [1]}, has_body=True), {})
    assert out.reason is Reason.CONSENT_MISSING and not ex.called  # type: ignore[attr-defined]


def test_a_body_read_in_part_is_never_forwarded_even_in_report_only(policy: CompiledPolicy) -> None:
    req = Request("POST", "/recs", caller="c", purposes=("p",), body=b'{"customer": "u1"}' + b" " * 100)
    small = FlowSettings(mode="report-only", max_request_body_bytes=10)
    out, ex = run(policy, req, Response(body={"recs": [1]}, has_body=True), {"u1": GIVEN}, small)
    assert out.reason is Reason.REQUEST_BODY_TOO_LARGE and not out.report_only  # type: ignore[attr-defined]
    assert not ex.called


def test_a_response_body_subject_is_judged_before_anything_leaves(policy: CompiledPolicy) -> None:
    req = Request("GET", "/orders/o1", caller="c", purposes=("p",))
    answer = Response(body={"order": "o1", "customer": {"id": "u1", "email": "a@x", "name": "A"}}, has_body=True)
    out, ex = run(policy, req, answer, {"u1": GIVEN})
    assert out.reason is Reason.OK and ex.called and out.subject == "u1"  # type: ignore[attr-defined]
    assert out.disclosed == {"contact": {"clear"}}  # type: ignore[attr-defined]
    out, _ = run(policy, req, answer, {})
    assert out.reason is Reason.CONSENT_MISSING and out.body == b"" and out.disclosed == {}  # type: ignore
    out, _ = run(policy, req, Response(body={"order": "o1"}, has_body=True), {"u1": GIVEN})
    assert out.reason is Reason.SUBJECT_UNIDENTIFIED  # type: ignore[attr-defined]


def test_report_only_discloses_the_whole_answer(policy: CompiledPolicy) -> None:
    """A report-only route passes the answer on unchanged: its record must say what that carried, and
    whose it was, even when enforcing would have blocked."""
    req = Request("GET", "/users/u9", caller="c", purposes=("p",))
    answer = Response(body={"name": "A", "email": "a@x"}, has_body=True)
    out, _ = run(policy, req, answer, {})
    assert out.report_only and out.reason is Reason.CONSENT_MISSING and out.released  # type: ignore[attr-defined]
    assert out.disclosed == {"contact": {"clear"}, "identity": {"clear"}}  # type: ignore[attr-defined]
    assert out.subject == "u9"  # type: ignore[attr-defined]
    out, _ = run(policy, req, Response(raw=b"not json", content_type="text/plain"), {})
    assert out.released and out.disclosed is None  # type: ignore[attr-defined]
    # refused before admission (an unknown caller), yet passed on: still whose data it was
    settings = FlowSettings()
    out = run_sync(decide(policy, request_facts(req, "wrong-key", settings), RecordedExchange(req, answer),
                          CaseConsent({}), settings, NOW))
    assert out.reason is Reason.UNKNOWN_CALLER and out.released and out.subject == "u9"


def test_the_depth_limit_holds_on_a_lazy_list_whether_or_not_the_walk_is_skipped(tmp_path: Path) -> None:
    """A lazily read list whose output is only the plan's structure (here 5 deep) skips the depth walk;
    a container kept whole (`tags`) makes the walk run, and what is too deep is refused. (Lazy reading is
    the path of plans the native loop does not run: those plans are made here.)"""
    (tmp_path / "p.veil").write_text(POLICY)
    policy = load_policy([tmp_path / "p.veil"])
    for route in policy.routes:
        for rule in route.rules.values():
            rule.plan.native = False
    req = Request("GET", "/list", caller="c", purposes=("p",))
    flat = {"items": [{"id": f"u{i}", "tags": "t", "h": [{"t": 1, "x": [[[1]]]}]} for i in range(3)]}
    deep = {"items": [{"id": "u0", "tags": [[[["x"]]]]}]}
    consent = {f"u{i}": GIVEN for i in range(3)}
    for limit, body, want in ((5, flat, Reason.OK), (4, flat, Reason.BODY_INVALID), (5, deep, Reason.BODY_INVALID),
                              (7, deep, Reason.OK)):
        settings = FlowSettings(max_json_depth=limit, lazy_json_min_bytes=1)
        out, _ = run(policy, req, Response(body=body, has_body=True), consent, settings)
        assert out.reason is want, (limit, body)  # type: ignore[attr-defined]
        if want is Reason.OK:  # read lazily; the plan's structure is 5 deep, tags kept whole make it unknown
            assert out.report.depth == (5 if body is flat else None)  # type: ignore[attr-defined]


@pytest.mark.skipif(not __import__("veil.redact.native", fromlist=["x"]).ENABLED, reason="no native loop here")
def test_a_native_plan_reads_large_bodies_both_ways_then_the_cheaper_with_the_same_answer(tmp_path: Path) -> None:
    """ReadChoice through the flow: the first bodies alternate between lazy and whole reading, each
    costed; every answer is the same; then the plan keeps to one way."""
    from veil.redact.reading import ReadChoice

    (tmp_path / "p.veil").write_text(POLICY)
    policy = load_policy([tmp_path / "p.veil"])
    (rule,) = [r for route in policy.routes if route.template == "/list" for r in route.rules.values()]
    req = Request("GET", "/list", caller="c", purposes=("p",))
    body = {"items": [{"id": f"u{i}", "tags": ["a", {"b": i}], "h": [{"t": i, "x": "y" * 40}], "drop": "z" * 50}
                      for i in range(300)]}
    consent = {f"u{i}": GIVEN for i in range(0, 300, 2)}
    settings = FlowSettings(lazy_json_min_bytes=1024)
    answers = set()
    for _ in range(2 * ReadChoice.PROBES + 3):
        out, _ = run(policy, req, Response(body=body, has_body=True), consent, settings)
        assert out.reason is Reason.OK  # type: ignore[attr-defined]
        answers.add(out.body)  # type: ignore[attr-defined]
    assert len(answers) == 1
    state = rule.plan.reading.state()
    assert all(v is not None and v > 0 for v in state["cpu_s_per_mib"].values())
