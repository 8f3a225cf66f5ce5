"""`veil check --format json` (for editors and CI) and `veil fmt --diff`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from veil.cli import main

ROOT = Path(__file__).parents[2]


def test_check_json_lists_every_diagnostic_with_its_location(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.veil").write_text('purpose p { basis contrakt }\n')
    (tmp_path / "a.veil").write_text('caller c { key "plain" may p }\n')
    assert main(["check", "--format", "json", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    assert report["ok"] is False and report["errors"] == 2 and report["files"] == 2
    assert report["warnings"] == 3 and len(report["diagnostics"]) == 5
    first, *_ = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert first == {"file": str(tmp_path / "a.veil"), "line": 1, "col": 12, "end_line": first["end_line"],
                     "end_col": first["end_col"], "severity": "error", "code": "plaintext_secret",
                     "message": first["message"], "hint": first["hint"]}
    basis = next(d for d in report["diagnostics"] if d["code"] == "basis_unknown")
    assert (basis["line"], basis["col"], basis["end_col"]) == (1, 13, 27)
    assert basis["hint"] == "did you mean 'contract'?"
    keys = [(d["file"], d["line"], d["col"]) for d in report["diagnostics"]]
    assert keys == sorted(keys)


def test_check_json_clean_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--format", "json", str(ROOT / "policies")]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "errors": 0, "warnings": 0, "files": 5,
                                                   "diagnostics": []}
    (tmp_path / "a.veil").write_text('purpose p { basis contract }\n')
    assert main(["check", "--format", "json", str(tmp_path)]) == 0
    assert main(["check", "--strict", "--format", "json", str(tmp_path)]) == 1
    outs = [json.loads(x) for x in capsys.readouterr().out.replace("}\n{", "}\x00{").split("\x00")]
    assert outs[0]["ok"] is True and outs[1]["ok"] is False and outs[1]["warnings"] >= 1


def test_fmt_diff_prints_a_patch_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy = tmp_path / "m.veil"
    messy.write_text("category   a =x,y  # note\ncategory b = z\n")
    clean = tmp_path / "n.veil"
    clean.write_text("category c = w\n")
    assert main(["fmt", "--diff", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out == (f"--- a/{messy}\n+++ b/{messy}\n@@ -1,2 +1,2 @@\n-category   a =x,y  # note\n"
                   "+category a = x, y  # note\n category b = z\n")
    assert messy.read_text() == "category   a =x,y  # note\ncategory b = z\n"
    # the patch applies: what it produces is what `veil fmt` writes
    patch = tmp_path / "fix.patch"
    patch.write_text(out.replace(f"a/{messy}", "m.veil").replace(f"b/{messy}", "m.veil"))
    if shutil.which("patch") is None:
        pytest.skip("patch is not installed")
    run = subprocess.run(["patch", "-s", "-p0", "-i", str(patch)], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    formatted = messy.read_text()
    messy.write_text("category   a =x,y  # note\ncategory b = z\n")
    assert main(["fmt", str(messy)]) == 0
    assert messy.read_text() == formatted
    capsys.readouterr()
    assert main(["fmt", "--diff", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


def test_paths_in_output_are_written_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`veil test` of a test file alone finds the policy set next to it; its locations are printed
    relative when the file was named relatively, absolute when it was named absolutely."""
    shutil.copytree(ROOT / "policies", tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    assert main(["test", "p/tests/segments.yaml"]) == 0
    out = capsys.readouterr().out
    assert "p/routes.veil:" in out and str(tmp_path) not in out  # rules no segments case selects
    assert main(["test", str(tmp_path / "p" / "tests" / "segments.yaml")]) == 0
    assert f"{tmp_path}/p/routes.veil:" in capsys.readouterr().out
