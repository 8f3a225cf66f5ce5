"""An example request in the playground, as a `veil test` case, and what veil decides for it.

The example the page edits becomes a case in the policy test format (policies/README.md); that case is
read back with `veil.policy.testing.case_from_dict` and decided by `veil.policy.explain.explain_request`
— the functions behind `veil test` and `veil explain`. Nothing here decides anything itself: it only
builds the case, and shapes the explanation for the page (field fates, the response, a diff).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from veil.atomic import write_text_atomically
from veil.consent.store import Status
from veil.errors import VeilError
from veil.location import Location
from veil.playground.workspace import Compiled
from veil.policy.compile import CompiledPolicy
from veil.policy.explain import explain_request
from veil.policy.testing import TestFileError, case_from_dict, load_cases, load_yaml
from veil.proxy.problem import problem_body
from veil.reasons import REASONS, Reason
from veil.redact.paths import Each, FieldPath, Key

STATES = tuple(s.value for s in Status)  # given, withdrawn, expired, missing


class ExampleError(VeilError):
    code = "example_invalid"


# ---------------------------------------------------------------- defaults
def consent_keys(policy: CompiledPolicy) -> list[str]:
    keys = {p.consent_key for p in policy.purposes.values() if p.consent_key}
    keys |= {k for r in policy.routes for rule in r.rules.values() for k in rule.consent_keys}
    return sorted(keys)


def _put(doc: dict[str, Any], path: FieldPath, value: Any, *, force: bool = False) -> None:
    """Set `value` at a concrete path, making objects and one-element lists on the way (a value
    already there stays, unless `force`)."""
    node: Any = doc
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(seg, Key) and isinstance(node, dict):
            if last:
                if force or seg.name not in node:
                    node[seg.name] = value
                return
            nxt = path[i + 1]
            want: Any = [] if isinstance(nxt, Each) else {}
            if not isinstance(node.get(seg.name), type(want)):
                node[seg.name] = want
            node = node[seg.name]
        elif isinstance(seg, Each) and isinstance(node, list):
            if last:
                if not node:
                    node.append(value)
                return
            if not node or not isinstance(node[0], dict):
                node[:] = [{}]
            node = node[0]
        else:
            return  # `*` and `**` name no concrete field


_SAMPLES = (  # (name fragment, placeholder value): plausible types for transforms to work on
    ("email", "someone@example.com"), ("phone", "+1 555 0100"), ("birth", "1990-04-12"), ("date", "2026-01-15"),
    ("country", "DE"), ("lat", 52.520008), ("lon", 13.404954), ("count", 12), ("zip", "10115"),
    ("postal", "10115"), ("ip", "192.0.2.10"), ("age", 36), ("score", 0.7),
)


def _sample(path: FieldPath) -> Any:
    keys = [s.name for s in path if isinstance(s, Key)]
    leaf = keys[-1].lower() if keys else ""
    return next((v for frag, v in _SAMPLES if frag in leaf), f"example {'.'.join(keys)}")


def sample_document(policy: CompiledPolicy, paths: Iterable[FieldPath] = ()) -> Any:
    """A JSON object with a field at every concrete path of `paths` (a rule's) and of the policy's
    categories, with placeholder values: something to start editing from, whatever the policy."""
    doc: dict[str, Any] = {}
    for p in paths:
        _put(doc, p, _sample(p))
    for _, cat_paths in policy.categories.values():
        for p in cat_paths:
            _put(doc, p, _sample(p))
    return doc


def defaults(policy: CompiledPolicy | None, now: datetime) -> dict[str, Any]:
    """The first example: the first route's first rule, a caller that may claim its purpose."""
    example: dict[str, Any] = {
        "name": "playground example", "method": "GET", "path": "/", "caller": "", "purpose": "",
        "headers": [], "consent": {}, "consent_subjects": "", "consent_unavailable": False,
        "status": 200, "body": "{}", "now": now.replace(microsecond=0).isoformat(),
    }
    if policy is None:
        return example
    example["consent"] = dict.fromkeys(consent_keys(policy), "given")
    route = next((r for r in policy.routes if r.rules), None)
    if route is None:
        return example
    purpose = next(iter(route.rules))
    path = route.template
    for _, name in route.params:
        path = path.replace("{" + name + "}", f"example-{name}")
    caller = next((c.name for c in policy.callers.values() if c.may_claim(purpose)), "")
    rule_paths = [r.path for r in route.rules[purpose].plan.rules]
    body: Any
    if route.each is None:
        body = sample_document(policy, rule_paths)
    else:  # a list route: items with the policy's fields and distinct subjects, at the list path
        lst, n = route.each[0], len(route.each[0])
        item = sample_document(policy, [p[n:] for p in rule_paths if p[:n] == lst])
        items = []
        for k in (1, 2):
            one = json.loads(json.dumps(item))
            _put(one, route.each[1], f"example-subject-{k}", force=True)
            items.append(one)
        body = {}
        for p in rule_paths:
            if p[:n] != lst:
                _put(body, p, _sample(p))
        if n > 1:
            _put(body, lst[:-1], items, force=True)
        else:
            body = items
    example.update(method=route.method, path=path, caller=caller, purpose=purpose,
                   body=json.dumps(body, indent=2, ensure_ascii=False), file=route.loc.file)
    return example


# ---------------------------------------------------------------- example → case
def _consent(example: Mapping[str, Any], policy: CompiledPolicy, now: str) -> Any:
    if example.get("consent_unavailable"):
        return "unavailable"
    notice: dict[str, int] = {}
    for p in policy.purposes.values():
        if p.consent_key and p.min_notice:
            notice[p.consent_key] = max(notice.get(p.consent_key, 0), p.min_notice)

    def state(key: str, status: str) -> Any:
        if status not in STATES:
            raise ExampleError(f"consent for {key!r} must be one of {', '.join(STATES)}")
        if status != "given":
            return status
        spec: dict[str, Any] = {"status": "given", "at": now}
        if key in notice:
            spec["notice_version"] = notice[key]
        return spec

    everyone = {k: state(k, str(v)) for k, v in (example.get("consent") or {}).items() if v != "missing"}
    out: dict[str, Any] = {"*": everyone}
    text = str(example.get("consent_subjects") or "").strip()
    if text:
        try:
            per = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ExampleError("consent per subject: not valid YAML") from exc
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            raise ExampleError("consent per subject maps a subject to {consent key: state}")
        for subject, keys in per.items():
            out[str(subject)] = {**everyone, **{str(k): state(str(k), str(v)) for k, v in keys.items()
                                                if v != "missing"}}
    return out


def _body(example: Mapping[str, Any]) -> dict[str, Any]:
    """The upstream response: JSON when the text parses, else sent raw (veil then fails closed)."""
    text = str(example.get("body") or "")
    status = int(example.get("status") or 200)
    if not text.strip():
        return {"status": status}
    try:
        return {"status": status, "body": orjson.loads(text)}
    except orjson.JSONDecodeError:
        return {"status": status, "raw": text}


def case_of(example: Mapping[str, Any], policy: CompiledPolicy) -> dict[str, Any]:
    """The example as a policy test case (without `expect`)."""
    now = str(example.get("now") or datetime.now(UTC).replace(microsecond=0).isoformat())
    headers: dict[str, str] = {}
    for pair in example.get("headers") or []:
        if isinstance(pair, list | tuple) and len(pair) == 2 and str(pair[0]).strip():
            headers[str(pair[0]).strip()] = str(pair[1])
    request: dict[str, Any] = {"method": str(example.get("method") or "GET").upper(),
                               "path": str(example.get("path") or "/")}
    if example.get("caller"):
        request["caller"] = str(example["caller"])
    if example.get("purpose"):
        request["purpose"] = str(example["purpose"])
    if headers:
        request["headers"] = headers
    return {"name": str(example.get("name") or "playground example"), "now": now, "request": request,
            "consent": _consent(example, policy, now), "response": _body(example)}


# ---------------------------------------------------------------- evaluate
def _loc(compiled: Compiled, loc: Location | None) -> dict[str, Any] | None:
    where = compiled.where(loc)
    return {"file": where.file, "line": where.line, "col": where.col, "text": str(where)} if where else None


def _pretty(doc: Any) -> list[str]:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False).splitlines()


