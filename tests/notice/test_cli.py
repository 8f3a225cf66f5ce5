"""`veil notice` through veil.cli.main."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from veil.cli import main

from .conftest import EXAMPLE


def test_markdown_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Privacy notice: Acme Retail GmbH")
    assert "Reference: `advertising.targeted`" in out


def test_html_and_json_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE), "--format", "html"]) == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")
    assert main(["notice", str(EXAMPLE), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["controller"] == "Acme Retail GmbH" and data["language"] == "en"


def test_language_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE), "--format", "html", "--lang", "de"]) == 0
    page = capsys.readouterr().out
    assert '<html lang="de">' in page and "Datenschutzhinweise: Acme Retail GmbH" in page
    assert "Produktempfehlungen im Shop" in page  # the purpose's own German description
    with pytest.raises(SystemExit) as info:  # argparse: a usage error
        main(["notice", str(EXAMPLE), "--lang", "fr"])
    assert info.value.code == 2 and "'fr'" in capsys.readouterr().err


def test_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notice.html"
    assert main(["notice", str(EXAMPLE), "--format", "html", "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["notice.html"]  # no temp file left


def test_records_csv_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE), "--records"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["purpose"] for r in rows} == {
        "personalize.recommendations", "advertising.targeted", "orders.fulfillment", "analytics.segments"}
    assert main(["notice", str(EXAMPLE), "--records", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(rows)


def test_wrong_format_for_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE), "--records", "--format", "html"]) == 2
    assert "--records" in capsys.readouterr().err
    assert main(["notice", str(EXAMPLE), "--format", "csv"]) == 2


def test_invalid_policy_exits_1_with_diagnostics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.veil"
    bad.write_text('purpose p { description "d" basis contrakt }\n', encoding="utf-8")
    assert main(["notice", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "basis_unknown" in captured.err and "bad.veil:1" in captured.err


def test_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notice", str(EXAMPLE), "--output", str(tmp_path / "missing" / "n.md")]) == 1
    assert "output_unwritable" in capsys.readouterr().err
