"""Policy tests (`veil test`): YAML cases evaluated in-process against a compiled policy.

    evaluate(policy, request, consent, response, now)  → Outcome     the proxy's decision, no I/O
    load_cases(path)                                   → list[Case]  one test file (policies/README.md)
    run_case(policy, case)                             → CaseResult  outcome + failures as unified diffs
    Coverage(policy).add(outcome) … .uncovered()                     statements and rules no case exercised

`evaluate` mirrors the proxy (src/veil/proxy/app.py): admit → subject → consent_reason → upstream
status → parse → per-item consent for `each` routes (items without a subject or without consent are
removed) → plan.apply → decision filter / redact / allow. Tests name callers instead of carrying keys:
`admit_as` admits with the caller resolved by name through a private copy of the policy whose key
index holds only a throw-away key for that caller; `admit` itself is unchanged.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import yaml

from veil.consent import signals
from veil.consent.store import ConsentState, Status
from veil.errors import VeilError
from veil.location import Location
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.policy.decision import REASONS, Admitted, Blocked, admit, consent_reason, no_content, status_reason
from veil.proxy.enforce import EnforceError, find_list, parse_json, subject_of
from veil.proxy.normalize import PathInvalid, normalize_path
from veil.redact.engine import DocumentTooDeep, FieldFate

_TEST_KEY = "veil-policy-test-caller:"  # never a real key: only ever in a private key index copy
OVERRIDE = ("x-http-method-override", "x-http-method", "x-method-override")
DECISIONS = ("allow", "redact", "filter", "block")
EXPECT_KEYS = ("decision", "reason", "status", "body", "body_has", "body_lacks", "filtered", "suppressed",
               "rules")


class TestFileError(VeilError):
    """A policy test file that does not follow the schema; the message names file:line."""

    code = "policy_test_invalid"
    __test__ = False  # not a pytest class


# ---------------------------------------------------------------- inputs and outcome
@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    caller: str | None = None  # a caller name from the policy
    key: str | None = None  # or a raw Veil-Key (checked against the real key index)
    purposes: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    tcf: str | None = None


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: Any = None
    has_body: bool = False
    raw: bytes | None = None
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return orjson.dumps(self.body) if self.has_body else b""


# subject → consent key → state; subject "*" answers for every subject not listed. None: store down.
Consent = Mapping[str, Mapping[str, ConsentState]] | None


@dataclass
class Outcome:
    decision: str  # allow | redact | filter | block
    reason: str  # "ok" or a reason code
    status: int
    body: Any = None  # the JSON body sent (None when blocked or empty)
    rule: CompiledRule | None = None
    locations: tuple[Location, ...] = ()  # policy locations behind a block
    filtered: int = 0
    suppressed: int = 0
    fates: list[FieldFate] = field(default_factory=list)  # of the document after filtering
    items: list[tuple[int, str | None, str]] = field(default_factory=list)  # (index, subject?, verdict)
    selected: CompiledRule | None = None  # the rule admit chose, even when it then blocked

    def summary(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "status": self.status}


def admit_as(policy: CompiledPolicy, method: str, path: str, caller: str | None, purposes: Sequence[str],
             *, key: str | None = None) -> Admitted | Blocked:
    """`admit` with the caller named (tests) rather than keyed; `key` tests a real raw key instead."""
    if key is not None:
        return admit(policy, method, path, [key], purposes)
    if caller is None:
        return admit(policy, method, path, [], purposes)
    view = copy.copy(policy)  # shares the compiled routes; only the key index differs
    token = _TEST_KEY + caller
    found = policy.callers.get(caller)
    view.key_index = {hashlib.sha256(token.encode()).hexdigest(): found} if found else {}
    view._key_cache = {}  # never share the real policy's cache of authenticated keys
    return admit(view, method, path, [token], purposes)


def _block(reason: str, locations: tuple[Location, ...] = (), *, status: int | None = None,
           rule: CompiledRule | None = None) -> Outcome:
    code = status if status is not None else REASONS.get(reason, (403, ""))[0]
    return Outcome("block", reason, code, locations=locations, selected=rule)


def _header(req: Request, name: str) -> list[str]:
    return [v for k, v in req.headers if k.lower() == name]


def _states(consent: Consent, subject: str, keys: Sequence[str]) -> dict[str, ConsentState]:
    assert consent is not None
    per = consent.get(subject, consent.get("*", {}))
    return {k: per[k] for k in keys if k in per}


def evaluate(policy: CompiledPolicy, req: Request, consent: Consent, resp: Response, now: datetime,
             *, fates: bool = False) -> Outcome:
    """The decision and the body the proxy would send; `fates=True` also explains every field."""
    raw_path, _, query = req.path.partition("?")
    try:
        path, _ = normalize_path(raw_path.encode("utf-8"))
    except PathInvalid:
        return _block("path_invalid")
    if any(_header(req, h) for h in OVERRIDE):
        return _block("method_override")
    ad = admit_as(policy, req.method, path, req.caller, req.purposes, key=req.key)
    if isinstance(ad, Blocked):
        return _block(ad.reason, ad.locations, rule=_rule_at(policy, ad))
    rule = ad.rule
    gpc = signals.gpc_from_headers(_header(req, "sec-gpc"))
    why = _request_consent(ad, req, query, consent, gpc, now)
    if why is not None:
        return _block(why, (rule.loc,), rule=rule)
    why = status_reason(resp.status)  # issue 15: the proxy's rule for statuses
    if why is not None:
        return _block(why, status=resp.status if why == "upstream_status" else None, rule=rule)
    body = resp.payload()
    if no_content(resp.status, body):  # issue 15: the proxy's rule for empty 2xx
        return Outcome("allow", "ok", resp.status, None, rule, selected=rule)
    out = Outcome("allow", "ok", resp.status, None, rule, selected=rule)
    try:
        doc = parse_json(resp.content_type, body)
        if ad.route.each is not None:
            if consent is None and rule.consent_keys:
                return _block("consent_unavailable", rule=rule)
            out.filtered = _filter_items(ad, doc, consent or {}, gpc, now, out.items)
        if fates:
            out.fates = rule.plan.explain(doc)
        doc, report = rule.plan.apply(doc)
        out.body = orjson.loads(orjson.dumps(doc))
    except EnforceError as exc:
        return _block(exc.reason, rule=rule)
    except (RecursionError, DocumentTooDeep, orjson.JSONEncodeError, TypeError):
        return _block("body_invalid", rule=rule)
    changed = bool(report.removed or report.dropped or report.transformed or report.type_errors
                   or report.suppressed)
    out.decision = "filter" if out.filtered else ("redact" if changed else "allow")
    out.suppressed = report.suppressed
    return out


def _rule_at(policy: CompiledPolicy, blocked: Blocked) -> CompiledRule | None:
    """The rule a block names (caller_not_allowed, blocked_by_rule), for coverage."""
    if blocked.reason not in ("caller_not_allowed", "blocked_by_rule") or not blocked.purpose:
        return None
    for route in policy.routes:
        rule = route.rules.get(blocked.purpose)
        if route.template == blocked.route and rule is not None and rule.loc in blocked.locations:
            return rule
    return None


def _request_consent(ad: Admitted, req: Request, query: str, consent: Consent, gpc: bool,
                     now: datetime) -> str | None:
    """Step 4 of the proxy (`_subject_consent`): subject, store consent, GPC and TCF."""
    rule = ad.rule
    subject: str | None = None
    if ad.route.subject is not None:
        kind, name = ad.route.subject
        if kind == "path":
            subject = ad.params.get(name)
        else:
            vals = parse_qs(query).get(name, []) if kind == "query" else _header(req, name.lower())
            subject = vals[0] if len(vals) == 1 else None
        if not subject:
            return "subject_missing"
    needs = bool(rule.consent_keys) or "tcf" in rule.purpose.sources or gpc
    if subject is None or not needs:
        if gpc and (rule.purpose.gpc_honor or rule.respect_gpc) and ad.route.each is None:
            return "gpc_opt_out"
        return None
    if rule.consent_keys and consent is None:
        return "consent_unavailable"
    states = _states(consent, subject, rule.consent_keys) if consent is not None else {}
    tcf = None
    if "tcf" in rule.purpose.sources:
        from veil.consent.tcf import decode

        cookie = "; ".join(_header(req, "cookie")) or None
        tc = req.tcf or signals.tcf_from_request(list(req.headers), cookie)
        tcf = decode(tc) if tc else None
    return consent_reason(rule, states, now, gpc=gpc, tcf=tcf, vendor=ad.caller.vendor)


def _filter_items(ad: Admitted, doc: Any, consent: Mapping[str, Mapping[str, ConsentState]], gpc: bool,
                  now: datetime, verdicts: list[tuple[int, str | None, str]]) -> int:
    """Per-item consent (the proxy's `_filter_items`); returns how many items were removed."""
    assert ad.route.each is not None
    list_path, subject_path = ad.route.each
    items = find_list(doc, list_path)
    if items is None:
        return 0
    rule = ad.rule
    keep: list[Any] = []
    for i, item in enumerate(items):
        sid = subject_of(item, subject_path)
        if sid is None:
            verdicts.append((i, None, "subject_missing"))
            continue
        why = consent_reason(rule, _states(consent, sid, rule.consent_keys), now, gpc=gpc,
                             vendor=ad.caller.vendor)
        verdicts.append((i, sid, why or "ok"))
        if why is None:
            keep.append(item)
    filtered = len(items) - len(keep)
    items[:] = keep
    return filtered


# ---------------------------------------------------------------- test files
class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates in bodies stay the strings JSON would carry."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """YAML as JSON would carry it (timestamps stay strings); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


@dataclass
class Case:
    name: str
    where: Location
    request: Request
    consent: Consent
    response: Response
    now: datetime
    expect: dict[str, Any]
    __test__ = False


def parse_time(value: Any, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise TestFileError(f"{where}: not an ISO 8601 time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_state(key: str, value: Any, defaults: Mapping[str, Any], where: str) -> ConsentState:
    """`given` | `withdrawn` | `expired` | `missing`, or {status, notice_version, at, expires_at}."""
    spec = {**defaults, **(value if isinstance(value, dict) else {"status": value})}
    unknown = set(spec) - {"status", "notice_version", "at", "expires_at", "source"}
    if unknown:
        raise TestFileError(f"{where}: unknown consent field(s) {', '.join(sorted(unknown))}")
    try:
        status = Status(str(spec.get("status")))
    except ValueError as exc:
        raise TestFileError(f"{where}: consent status must be given, withdrawn, expired or missing") from exc
    at = parse_time(spec["at"], where) if spec.get("at") is not None else None
    exp = parse_time(spec["expires_at"], where) if spec.get("expires_at") is not None else None
    nv = spec.get("notice_version")
    return ConsentState(key, status, at, int(nv) if nv is not None else None, exp, spec.get("source"))


def _case_lines(text: str) -> list[int]:
    node = yaml.compose(text, Loader=_Loader)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == "cases" and isinstance(v, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in v.value]
    return []


def load_cases(path: str | Path) -> list[Case]:
    """Read one test file; raises TestFileError (with file:line) when it does not follow the schema."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = load_yaml(text)
        lines = _case_lines(text)
    except OSError as exc:
        raise TestFileError(f"{name}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise TestFileError(f"{name}{at}: not valid YAML") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise TestFileError(f"{name}: a test file is a mapping with a `cases` list")
    unknown = set(data) - {"now", "defaults", "fixtures", "cases", "description"}
    if unknown:
        raise TestFileError(f"{name}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    defaults = data.get("defaults") or {}
    out = []
    for i, raw in enumerate(data["cases"]):
        line = lines[i] if i < len(lines) else 0
        out.append(case_from_dict(raw, Location(name, line, 1), defaults, data.get("now")))
    return out


def case_from_dict(raw: Any, where: Location, defaults: Mapping[str, Any] | None = None,
                   now: Any = None) -> Case:
    at = f"{where.file}:{where.line}"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise TestFileError(f"{at}: a case is a mapping with a `name`")
    defaults = defaults or {}
    unknown = set(raw) - {"name", "request", "consent", "response", "expect", "now", "note"}
    if unknown:
        raise TestFileError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
    req = {**(defaults.get("request") or {}), **(raw.get("request") or {})}
    resp = {**(defaults.get("response") or {}), **(raw.get("response") or {})}
    expect = raw.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise TestFileError(f"{at}: case {raw['name']!r} has no `expect`")
    bad = set(expect) - set(EXPECT_KEYS)
    if bad:
        raise TestFileError(f"{at}: unknown expectation(s) {', '.join(sorted(bad))}")
    if "decision" in expect and expect["decision"] not in DECISIONS:
        raise TestFileError(f"{at}: decision must be one of {', '.join(DECISIONS)}")
    moment = raw.get("now", now)
    return Case(
        name=raw["name"], where=where, request=_request(req, at), consent=_consent(raw, defaults, at),
        response=_response(resp, at), now=parse_time(moment, at) if moment is not None else datetime.now(UTC),
        expect=expect,
    )


def _request(spec: Mapping[str, Any], at: str) -> Request:
    unknown = set(spec) - {"method", "path", "caller", "key", "purpose", "headers", "tcf"}
    if unknown:
        raise TestFileError(f"{at}: unknown request field(s) {', '.join(sorted(unknown))}")
    if not isinstance(spec.get("path"), str):
        raise TestFileError(f"{at}: request.path is required")
    purpose = spec.get("purpose")
    purposes = () if purpose is None else tuple(map(str, purpose if isinstance(purpose, list) else [purpose]))
    headers: list[tuple[str, str]] = []
    for k, v in (spec.get("headers") or {}).items():
        headers.extend((str(k), _scalar(x)) for x in (v if isinstance(v, list) else [v]))
    return Request(
        method=str(spec.get("method", "GET")).upper(), path=spec["path"], caller=spec.get("caller"),
        key=spec.get("key"), purposes=purposes, headers=tuple(headers), tcf=spec.get("tcf"),
    )


def _scalar(v: Any) -> str:
    return ("1" if v else "0") if isinstance(v, bool) else str(v)


def _consent(raw: Mapping[str, Any], defaults: Mapping[str, Any], at: str) -> Consent:
    spec = raw.get("consent", defaults.get("consent") or {})
    if spec == "unavailable":
        return None
    if not isinstance(spec, dict):
        raise TestFileError(f"{at}: consent maps subject → {{consent key: state}}, or is `unavailable`")
    state_defaults = defaults.get("consent_state") or {}
    out: dict[str, dict[str, ConsentState]] = {}
    for subject, keys in spec.items():
        if not isinstance(keys, dict):
            raise TestFileError(f"{at}: consent for a subject maps consent key → state")
        out[str(subject)] = {str(k): parse_state(str(k), v, state_defaults, at) for k, v in keys.items()}
    return out


def _response(spec: Mapping[str, Any], at: str) -> Response:
    unknown = set(spec) - {"status", "body", "raw", "content_type"}
    if unknown:
        raise TestFileError(f"{at}: unknown response field(s) {', '.join(sorted(unknown))}")
    raw = spec.get("raw")
    return Response(
        status=int(spec.get("status", 200)), body=spec.get("body"), has_body="body" in spec,
        raw=raw.encode() if isinstance(raw, str) else None,
        content_type=str(spec.get("content_type", "application/json")),
    )


# ---------------------------------------------------------------- running and reporting
@dataclass
class CaseResult:
    case: Case
    outcome: Outcome
    failures: list[str]
    __test__ = False

    @property
    def ok(self) -> bool:
        return not self.failures


def run_case(policy: CompiledPolicy, case: Case) -> CaseResult:
    outcome = evaluate(policy, case.request, case.consent, case.response, case.now, fates=True)
    return CaseResult(case, outcome, check_expectations(case.expect, outcome))


def check_expectations(expect: Mapping[str, Any], out: Outcome) -> list[str]:
    """Every unmet expectation, each as a readable unified diff (expected vs actual)."""
    failures: list[str] = []
    scalars = [k for k in ("decision", "reason", "status", "filtered", "suppressed") if k in expect]
    actual_all = {**out.summary(), "filtered": out.filtered, "suppressed": out.suppressed}
    want = {k: expect[k] for k in scalars}
    got = {k: actual_all[k] for k in scalars}
    if want != got:
        actual = ", ".join(f"{k} {v}" for k, v in actual_all.items())
        failures.append(_diff(want, got, "outcome") + f"\n(actual: {actual})")
    if "body" in expect and expect["body"] != out.body:
        failures.append(_diff(expect["body"], out.body, "body"))
    for path in _list(expect.get("body_has")):
        found, missing = lookup(out.body, path)
        if not found or missing:
            failures.append(f"body_has {path}: " + ("absent" if not found else f"absent in {missing} item(s)")
                            + "\n" + _dump(out.body))
    for path in _list(expect.get("body_lacks")):
        found, _ = lookup(out.body, path)
        if found:
            failures.append(f"body_lacks {path}: present ({found}x)\n" + _dump(out.body))
    if "rules" in expect:
        want_rules = sorted(map(str, _list(expect["rules"])))
        got_rules = sorted({_line_of(loc) for loc in decision_locations(out)})
        if not all(any(_same_place(w, g) for g in got_rules) for w in want_rules):
            failures.append(_diff(want_rules, got_rules, "rules"))
    return failures


def _same_place(want: str, got: str) -> bool:
    """`routes.veil:6` names `policies/routes.veil:6` (a path suffix), whatever the working directory."""
    return got == want or got.endswith("/" + want)


def _line_of(loc: Location) -> str:
    return f"{loc.file}:{loc.line}"


def decision_locations(out: Outcome) -> list[Location]:
    """The policy locations behind an outcome: the block's, or the rule's and its statements that acted."""
    if out.decision == "block":
        return list(out.locations)
    if out.rule is None:
        return []
    rule = out.rule
    locs = [rule.loc]
    locs += [rule.location_of(f.rule_id) for f in out.fates if f.rule_id >= 0]
    return sorted(set(locs))


def _list(v: Any) -> list[Any]:
    return [] if v is None else (v if isinstance(v, list) else [v])


def _dump(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False)


def _diff(want: Any, got: Any, what: str) -> str:
    lines = difflib.unified_diff(_dump(want).splitlines(), _dump(got).splitlines(),
                                 f"expected {what}", f"actual {what}", lineterm="")
    return "\n".join(lines)


def lookup(doc: Any, path: str) -> tuple[int, int]:
    """(values found, list items lacking it) for `a.b`, `items[0].x`, `items[*].x` in `doc`."""
    segs: list[str | int | None] = []
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part == "[*]":
            segs.append(None)
        elif part.startswith("[") and part.endswith("]"):
            segs.append(int(part[1:-1]))
        else:
            segs.append(part)
    nodes: list[Any] = [doc]
    missing = 0
    for seg in segs:
        nxt: list[Any] = []
        for node in nodes:
            if seg is None and isinstance(node, list):
                nxt.extend(node)
            elif seg is not None and _has(node, seg):
                nxt.append(node[seg])
            else:
                missing += 1
        nodes = nxt
    return len(nodes), missing


def _has(node: Any, seg: str | int) -> bool:
    if isinstance(seg, int):
        return isinstance(node, list) and -len(node) <= seg < len(node)
    return isinstance(node, dict) and seg in node


class Coverage:
    """Which rules were selected and which statements acted, by policy location."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.selected: set[Location] = set()
        self.fired: set[Location] = set()

    def add(self, out: Outcome) -> None:
        rule = out.selected or out.rule
        if rule is None:
            return
        self.selected.add(rule.loc)
        if out.rule is not None:
            self.fired.update(rule.location_of(f.rule_id) for f in out.fates if f.rule_id >= 0)

    def uncovered(self) -> list[tuple[Location, str]]:
        """(location, what) for every rule never selected and field statement that never acted."""
        out: list[tuple[Location, str]] = []
        for m in self.policy.modules:
            for route in m.routes:
                for rule in route.rules:
                    where = f"{route.method} {route.template} for {', '.join(n for n, _ in rule.purposes)}"
                    if rule.loc not in self.selected:
                        out.append((rule.loc, f"rule never selected ({where})"))
                        continue
                    for st in rule.body:
                        if st.kind in ("require_consent", "require_caller", "respect_gpc", "block"):
                            continue
                        if st.loc not in self.fired:
                            out.append((st.loc, f"{st.kind} never acted ({where})"))
        return sorted(out, key=lambda x: x[0])

    def totals(self) -> tuple[int, int, int, int]:
        """(rules selected, rules, field statements that acted, field statements)."""
        rules = stmts = rules_hit = stmts_hit = 0
        for m in self.policy.modules:
            for route in m.routes:
                for rule in route.rules:
                    rules += 1
                    rules_hit += rule.loc in self.selected
                    for st in rule.body:
                        if st.kind not in ("require_consent", "require_caller", "respect_gpc", "block"):
                            stmts += 1
                            stmts_hit += st.loc in self.fired
        return rules_hit, rules, stmts_hit, stmts


__all__ = [
    "Case",
    "CaseResult",
    "Coverage",
    "Outcome",
    "Request",
    "Response",
    "TestFileError",
    "admit_as",
    "case_from_dict",
    "check_expectations",
    "decision_locations",
    "evaluate",
    "load_cases",
    "load_yaml",
    "lookup",
    "parse_state",
    "parse_time",
    "run_case",
]
