"""Conformance cases (tests/cases/*.yaml), run by one parametrized test.

A case is a policy snippet (`policy`: text, or a list of texts joined by newlines) and either an
expected diagnostic (`error`: code, optional `severity`, `at` "line:col", `hint` substring) or a
request/consent/response with expectations, in the schema of policy test files (policies/README.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import run_through_proxy
from veil.errors import Diagnostic, Diagnostics, Severity
from veil.location import Location
from veil.policy.load import load_policy
from veil.policy.testing import case_from_dict, load_cases, load_yaml, run_case

ROOT = Path(__file__).parents[2]
CASES = Path(__file__).parents[1] / "cases"


def _collect() -> list[Any]:
    out = []
    for path in sorted(CASES.glob("*.yaml")):
        data = load_yaml(path.read_text(encoding="utf-8"))
        for case in data["cases"]:
            out.append(pytest.param(path, data.get("now"), case, id=f"{path.stem}: {case['name']}"))
    return out


def _diagnostics(policy_file: Path) -> list[Diagnostic]:
    try:
        policy = load_policy([policy_file])
    except Diagnostics as exc:
        return exc.items
    return list(policy.warnings)


def test_a_complete_notice_has_no_findings(tmp_path: Path) -> None:
    cases = load_yaml((CASES / "checks.yaml").read_text(encoding="utf-8"))
    full = cases["fixtures"]["full_notice"] + cases["fixtures"]["ok_consent"] + """
purpose recs {
  description "d"
  basis consent
  consent "recs"
  processing profiling
  profiling_logic "We rank products by what customers with similar purchases bought."
  profiling_logic de "Wir ordnen Produkte danach, was Kunden mit ähnlichen Käufen gekauft haben."
  profiling_effects "Which products you see first."
  automated_decisions none
  retention 1 year
  recipients "r"
}
notice {
  jurisdictions gdpr, ccpa
  withdraw "https://acme.example/privacy/choices"
  opt_out "https://acme.example/privacy/do-not-sell-or-share"
  limit_sensitive none
}
"""
    policy_file = tmp_path / "policy.veil"
    policy_file.write_text(full, encoding="utf-8")
    assert [d.render() for d in _diagnostics(policy_file)] == []


@pytest.mark.parametrize(("path", "now", "case"), _collect())
def test_case(path: Path, now: Any, case: dict[str, Any], tmp_path: Path) -> None:
    text = case["policy"] if isinstance(case["policy"], str) else "\n".join(case["policy"])
    policy_file = tmp_path / "policy.veil"
    policy_file.write_text(text, encoding="utf-8")
    if "error" in case:
        found = _diagnostics(policy_file)
        severity = Severity(case.get("severity", "error"))
        hits = [d for d in found if d.code == case["error"] and d.severity is severity]
        shown = "\n".join(d.render() for d in found)
        assert hits, f"expected {severity.value}[{case['error']}], got:\n{shown}"
        if "at" in case:
            line, col = map(int, str(case["at"]).split(":"))
            assert any(d.location and (d.location.line, d.location.col) == (line, col) for d in hits), shown
        if "hint" in case:
            assert any(d.hint and case["hint"] in d.hint for d in hits), shown
        return
    policy = load_policy([policy_file])
    spec = {k: v for k, v in case.items() if k != "policy"}
    parsed = case_from_dict(spec, Location(str(path), 0, 0), now=now)
    result = run_case(policy, parsed)
    assert result.ok, "\n".join(result.failures)
    # the same case through the whole proxy app (ASGI, runtime, SQLite store, decision log)
    if parsed.consent is None:
        return  # a consent store that is down: through the proxy in tests/e2e/test_faults.py
    through = asyncio.run(run_through_proxy([policy_file], parsed, tmp_path / "proxy"))
    assert through.failures == [], "through the proxy:\n" + "\n".join(through.failures)
    assert (through.view.decision, through.view.reason, through.view.status) == (
        result.outcome.decision, result.outcome.reason, result.outcome.status)
    assert through.view.body == result.outcome.body


@pytest.mark.parametrize("test_file", sorted((ROOT / "policies" / "tests").glob("*.yaml")), ids=lambda p: p.name)
def test_example_policy_tests_pass_through_the_proxy(test_file: Path, tmp_path: Path) -> None:
    """`veil test policies/` passes; so must every one of its cases sent to the proxy."""
    policy = load_policy([ROOT / "policies"])
    for i, case in enumerate(load_cases(test_file)):
        in_process = run_case(policy, case)
        assert in_process.ok, f"{case.name}: " + "\n".join(in_process.failures)
        if case.consent is None:
            continue
        through = asyncio.run(run_through_proxy([ROOT / "policies"], case, tmp_path / str(i)))
        assert through.failures == [], f"{case.name} through the proxy:\n" + "\n".join(through.failures)
        assert (through.view.decision, through.view.status, through.view.body) == (
            in_process.outcome.decision, in_process.outcome.status, in_process.outcome.body), case.name


def test_every_check_code_has_a_case() -> None:
    import re

    import veil.policy.checks as checks
    import veil.policy.lint as lint

    source = Path(checks.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'ctx\.(?:error|warn)\(\s*"([a-z_]+)"', source))
    lint_source = Path(lint.__file__).read_text(encoding="utf-8")
    codes |= set(re.findall(r'Diagnostic\(\s*(?:code,|"([a-z_]+)")', lint_source)) - {""}
    codes |= {"keep_overridden", "transform_overridden"}  # lint.py picks one of the two by statement
    codes |= {f"duplicate_{kind}" for kind in ("purpose", "category", "caller")}
    codes.discard("duplicate_")
    from veil.policy.notice import REQUIREMENTS

    codes |= {r.code for r in REQUIREMENTS}  # the notice stage warns with the table's codes
    covered = {c["error"] for c in load_yaml((CASES / "checks.yaml").read_text())["cases"] if "error" in c}
    assert codes - covered == set()


def test_notice_attributes_and_codes_are_documented() -> None:
    from veil.policy.notice import ATTRS, REQUIREMENTS

    guide = (CASES.parents[1] / "policies" / "README.md").read_text(encoding="utf-8")
    for name in ATTRS:
        assert f"| `{name}` |" in guide, name
    for r in REQUIREMENTS:
        assert f"`{r.code}`" in guide, r.code
