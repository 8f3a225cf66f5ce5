"""The request flow, written once. The proxy, `veil test`, `veil explain`, the conformance cases and the
playground all call `decide`; none of them has a copy of any step.

    admit    request facts → Admitted | Blocked            path, headers, route, caller, purpose, rule
    needs    admitted      → Needs                          where the subject comes from, which consent
    judge    subject, consent facts, signals → reason|None  before the upstream when the subject is in the request
    enforce  upstream answer → document                     per-item consent, body subject, field plan, depth
    disclose document      → {category: forms}             what left veil: the decision record, the Art. 15 report

`decide(policy, request, exchange, consent, settings, now)` runs them in order and returns an `Outcome`.
I/O happens only through the two ports it is given: `Exchange` (read the client's body, forward to the
upstream) and `ConsentSource` (the consent store). The proxy passes sockets and the real store; the
in-process runners pass a recorded answer and a store of their own.

When the upstream is called: after admission and, when the subject is in the request (path, query,
header or request body), after its consent is judged. A route whose subject is in the response
(`subject body.customer.id`) and a list route (`each`) call the upstream first; no byte of the answer
leaves before the subject's (or each item's) consent is judged. A purpose whose consent comes from
the store never goes without a subject: the checker refuses such a route, and should one be compiled
anyway the flow answers `subject_missing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson

from veil.config import FlowSettings
from veil.consent import signals
from veil.consent.store import ConsentState
from veil.errors import PathInvalid, Refusal, UpstreamFailure, VeilError
from veil.policy.compile import CompiledPolicy, CompiledRoute, CompiledRule
from veil.policy.decision import Admitted, Blocked, admit, consent_reason, consent_reasons, no_content, status_reason
from veil.policy.normalize import normalize_path
from veil.reasons import Reason
from veil.redact.categories import CategoryIndex, Outlined, Pairs, merge
from veil.redact.engine import FieldFate, Report
from veil.redact.items import keep_items, list_items, subject_at
from veil.redact.lazy import is_lazy
from veil.redact.reading import check_depth, decode_content, parse_json, read_document

OVERRIDE = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_NOT_ENFORCEABLE = "the document cannot be enforced (too deep or not JSON data)"


# ---------------------------------------------------------------- ports
class ConsentSource(Protocol):
    """The consent store as the flow sees it: one batched lookup; absent pairs are missing.
    Raises ConsentUnavailable (a VeilError) when it cannot answer."""

    async def current(self, subjects: Sequence[str], keys: Sequence[str]
                      ) -> Mapping[tuple[str, str], ConsentState]: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """What the upstream answered."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """What to send upstream: the request as it came, on the normalized path."""

    route: CompiledRoute | None  # its `upstream` names the upstream (None: the default)
    path: str  # the normalized path, re-encoded
    body: bytes | None  # the request body the flow read (a request_body subject), or None: stream it
    enforced: bool  # False in report-only mode (the answer is passed on unchanged)


class Exchange(Protocol):
    """The request's I/O: the client's body and the upstream."""

    async def request_body(self, limit: int) -> bytes:
        """The whole request body; Refusal (request_body_too_large, request_body_invalid) when it is
        over `limit` bytes or cut short."""
        ...

    async def forward(self, fwd: Forward) -> Answer:
        """Send the request upstream and read the whole answer. Raises UpstreamFailure."""
        ...


# ---------------------------------------------------------------- facts and outcome
@dataclass(slots=True)
class RequestFacts:
    """A request as the flow reads it (ASGI's shape: header names in lower case, bytes)."""

    method: str
    raw_path: bytes  # as on the wire, without the query
    query: bytes = b""
    headers: Sequence[tuple[bytes, bytes]] = ()
    cert_subject: str | None = None  # the verified client certificate's name (mTLS callers)


@dataclass(slots=True)
class Outcome:
    """Everything the flow decided about one request."""

    reason: Reason = Reason.OK
    method: str = "GET"
    admitted: Admitted | None = None
    blocked: Blocked | None = None
    route: CompiledRoute | None = None
    report_only: bool = False
    path: str | None = None  # the normalized path
    wire_path: str | None = None  # re-encoded for the upstream
    gpc: bool = False
    subject: str | None = None
    subjects: list[str] = field(default_factory=list)  # list routes: the kept items' subjects
    consent: dict[str, str] = field(default_factory=dict)  # consent facts for the record (no values)
    answer: Answer | None = None
    doc: Any = None  # the enforced document (None when blocked or bodiless)
    body: bytes = b""  # what leaves (enforced JSON; empty when blocked or bodiless)
    has_body: bool = False
    report: Report | None = None
    filtered: int = 0  # list items removed for consent
    detail: str | None = None
    # What left veil, by category: the whole response, and per subject where a list response differs.
    disclosed: dict[str, set[str]] | None = field(default_factory=dict)  # None: unknown (report-only, not JSON)
    disclosed_by_subject: dict[str, dict[str, set[str]]] | None = None
    fates: list[FieldFate] = field(default_factory=list)  # explain: every field's fate
    items: list[tuple[int, str | None, str]] = field(default_factory=list)  # explain: (index, subject, verdict)

    @property
    def rule(self) -> CompiledRule | None:
        return self.admitted.rule if self.admitted is not None else None

    @property
    def changed(self) -> bool:
        return self.report is not None and self.report.changed

    @property
    def decision(self) -> str:
        """allow | redact | filter | block (in report-only mode: what enforcing would have decided)."""
        if self.reason is not Reason.OK:
            return "block"
        if self.filtered:
            return "filter"
        return "redact" if self.changed else "allow"

    @property
    def status(self) -> int:
        if self.reason is Reason.OK or (self.reason is Reason.UPSTREAM_STATUS and self.answer is not None):
            return self.answer.status if self.answer is not None else 200
        return self.reason.status

    @property
    def released(self) -> bool:
        """Whether the caller was sent a body carrying the upstream's data: enforced, or passed on
        unchanged in report-only mode (the access report counts exactly these)."""
        if self.method == "HEAD":
            return False
        if self.report_only:
            return self.answer is not None and bool(self.answer.body)
        return self.reason is Reason.OK and self.has_body

    @property
    def suppressed(self) -> int:
        return self.report.suppressed if self.report is not None else 0

    def block(self, reason: Reason, detail: str | None = None) -> Outcome:
        """This outcome refused for `reason` (keeping what is known of the request)."""
        self.reason = reason
        self.detail = detail
        ad = self.admitted
        if ad is not None and self.blocked is None:
            self.blocked = Blocked(reason, ad.route.template, ad.purpose.name, ad.caller.name, (ad.rule.loc,))
        elif self.blocked is not None and self.blocked.reason != reason:
            b = self.blocked
            self.blocked = Blocked(reason, b.route, b.purpose, b.caller, b.locations)
        elif self.blocked is None:
            self.blocked = Blocked(reason, self.route.template if self.route else None)
        self.doc, self.body, self.has_body = None, b"", False
        self.disclosed, self.disclosed_by_subject = {}, None
        return self


@dataclass(frozen=True, slots=True)
class Needs:
    """What consent a rule needs, and where its subject comes from."""

    subject: tuple[str, str] | None  # (source, name or path text): path | query | header | request_body | body
    store_keys: tuple[str, ...]  # consent keys the store must hold as given, per subject
    tcf: bool  # the purpose reads the IAB TCF string of the request
    per_item: bool  # a list route: each item's subject is judged

    @property
    def from_request(self) -> bool:
        return self.subject is not None and self.subject[0] != "body"


def needs(ad: Admitted) -> Needs:
    route, rule = ad.route, ad.rule
    return Needs(route.subject, rule.consent_keys, "tcf" in rule.purpose.sources, route.each is not None)


# ---------------------------------------------------------------- the flow
async def decide(policy: CompiledPolicy, req: RequestFacts, exchange: Exchange, consent: ConsentSource,
                 settings: FlowSettings, now: datetime, *, explain: bool = False) -> Outcome:
    """The decision for one request, and the response body that may leave. `explain` also records every
    field's fate and each list item's verdict (the document is then read eagerly)."""
    out = Outcome(method=req.method)
    keys: list[str] = []
    purposes: list[str] = []
    gpc_values: list[str] = []
    override = upgrade = False
    size = 0
    for name, value in req.headers:
        size += len(name) + len(value)
        if name == b"veil-key":
            keys.append(value.decode("latin-1"))
        elif name == b"veil-purpose":
            purposes.append(value.decode("latin-1"))
        elif name == b"sec-gpc":
            gpc_values.append(value.decode("latin-1"))
        elif name in OVERRIDE:
            override = True
        elif name == b"upgrade" and b"websocket" in value.lower():
            upgrade = True  # veil enforces HTTP responses only; other offers (h2c) are ignored as HTTP allows
    # Protocol hygiene is enforced whatever the mode: these requests never reach the upstream.
    if size > settings.max_header_bytes:
        return out.block(Reason.HEADERS_TOO_LARGE)
    try:
        out.path, out.wire_path = normalize_path(req.raw_path)
    except PathInvalid as exc:
        return out.block(Reason.PATH_INVALID, exc.detail)
    if override:
        return out.block(Reason.METHOD_OVERRIDE)
    if upgrade:
        return out.block(Reason.UPGRADE_REFUSED)
    # 1-3 admit
    admitted = admit(policy, req.method, out.path, keys, purposes, cert_subject=req.cert_subject)
    if isinstance(admitted, Admitted):
        out.admitted, out.route = admitted, admitted.route
    else:
        out.blocked, out.route = admitted, _route_of(policy, admitted, req.method, out.path)
    route = out.route
    out.report_only = ((route.mode if route else None) or settings.mode) == "report-only"
    out.gpc = signals.gpc_from_headers(gpc_values)
    if out.gpc:
        out.consent["gpc"] = "1"
    if out.blocked is not None:
        out.reason = Reason.of(out.blocked.reason)
        if not out.report_only:
            return out
    # 4 subject and consent, when the request names the subject
    forward_body: bytes | None = None
    ad = out.admitted
    if ad is not None:
        need = needs(ad)
        subject: str | None = None
        why: Reason | None = None
        if need.from_request:
            subject, forward_body, why = await _request_subject(ad, need, req, exchange, settings)
            out.subject = subject
            if forward_body is None and need.subject is not None and need.subject[0] == "request_body":
                out.report_only = False  # a body read in part cannot be forwarded whole: refuse, whatever the mode
        if why is None:
            if need.subject is not None and need.subject[0] == "body":
                # judged once the answer names the subject; an opt-out by GPC needs no answer
                if out.gpc and _gpc_applies(ad) and not need.per_item:
                    why = Reason.GPC_OPT_OUT
            elif subject is not None or not need.per_item:
                # no subject: the store cannot be asked (`subject_missing`), signals still count
                why = await judge(ad, subject, req, consent, settings, now, out)
        if why is not None:
            out.block(why)
            if not out.report_only:
                return out
    # 5 forward
    try:
        assert out.wire_path is not None
        out.answer = await exchange.forward(Forward(route, out.wire_path, forward_body, not out.report_only))
    except UpstreamFailure as exc:
        out.report_only = False  # nothing to pass on: the client gets the problem
        return out.block(exc.reason, exc.detail)
    if out.report_only:
        if out.reason is Reason.OK and out.admitted is not None:
            await _evaluate(out, req, consent, settings, now, explain)
        _passthrough_disclosure(policy, out, req, settings)
        return out
    # 6 enforce
    await _evaluate(out, req, consent, settings, now, explain)
    # 7 what left
    if out.reason is Reason.OK and out.has_body and req.method != "HEAD":
        _disclose(policy, out)
    return out


def _gpc_applies(ad: Admitted) -> bool:
    return ad.purpose.gpc_honor or ad.rule.respect_gpc


def _route_of(policy: CompiledPolicy, blocked: Blocked, method: str, path: str) -> CompiledRoute | None:
    """The route of a request blocked before admission (for its mode and upstream), if it has one.
    A route's own mode applies to such requests too: a route rolled out in report-only passes them."""
    found = policy.match(method, path) if blocked.route else None
    return found[0] if found else None


async def _request_subject(ad: Admitted, need: Needs, req: RequestFacts, exchange: Exchange,
                           settings: FlowSettings) -> tuple[str | None, bytes | None, Reason | None]:
    """(subject, the request body if it was read, reason) for a subject named by the request."""
    assert need.subject is not None
    body: bytes | None = None
    if need.subject[0] != "request_body":
        subject = _named_subject(ad.route, ad.params, req)
    else:  # request_body: a JSON request body, read whole (bounded) and forwarded as read
        try:
            body = await exchange.request_body(settings.max_request_body_bytes)
            doc = orjson.loads(body)
        except Refusal as exc:
            return None, None, exc.reason
        except orjson.JSONDecodeError:
            return None, None, Reason.REQUEST_BODY_INVALID
        assert ad.route.subject_path is not None
        subject = subject_at(doc, ad.route.subject_path)
    if not subject:
        return None, body, Reason.SUBJECT_MISSING
    return subject, body, None


def _named_subject(route: CompiledRoute, params: Mapping[str, str], req: RequestFacts) -> str | None:
    """The subject a path parameter, query parameter or header names (one value, not empty), or None."""
    if route.subject is None:
        return None
    kind, name = route.subject
    if kind == "path":
        return params.get(name) or None
    if kind == "query":
        vals = parse_qs(req.query.decode("latin-1")).get(name, [])
        return vals[0] if len(vals) == 1 and vals[0] else None
    if kind == "header":
        wanted = name.lower().encode("latin-1")
        hv = [v.decode("latin-1") for n, v in req.headers if n == wanted]
        return hv[0] if len(hv) == 1 and hv[0] else None
    return None


async def judge(ad: Admitted, subject: str | None, req: RequestFacts, consent: ConsentSource,
                settings: FlowSettings, now: datetime, out: Outcome) -> Reason | None:
    """The consent verdict for one subject (or for a request that names none): store consent, GPC and
    the TCF string. Records the consent facts in `out.consent`."""
    rule = ad.rule
    purpose = rule.purpose
    reads_tcf = "tcf" in purpose.sources
    if subject is None:
        if rule.consent_keys:
            return Reason.SUBJECT_MISSING
    elif not (rule.consent_keys or reads_tcf or out.gpc):
        return None
    states: dict[str, ConsentState] = {}
    if rule.consent_keys and subject is not None:
        try:  # the store's cache observes veil_consent_store_lookup_duration_seconds on its misses only
            got = await consent.current([subject], rule.consent_keys)
        except (VeilError, OSError):
            return Reason.CONSENT_UNAVAILABLE
        states = {k: got[(subject, k)] for k in rule.consent_keys if (subject, k) in got}
        for k, st in states.items():
            out.consent[k] = st.status.value
    tcf = None
    if reads_tcf:
        from veil.consent.tcf import decode

        pairs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in req.headers]
        cookie = "; ".join(v for n, v in pairs if n == "cookie") or None
        tc = signals.tcf_from_request(pairs, cookie, header_name=settings.tcf_header,
                                      cookie_name=settings.tcf_cookie)
        tcf = decode(tc) if tc else None
        if tcf is not None:
            out.consent["tcf"] = "valid" if tcf.valid else "invalid"
    why = consent_reason(rule, states, now, gpc=out.gpc, tcf=tcf, vendor=ad.caller.vendor)
    return Reason.of(why) if why is not None else None


