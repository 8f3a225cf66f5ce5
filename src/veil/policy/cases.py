"""Policy test files (`veil test`, the conformance cases in tests/cases/, the playground's saved
cases): the YAML schema (policies/README.md), read into plain values, and the expectations checked
against an outcome. Reading a file never decides anything: `veil.policy.testing` runs a case through
the request flow (veil.policy.flow), the one the proxy runs.

    load_cases(path)                   → list[Case]   raises TestFileError naming file:line:col and the cause
    check_expectations(expect, view)   → failures     each a readable unified diff
    Coverage(policy).add(view) … .uncovered()         statements and rules no case exercised
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from veil.consent.store import ConsentState, Status
from veil.errors import VeilError
from veil.location import Location
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.redact.engine import FieldFate

DECISIONS = ("allow", "redact", "filter", "block")
EXPECT_KEYS = ("decision", "reason", "status", "body", "body_has", "body_lacks", "filtered", "suppressed",
               "rules")


class TestFileError(VeilError):
    """A policy test file that does not follow the schema; the message names file:line:col."""

    code = "policy_test_invalid"
    __test__ = False  # not a pytest class


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"  # with the query, if any
    caller: str | None = None  # a caller name from the policy
    key: str | None = None  # or a raw Veil-Key (checked against the real key index)
    purposes: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    tcf: str | None = None  # an IAB TCF string, sent where the flow reads it (the configured cookie or header)
    body: bytes | None = None  # the request body (a route with `subject request_body.…` reads it)


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: Any = None
    has_body: bool = False
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more upstream headers (content-encoding, …)

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json_bytes(self.body) if self.has_body else b""

    def header_list(self) -> list[tuple[str, str]]:
        return [("content-type", self.content_type), *self.headers]


def json_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


# subject → consent key → state; subject "*" answers for every subject not listed. None: store down.
Consent = Mapping[str, Mapping[str, ConsentState]] | None


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


@dataclass
class View:
    """What expectations read of an outcome (veil.policy.testing builds it from the flow's Outcome)."""

    decision: str
    reason: str
    status: int
    body: Any = None  # the JSON that left (None when blocked or bodiless)
    filtered: int = 0
    suppressed: int = 0
    rule: CompiledRule | None = None  # the rule applied (None when blocked)
    selected: CompiledRule | None = None  # the rule admit chose, even when it then blocked
    locations: tuple[Location, ...] = ()  # policy locations behind a block
    fates: list[FieldFate] = field(default_factory=list)
    items: list[tuple[int, str | None, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "status": self.status}


# ---------------------------------------------------------------- reading files
class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates in bodies stay the strings JSON would carry."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """YAML as JSON would carry it (timestamps stay strings); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


class _Marks:
    """Where each case and each of its keys is in the file, for errors that name line and column."""

    def __init__(self, text: str) -> None:
        self.cases: list[tuple[Location, dict[str, Location]]] = []
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError:
            return
        if not isinstance(node, yaml.MappingNode):
            return
        for k, v in node.value:
            if k.value == "cases" and isinstance(v, yaml.SequenceNode):
                for item in v.value:
                    keys: dict[str, Location] = {}
                    if isinstance(item, yaml.MappingNode):
                        for ck, cv in item.value:
                            keys[str(ck.value)] = _at("", ck)
                            if isinstance(cv, yaml.MappingNode):
                                for sk, _ in cv.value:
                                    keys[f"{ck.value}.{sk.value}"] = _at("", sk)
                    self.cases.append((_at("", item), keys))


def _at(file: str, node: Any) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


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
    try:
        notice = int(nv) if nv is not None else None
    except (TypeError, ValueError) as exc:
        raise TestFileError(f"{where}: notice_version must be a whole number") from exc
    return ConsentState(key, status, at, notice, exp, spec.get("source"))


def load_cases(path: str | Path) -> list[Case]:
    """Read one test file; raises TestFileError (file:line:col and the cause) when it does not follow
    the schema."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TestFileError(f"{name}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TestFileError(f"{name}: not UTF-8 text") from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        cause = getattr(exc, "problem", None) or "not valid YAML"
        context = getattr(exc, "context", None)
        raise TestFileError(f"{name}{at}: not valid YAML: {cause}" + (f" ({context})" if context else "")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise TestFileError(f"{name}:1:1: a test file is a mapping with a `cases` list")
    unknown = set(data) - {"now", "defaults", "fixtures", "cases", "description"}
    if unknown:
        raise TestFileError(f"{name}: unknown top-level key(s) {', '.join(sorted(unknown))}"
                            " (allowed: now, defaults, fixtures, cases, description)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise TestFileError(f"{name}: `defaults` is a mapping (request, response, consent, consent_state)")
    marks = _Marks(text).cases
    out = []
    for i, raw in enumerate(data["cases"]):
        mark, keys = marks[i] if i < len(marks) else (Location("", 0, 0), {})
        out.append(case_from_dict(raw, Location(name, mark.line, mark.col), defaults, data.get("now"),
                                  keys={k: Location(name, v.line, v.col) for k, v in keys.items()}))
    return out


def case_from_dict(raw: Any, where: Location, defaults: Mapping[str, Any] | None = None,
                   now: Any = None, *, keys: Mapping[str, Location] | None = None) -> Case:
    """One case; `keys` (key path → location) lets errors point at the offending key."""
    marks = keys or {}

    def at(key: str | None = None) -> str:
        loc = marks.get(key) if key else None
        loc = loc or where
        return f"{loc.file}:{loc.line}" + (f":{loc.col}" if loc.col else "")

    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise TestFileError(f"{at()}: a case is a mapping with a `name`")
    defaults = defaults or {}
    unknown = set(raw) - {"name", "request", "consent", "response", "expect", "now", "note"}
    if unknown:
        first = sorted(unknown)[0]
        raise TestFileError(f"{at(first)}: unknown key(s) {', '.join(sorted(unknown))}"
                            " (allowed: name, request, consent, response, expect, now, note)")
    req = {**(defaults.get("request") or {}), **(raw.get("request") or {})}
    resp = {**(defaults.get("response") or {}), **(raw.get("response") or {})}
    expect = raw.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise TestFileError(f"{at()}: case {raw['name']!r} has no `expect`")
    bad = set(expect) - set(EXPECT_KEYS)
    if bad:
        first = sorted(bad)[0]
        raise TestFileError(f"{at('expect.' + first)}: unknown expectation(s) {', '.join(sorted(bad))}"
                            f" (allowed: {', '.join(EXPECT_KEYS)})")
    if "decision" in expect and expect["decision"] not in DECISIONS:
        raise TestFileError(f"{at('expect.decision')}: decision must be one of {', '.join(DECISIONS)}")
    moment = raw.get("now", now)
    return Case(
        name=raw["name"], where=where, request=_request(req, at("request")),
        consent=_consent(raw, defaults, at("consent")), response=_response(resp, at("response")),
        now=parse_time(moment, at("now")) if moment is not None else datetime.now(UTC),
        expect=expect,
    )


def _request(spec: Mapping[str, Any], at: str) -> Request:
    unknown = set(spec) - {"method", "path", "caller", "key", "purpose", "headers", "tcf", "body"}
    if unknown:
        raise TestFileError(f"{at}: unknown request field(s) {', '.join(sorted(unknown))}")
    if not isinstance(spec.get("path"), str):
        raise TestFileError(f"{at}: request.path is required")
    purpose = spec.get("purpose")
    purposes = () if purpose is None else tuple(map(str, purpose if isinstance(purpose, list) else [purpose]))
    headers: list[tuple[str, str]] = []
    raw_headers = spec.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise TestFileError(f"{at}: request.headers maps a header name to a value (or a list of values)")
    for k, v in raw_headers.items():
        headers.extend((str(k), _scalar(x)) for x in (v if isinstance(v, list) else [v]))
    body = spec.get("body")
    return Request(
        method=str(spec.get("method", "GET")).upper(), path=spec["path"], caller=spec.get("caller"),
        key=spec.get("key"), purposes=purposes, headers=tuple(headers), tcf=spec.get("tcf"),
        body=None if body is None else (body.encode() if isinstance(body, str) else json_bytes(body)),
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
    unknown = set(spec) - {"status", "body", "raw", "content_type", "headers"}
    if unknown:
        raise TestFileError(f"{at}: unknown response field(s) {', '.join(sorted(unknown))}")
    raw = spec.get("raw")
    hdrs = spec.get("headers") or {}
    if not isinstance(hdrs, dict):
        raise TestFileError(f"{at}: response.headers maps a header name to a value")
    try:
        status = int(spec.get("status", 200))
    except (TypeError, ValueError) as exc:
        raise TestFileError(f"{at}: response.status must be a number") from exc
    return Response(
        status=status, body=spec.get("body"), has_body="body" in spec,
        raw=raw.encode() if isinstance(raw, str) else None,
        content_type=str(spec.get("content_type", "application/json")),
        headers=tuple((str(k).lower(), str(v)) for k, v in hdrs.items()),
    )


# ---------------------------------------------------------------- expectations
def check_expectations(expect: Mapping[str, Any], out: View) -> list[str]:
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


def decision_locations(out: View) -> list[Location]:
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

    def add(self, out: View) -> None:
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
                        if not st.kind.acts_on_fields:
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
                        if st.kind.acts_on_fields:
                            stmts += 1
                            stmts_hit += st.loc in self.fired
        return rules_hit, rules, stmts_hit, stmts


__all__ = [
    "Case",
    "Consent",
    "Coverage",
    "Request",
    "Response",
    "TestFileError",
    "View",
    "case_from_dict",
    "check_expectations",
    "decision_locations",
    "load_cases",
    "load_yaml",
    "lookup",
    "parse_state",
    "parse_time",
]