def evaluate(compiled: Compiled, example: Mapping[str, Any]) -> dict[str, Any]:
    """The decision for an example against a compiled policy, shaped for the page."""
    policy = compiled.policy
    if policy is None:
        return {"ok": False, "diagnostics": compiled.diagnostics_json()}
    case_dict = case_of(example, policy)
    try:
        case = case_from_dict({**case_dict, "expect": {"decision": "allow"}}, Location("<playground>", 0, 0))
    except TestFileError as exc:
        raise ExampleError(str(exc).replace("<playground>:0: ", "")) from exc
    exp = explain_request(policy, case.request, case.consent, case.response, case.now)
    out = exp.outcome
    expect: dict[str, Any] = {"decision": out.decision, "reason": out.reason, "status": out.status}
    headers = {"Veil-Decision": out.decision, "Veil-Policy": policy.version}
    if out.decision == "block":
        _, raw = problem_body(Reason.of(out.reason), "(assigned by the proxy)", status=out.status)
        body: Any = orjson.loads(raw)
        headers["Content-Type"] = "application/problem+json"
    else:
        body = out.body
        headers["Content-Type"] = "application/json"
        if out.body is not None:
            expect["body"] = out.body
    upstream = case.response.body if case.response.has_body else None
    diff = list(difflib.unified_diff(_pretty(upstream) if upstream is not None else [],
                                     _pretty(body) if out.decision != "block" and body is not None else [],
                                     "upstream", "sent", lineterm="", n=2))
    title = REASONS.get(out.reason, ("", ""))[1] if out.reason != "ok" else ""
    return {
        "ok": True,
        "diagnostics": compiled.diagnostics_json(),
        "decision": out.decision, "reason": out.reason, "title": title, "status": out.status,
        "route": exp.route, "purpose": exp.purpose,
        "rules": [{**(_loc(compiled, loc) or {}), "statement": _line(policy, loc)} for loc in exp.locations],
        "fields": [{**f.to_json(), "location": _loc(compiled, f.location)} for f in exp.fields],
        "response": {"status": out.status, "headers": headers, "body": body},
        "diff": diff,
        "case": {**case_dict, "expect": expect},
    }