# ---------------------------------------------------------------- step 6
async def _evaluate(out: Outcome, req: RequestFacts, consent: ConsentSource, settings: FlowSettings,
                    now: datetime, explain: bool) -> None:
    """What the policy makes of the upstream answer: fills `out` (its body, or the reason it refuses)."""
    ad, answer = out.admitted, out.answer
    assert ad is not None and answer is not None
    why = status_reason(answer.status)  # 3xx, 4xx/5xx, or a status veil cannot relay
    if why is not None:
        out.block(why, f"the upstream answered {answer.status}" if why is Reason.UPSTREAM_STATUS else None)
        return
    hdrs = {k.lower(): v for k, v in answer.headers}
    rule = ad.rule
    plan = rule.plan
    route = ad.route
    try:
        if no_content(answer.status, answer.body):  # an empty 2xx discloses nothing: it passes empty
            return
        body = decode_content(answer.body, hdrs.get("content-encoding"), settings.max_body_bytes)
        if not body:  # an encoded empty body is empty too
            return
        lazy_min = settings.lazy_json_min_bytes
        may_lazy = (not explain and lazy_min is not None and len(body) >= lazy_min and route.reads_lazily
                    and plan.lazy_ok(route.each))
        # Lazily or whole: where the native loop runs the plan, whichever has cost this plan less
        # (ReadChoice); the generated Python always reads lazily (it is never cheaper whole).
        choose = may_lazy and plan.native
        lazy = plan.reading.pick() if choose else may_lazy
        waited = [0.0]  # CPU of this thread while _enforce awaited consent lookups (other requests' work)

        async def work(doc: Any) -> Reason | None:
            return await _enforce(out, ad, doc, req, consent, settings, now, explain, waited)

        cpu = time.thread_time()
        why = await read_document(body, hdrs.get("content-type"), lazy, work)
        if why is not None:
            out.block(why)
            return
        # What would leave is checked (removed parts are never read); a body with few brackets cannot
        # nest deeper than the limit, so most profiles skip the walk.
        check_depth(out.doc, settings.max_json_depth, body, plan.added_depth,
                    out.report.depth if out.report is not None else None)
        out.body = orjson.dumps(out.doc)
        out.has_body = True
        if choose:
            plan.reading.record(lazy, (time.thread_time() - cpu - waited[0]) / len(body))
    except Refusal as exc:
        out.block(exc.reason, exc.detail)
    except (RecursionError, TypeError, VeilError, orjson.JSONEncodeError):
        out.block(Reason.BODY_INVALID, _NOT_ENFORCEABLE)


