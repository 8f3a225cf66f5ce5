"""`veil check`, `veil fmt`, `veil test` and `veil explain`, run through veil.cli.main."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from veil.cli import main
from veil.demo.data import generate_customers

ROOT = Path(__file__).parents[2]
POLICIES = ROOT / "policies"


def test_example_set_checks_formats_and_tests_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(POLICIES)]) == 0
    assert "0 error(s), 0 warning(s) in 5 file(s)" in capsys.readouterr().out
    assert main(["fmt", "--check", str(POLICIES)]) == 0
    assert main(["test", str(POLICIES)]) == 0
    out = capsys.readouterr().out
    assert " 0 failed (3 file(s))" in out and "6/6 rules selected" in out


def test_check_works_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(POLICIES, tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "p"]) == 0
    assert main(["test", "p"]) == 0  # rule locations in the test files are relative to the checkout
    capsys.readouterr()


def test_check_prints_sorted_diagnostics_with_snippets(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.veil").write_text('purpose p { basis contrakt }\n')
    (tmp_path / "a.veil").write_text('caller c { key "plain" may p }\n')
    assert main(["check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.index("a.veil:1:12: error[plaintext_secret]") < out.index("b.veil:1:13: error[basis_unknown]")
    assert "    1 | purpose p { basis contrakt }\n      |             ^^^^^^^^^^^^^^" in out
    assert "= hint: did you mean 'contract'?" in out
    assert "veil check: failed: 2 error(s), 3 warning(s) in 2 file(s)" in err


def test_check_strict_fails_on_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.veil").write_text('purpose p { basis contract }\n')
    assert main(["check", str(tmp_path)]) == 0
    assert "warning[retention_missing]" in capsys.readouterr().out
    assert main(["check", "--strict", str(tmp_path)]) == 1
    capsys.readouterr()


def test_check_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2


def test_fmt_rewrites_checks_and_never_touches_broken_files(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    messy = tmp_path / "m.veil"
    messy.write_text("category   a =x,y  # note\n")
    messy.chmod(0o640)
    broken = tmp_path / "z.veil"
    broken.write_text("purpose {\n")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"would reformat {messy}" in out and "z.veil:1:9: error[parse_error]" in err
    assert messy.read_text() == "category   a =x,y  # note\n"
    assert main(["fmt", str(tmp_path)]) == 1  # the broken file still fails the run
    assert messy.read_text() == "category a = x, y  # note\n"
    assert messy.stat().st_mode & 0o777 == 0o640
    assert broken.read_text() == "purpose {\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.veil", "z.veil"]  # no temporary files left
    broken.unlink()
    assert main(["fmt", "--check", str(tmp_path)]) == 0
    capsys.readouterr()


def _write_test(tmp_path: Path, body: str) -> Path:
    shutil.copytree(POLICIES, tmp_path / "p", ignore=shutil.ignore_patterns("tests"))
    (tmp_path / "p" / "tests").mkdir()
    f = tmp_path / "p" / "tests" / "t.yaml"
    f.write_text(body)
    return f


def test_test_failure_shows_a_unified_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write_test(tmp_path, """
now: "2026-06-01T00:00:00Z"
cases:
  - name: wrong expectation
    request: {path: /segments/sizes, caller: analytics, purpose: analytics.segments}
    response: {body: {groups: [{segment: a, country: DE, count: 12, secret: 1}]}}
    expect: {decision: allow, body: {groups: [{segment: a, country: DE, count: 12, secret: 1}]}}
""")
    assert main(["test", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {f}:4: wrong expectation" in out
    assert '      -  "decision": "allow"\n      +  "decision": "redact"\n' in out
    assert "--- expected body\n      +++ actual body" in out and '      -      "secret": 1,\n' in out
    assert "rule never selected" in out and "0 passed, 1 failed" in out


def test_test_file_schema_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write_test(tmp_path, "cases:\n  - name: x\n    request: {path: /a}\n    expect: {decison: allow}\n")
    assert main(["test", str(tmp_path / "p")]) == 1
    assert f"{f}:4:14: unknown expectation(s) decison (allowed: " in capsys.readouterr().err


def test_explain_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "c.json"
    body.write_text(json.dumps(generate_customers(1)[0]))
    args = ["explain", "--policy", str(POLICIES), "--request", "GET /customers/c-000000", "--caller",
            "storefront", "--purpose", "personalize.recommendations", "--consent", "personalization=given",
            "--body", str(body)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("admitted: redact (200) route /customers/{id} for personalize.recommendations")
    assert "routes.veil:9:5  | hash email" in out
    assert "name.last" in out and "removed by minimization" in out
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    fates = {f["path"]: (f["fate"], f["location"]) for f in data["fields"]}
    assert fates["email"] == ("transformed", f"{POLICIES}/routes.veil:9:5")
    assert fates["payment"] == ("dropped", f"{POLICIES}/routes.veil:12:5")
    assert fates["name.first"][0] == "kept" and fates["phone"][0] == "removed"
    assert data["body"]["birth_date"] == generate_customers(1)[0]["birth_date"][:4]


def test_explain_blocked(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["explain", "--policy", str(POLICIES), "--request", "GET /customers/c-1", "--caller", "ad_partner",
            "--purpose", "advertising.targeted", "--consent", "advertising=given", "--gpc", "--json"]
    assert main(args) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["decision"], data["reason"], data["status"]) == ("block", "gpc_opt_out", 403)
    assert data["rules"] == [f"{POLICIES}/routes.veil:15:3"]
    assert main(["explain", "--policy", str(POLICIES), "--request", "GET /customers/c-1"]) == 1
    assert "blocked: unknown_caller (401)" in capsys.readouterr().out
    assert main(["explain", "--policy", str(POLICIES), "--request", "nonsense"]) == 2
    capsys.readouterr()