def _line(policy: CompiledPolicy, loc: Location) -> str:
    from veil.policy.explain import source_line

    return source_line(policy.sources, loc)


# ---------------------------------------------------------------- save as a test case
def save_case(path: Path, case: Mapping[str, Any]) -> dict[str, Any]:
    """Add (or replace, by name) a case in a policy test file the playground writes; returns where.
    The file is read back with `load_cases` before it replaces the old one."""
    data: dict[str, Any] = {"cases": []}
    if path.exists():
        try:
            loaded = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ExampleError(f"{path}: cannot read it as a test file") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("cases"), list):
            raise ExampleError(f"{path} is not a policy test file (a mapping with a `cases` list)")
        data = loaded
    cases = [c for c in data["cases"] if not (isinstance(c, dict) and c.get("name") == case["name"])]
    data["cases"] = [*cases, dict(case)]
    if "description" not in data:
        data = {"description": "Cases saved from `veil playground`.", **data}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    check = path.with_name(f".{path.name}.check.yaml")
    try:
        check.write_text(text, encoding="utf-8")
        loaded_cases = load_cases(check)  # the test runner must read what we write
    except TestFileError as exc:
        raise ExampleError(f"the case would not load: {exc}") from exc
    finally:
        check.unlink(missing_ok=True)
    write_text_atomically(path, text, mode=0o644)
    line = next((c.where.line for c in loaded_cases if c.name == case["name"]), 0)
    return {"file": str(path), "line": line, "cases": len(loaded_cases)}


__all__ = ["ExampleError", "case_of", "consent_keys", "defaults", "evaluate", "sample_document", "save_case"]