async def _enforce(out: Outcome, ad: Admitted, doc: Any, req: RequestFacts, consent: ConsentSource,
                   settings: FlowSettings, now: datetime, explain: bool, waited: list[float]) -> Reason | None:
    """Body subject, per-item consent, then the field plan; the reason when it refuses. May raise
    NotLazy (veil.redact.reading runs it again on an orjson parse)."""
    route, rule = ad.route, ad.rule
    out.subjects, out.filtered, out.items, out.fates = [], 0, [], []
    if route.subject is not None and route.subject[0] == "body":
        assert route.subject_path is not None
        subject = subject_at(doc, route.subject_path)
        out.subject = subject
        if subject is None:
            return Reason.SUBJECT_UNIDENTIFIED
        t = time.thread_time()
        why = await judge(ad, subject, req, consent, settings, now, out)
        waited[0] += time.thread_time() - t
        if why is not None:
            return why
    lazy = is_lazy(doc)
    if route.each is not None:
        doc, items, ids = list_items(doc, route.each, lazy)
        if items is not None:
            wanted = list(dict.fromkeys(i for i in ids if i is not None))
            states: Mapping[tuple[str, str], ConsentState] = {}
            if rule.consent_keys and wanted:
                t = time.thread_time()
                try:
                    states = await consent.current(wanted, rule.consent_keys)
                except (VeilError, OSError):
                    return Reason.CONSENT_UNAVAILABLE
                finally:
                    waited[0] += time.thread_time() - t
            verdicts = consent_reasons(rule, wanted, states, now, gpc=out.gpc, vendor=ad.caller.vendor)
            if explain:
                out.items = [(i, sid, "subject_missing" if sid is None else (verdicts[sid] or "ok"))
                             for i, sid in enumerate(ids)]
            out.subjects, out.filtered = keep_items(items, ids, verdicts, route.each[1], lazy)
    if explain:
        out.fates = rule.plan.explain(doc)
    out.doc, out.report = rule.plan.apply_lazy(doc) if lazy else rule.plan.apply(doc)
    return None


