"""Conformance cases (tests/cases/*.yaml), run by one parametrized test.

A case is a policy snippet (`policy`: text, or a list of texts joined by newlines) and either an
expected diagnostic (`error`: code, optional `severity`, `at` "line:col", `hint` substring) or a
request/consent/response with expectations, in the schema of policy test files (policies/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from veil.errors import Diagnostic, Diagnostics, Severity
from veil.location import Location
from veil.policy.load import load_policy
from veil.policy.testing import case_from_dict, load_yaml, run_case

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
    result = run_case(policy, case_from_dict(spec, Location(str(path), 0, 0), now=now))
    assert result.ok, "\n".join(result.failures)


def test_every_check_code_has_a_case() -> None:
    import re

    import veil.policy.checks as checks

    source = Path(checks.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'ctx\.(?:error|warn)\(\s*"([a-z_]+)"', source))
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
