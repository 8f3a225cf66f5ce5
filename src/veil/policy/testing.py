"""Running a request in-process through the request flow (veil.policy.flow), without sockets: what
`veil test`, `veil explain`, the conformance cases and the playground use. It is the proxy's flow, not a
copy of it: only the two ports differ (a recorded upstream answer, consent from the case).

    evaluate(policy, request, consent, response, now)  → View        the decision and the body that leaves
    run_case(policy, case)                             → CaseResult  outcome + failures as unified diffs

Tests name callers instead of carrying keys: a named caller is authenticated through a private copy of
the policy whose key index holds only a throw-away key for that caller (`admit_as`); `admit` itself is
unchanged.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from veil.config import FlowSettings
from veil.consent.store import ConsentState
from veil.errors import ConsentUnavailable, Refusal
from veil.policy.cases import (
    Case,
    Consent,
    Coverage,
    Request,
    Response,
    TestFileError,
    View,
    case_from_dict,
    check_expectations,
    decision_locations,
    load_cases,
    load_yaml,
    lookup,
    parse_state,
    parse_time,
)
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.policy.decision import Admitted, Blocked, admit
from veil.policy.flow import Answer, Forward, Outcome, RequestFacts, decide
from veil.reasons import Reason

_TEST_KEY = "veil-policy-test-caller:"  # never a real key: only ever in a private key index copy
T = TypeVar("T")


def admit_as(policy: CompiledPolicy, method: str, path: str, caller: str | None, purposes: Sequence[str],
             *, key: str | None = None) -> Admitted | Blocked:
    """`admit` with the caller named (tests) rather than keyed; `key` tests a real raw key instead."""
    view, token = caller_view(policy, caller, key)
    return admit(view, method, path, [token] if token is not None else [], purposes)


def caller_view(policy: CompiledPolicy, caller: str | None, key: str | None = None
                ) -> tuple[CompiledPolicy, str | None]:
    """(the policy to decide with, the Veil-Key to send) for a request by named caller or raw key."""
    if key is not None or caller is None:
        return policy, key
    view = copy.copy(policy)  # shares the compiled routes; only the key index differs
    token = _TEST_KEY + caller
    found = policy.callers.get(caller)
    view.key_index = {hashlib.sha256(token.encode()).hexdigest(): found} if found else {}
    view._key_cache = {}  # never share the real policy's cache of authenticated keys
    return view, token


class CaseConsent:
    """Consent from a case: subject → key → state ("*" for every other subject); None: the store is down."""

    def __init__(self, consent: Consent) -> None:
        self.consent = consent

    async def current(self, subjects: Sequence[str], keys: Sequence[str]
                      ) -> Mapping[tuple[str, str], ConsentState]:
        if self.consent is None:
            raise ConsentUnavailable("the consent store is down (case: consent unavailable)")
        out: dict[tuple[str, str], ConsentState] = {}
        for s in subjects:
            per = self.consent.get(s, self.consent.get("*", {}))
            for k in keys:
                if k in per:
                    out[(s, k)] = per[k]
        return out


class RecordedExchange:
    """The request's body as given, the upstream's answer as recorded."""

    def __init__(self, request: Request, response: Response) -> None:
        self.request, self.response = request, response
        self.forwarded: bytes | None = None
        self.called = False

    async def request_body(self, limit: int) -> bytes:
        body = self.request.body or b""
        if len(body) > limit:
            raise Refusal(Reason.REQUEST_BODY_TOO_LARGE)
        return body

    async def forward(self, fwd: Forward) -> Answer:
        self.called = True
        self.forwarded = fwd.body
        r = self.response
        return Answer(r.status, r.header_list(), r.payload())


def request_facts(req: Request, token: str | None, settings: FlowSettings) -> RequestFacts:
    """The request as the proxy would see it (ASGI shape)."""
    raw_path, _, query = req.path.partition("?")
    headers: list[tuple[bytes, bytes]] = []
    if token is not None:
        headers.append((b"veil-key", token.encode("utf-8", "surrogateescape")))
    headers += [(b"veil-purpose", p.encode("utf-8")) for p in req.purposes]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in req.headers]
    if req.tcf is not None:
        if settings.tcf_header:
            headers.append((settings.tcf_header.lower().encode(), req.tcf.encode()))
        elif settings.tcf_cookie:
            headers.append((b"cookie", f"{settings.tcf_cookie}={req.tcf}".encode()))
    return RequestFacts(req.method, raw_path.encode("utf-8"), query.encode("utf-8"), headers)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a flow whose ports never wait (in-memory ports) to completion, in or outside an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an in-process flow waited on I/O")


async def evaluate_async(policy: CompiledPolicy, req: Request, consent: Consent, resp: Response, now: datetime,
                         *, settings: FlowSettings | None = None, explain: bool = False) -> Outcome:
    """The flow's Outcome for a request answered by `resp`, with consent from `consent`."""
    settings = settings or FlowSettings()
    view, token = caller_view(policy, req.caller, req.key)
    return await decide(view, request_facts(req, token, settings), RecordedExchange(req, resp),
                        CaseConsent(consent), settings, now, explain=explain)


def view_of(policy: CompiledPolicy, out: Outcome) -> View:
    """What expectations, coverage and `veil explain` read of an outcome."""
    body = orjson.loads(out.body) if out.has_body and out.method != "HEAD" else None  # what leaves
    blocked = out.blocked
    return View(
        decision=out.decision, reason=out.reason.value, status=out.status, body=body,
        filtered=out.filtered, suppressed=out.suppressed,
        rule=out.rule if out.reason is Reason.OK else None,
        selected=out.rule or (_rule_at(policy, blocked) if blocked is not None else None),
        locations=blocked.locations if blocked is not None and out.reason is not Reason.OK else (),
        fates=out.fates, items=out.items,
    )


def evaluate(policy: CompiledPolicy, req: Request, consent: Consent, resp: Response, now: datetime,
             *, fates: bool = False, settings: FlowSettings | None = None) -> View:
    """The decision and the body the proxy would send; `fates=True` also explains every field."""
    out = run_sync(evaluate_async(policy, req, consent, resp, now, settings=settings, explain=fates))
    return view_of(policy, out)


def _rule_at(policy: CompiledPolicy, blocked: Blocked) -> CompiledRule | None:
    """The rule a block names (caller_not_allowed, blocked_by_rule, consent refusals), for coverage."""
    if not blocked.purpose:
        return None
    for route in policy.routes:
        rule = route.rules.get(blocked.purpose)
        if route.template == blocked.route and rule is not None and rule.loc in blocked.locations:
            return rule
    return None


@dataclass
class CaseResult:
    case: Case
    outcome: View
    failures: list[str]
    __test__ = False

    @property
    def ok(self) -> bool:
        return not self.failures


def run_case(policy: CompiledPolicy, case: Case, settings: FlowSettings | None = None) -> CaseResult:
    outcome = evaluate(policy, case.request, case.consent, case.response, case.now, fates=True, settings=settings)
    return CaseResult(case, outcome, check_expectations(case.expect, outcome))


__all__ = [
    "Case",
    "CaseConsent",
    "CaseResult",
    "Consent",
    "Coverage",
    "RecordedExchange",
    "Request",
    "Response",
    "TestFileError",
    "View",
    "admit_as",
    "caller_view",
    "case_from_dict",
    "check_expectations",
    "decision_locations",
    "evaluate",
    "evaluate_async",
    "load_cases",
    "load_yaml",
    "lookup",
    "parse_state",
    "parse_time",
    "request_facts",
    "run_case",
    "run_sync",
    "view_of",
]