# ---------------------------------------------------------------- step 7
def _disclose(policy: CompiledPolicy, out: Outcome) -> None:
    """What the enforced document discloses, by category and form (and per subject on list routes)."""
    index = policy.category_index
    report = out.report
    transformed = report.transformed_at if report is not None else {}
    lasting = report is None or report.shared  # a shared report's locations live as long as the plan
    ad = out.admitted
    assert ad is not None
    each = ad.route.each
    plan = ad.rule.plan  # out.doc is its output: the walk is specialized to it
    if each is None or not out.subjects:
        out.disclosed = index.disclosed(out.doc, transformed, plan=plan, lasting=lasting)
        return
    out.disclosed, out.disclosed_by_subject = _disclosed_items(index, out.doc, each[0], out.subjects, transformed,
                                                               plan, lasting)


def _disclosed_items(index: CategoryIndex, doc: Any, list_path: Any, subjects: list[str],
                     transformed: Mapping[tuple[str | int, ...], str | None], plan: Outlined | None = None,
                     lasting: bool = False) -> tuple[dict[str, set[str]], dict[str, dict[str, set[str]]] | None]:
    """(the whole response's disclosure, each subject's where they differ): a subject of a list
    response saw the envelope disclosed, and its own item(s). `plan`: the field plan whose output
    `doc` is (None for a body passed on unchanged). `lasting`: see CategoryIndex.walker."""
    from veil.redact.items import find_list
    from veil.redact.paths import Key

    items = find_list(doc, list_path)
    if items is None or len(items) != len(subjects):
        return index.disclosed(doc, transformed, plan=plan, lasting=lasting), None
    walker = index.walker(transformed, plan, lasting=lasting)
    saved = list(items)
    items.clear()  # the envelope alone (the list read as empty)
    try:
        envelope = walker.pairs(doc)
    finally:
        items.extend(saved)
    at: tuple[str | int, ...] = (*(s.name for s in list_path[:-1] if isinstance(s, Key)), 0)
    by_subject: dict[str, list[Pairs]] = {}
    shapes: set[Pairs] = set()
    for pairs, sid in zip(walker.pairs_each(items, at), subjects, strict=True):
        shapes.add(pairs)
        by_subject.setdefault(sid, []).append(pairs)
    total = merge({}, envelope)
    for pairs in shapes:
        merge(total, pairs)
    if len(shapes) <= 1:
        return total, None
    per: dict[str, dict[str, set[str]]] = {}
    for sid, found in by_subject.items():
        mine = per[sid] = merge({}, envelope)
        for pairs in found:
            merge(mine, pairs)
    if all(v == total for v in per.values()):
        return total, None
    return total, per


def _passthrough_disclosure(policy: CompiledPolicy, out: Outcome, req: RequestFacts, settings: FlowSettings) -> None:
    """Report-only passes the upstream's body on unchanged: that is what is disclosed. A body that is
    not JSON discloses what cannot be named (None: unknown)."""
    answer = out.answer
    out.disclosed_by_subject = None
    if answer is None or req.method == "HEAD" or not answer.body:
        out.disclosed = {}
        return
    hdrs = {k.lower(): v for k, v in answer.headers}
    try:
        body = decode_content(answer.body, hdrs.get("content-encoding"), settings.max_body_bytes)
        doc = parse_json(hdrs.get("content-type"), body)
    except Refusal:
        out.disclosed = None
        return
    route = out.route
    if route is not None and out.subject is None and route.subject is not None:
        # a request refused before admission still passed its data on: whose it was, if the route says
        if route.subject[0] == "body" and route.subject_path is not None:
            out.subject = subject_at(doc, route.subject_path)
        elif route.subject[0] != "request_body" and out.path is not None:
            found = policy.match(req.method, out.path)
            out.subject = _named_subject(route, found[1] if found else {}, req)
    if route is not None and route.each is not None:
        _, items, ids = list_items(doc, route.each)
        if items is not None:
            subjects = [i for i in ids if i is not None]
            out.subjects = list(dict.fromkeys(subjects))
            if len(subjects) == len(items):
                out.disclosed, out.disclosed_by_subject = _disclosed_items(
                    policy.category_index, doc, route.each[0], subjects, {})
                return
    out.disclosed = policy.category_index.disclosed(doc)


__all__ = [
    "Answer",
    "ConsentSource",
    "Exchange",
    "Forward",
    "Needs",
    "Outcome",
    "RequestFacts",
    "decide",
    "judge",
    "needs",
]
