"""`veil bench` end to end: real servers, real load, the table and the JSON file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from veil.bench import Scenario, default_scenarios, run_bench
from veil.bench.report import BenchResult, RoundStats, RowResult, render_table
from veil.cli import main

RATIO_KEYS = {"enforce_small_vs_passthrough", "enforce_list_vs_parse_only", "report_only_vs_passthrough"}


def _veil(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_bench_short_run_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    started = time.monotonic()
    done = _veil("--duration", "1", "--rounds", "1", "--json", str(out), timeout=90)
    assert time.monotonic() - started < 40  # nine rows, five of them a veil to start
    assert done.returncode == 0, done.stderr
    data = orjson.loads(out.read_bytes())
    assert set(data["ratios"]) >= RATIO_KEYS
    rows = {r["key"]: r for r in data["rows"]}
    for key in ("upstream_direct", "passthrough", "passthrough_httpx"):
        assert rows[key]["ok"], rows[key]
        assert rows[key]["rps"] > 0 and rows[key]["p50_ms"] <= rows[key]["p99_ms"]
        assert rows[key]["cpu_us_per_req"] > 0
        assert len(rows[key]["rounds"]) == 1
    assert rows["parse_only_list"]["error"] is None  # ~10 req/s here: a 1 s round may complete none
    assert data["ratios"]["passthrough_vs_direct"] > 0
    assert data["meta"]["connections"] == 16
    for line in ("upstream direct", "bare pass-through (aiohttp)", "parse-only", "ratios"):
        assert line in done.stdout


def _main(*args: str) -> int:
    try:
        return main(["bench", *args])
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("--rounds", "0") == 2
    assert _main("--duration", "-1") == 2
    assert _main("--only", "nope") == 2
    assert "unknown row key" in capsys.readouterr().err
    assert _main("--loadgen", "ab") == 2


def test_missing_veil_factory_skips_rows_3_to_5() -> None:
    rows = default_scenarios(None, "`veil serve` is not available yet")
    skipped = [s for s in rows if s.skipped]
    assert [s.label for s in skipped] == ["3", "3b", "4", "5", "5b"]
    assert all(s.setup is None for s in skipped)
    assert [s.label for s in rows if not s.skipped] == ["1", "2", "2b", "6"]


def test_ratios_are_null_when_a_row_is_missing() -> None:
    def row(key: str, rps: float) -> RowResult:
        return RowResult(key, key, key, "1 KB", [RoundStats(rps, 1.0, 2.0, 100.0, 100, 0, 0)])

    result = BenchResult([row("passthrough", 1000.0), row("veil_enforce_small", 600.0),
                          RowResult("veil_report_only", "5", "report-only", "1 KB", skipped="no factory")])
    ratios = result.ratios
    assert ratios["enforce_small_vs_passthrough"] == pytest.approx(0.6)
    assert ratios["report_only_vs_passthrough"] is None
    assert ratios["enforce_list_vs_parse_only"] is None
    table = render_table(result)
    assert "skipped: no factory" in table and "n/a" in table


def test_median_and_spread_of_rounds() -> None:
    rounds = [RoundStats(r, p, p * 3, c, 10, 0, 0) for r, p, c in ((100, 1, 50), (300, 3, 70), (200, 2, 60))]
    row = RowResult("passthrough", "2", "t", "1 KB", rounds)
    assert (row.rps, row.p50_ms, row.p99_ms, row.cpu_us_per_req) == (200, 2, 6, 60)
    assert row.spread == (100, 300)
    assert not row.suspect
    bad = RowResult("x", "x", "x", "1 KB", [RoundStats(10, 1, 1, None, 10, 5, 0)])
    assert bad.suspect
    empty = RowResult("parse_only_list", "6", "t", "1 MB", [RoundStats(0, 0, 0, None, 0, 0, 0)])
    assert not empty.ok and empty.rps is None
    assert BenchResult([empty, row]).ratios["passthrough_vs_direct"] is None
    assert "longer --duration" in render_table(BenchResult([empty]))


def test_a_failing_row_is_recorded_and_the_others_still_run() -> None:
    def broken(ctx: object) -> object:
        raise OSError("cannot start")

    rows = [Scenario("broken", "9", "broken", "1 KB", broken)]  # type: ignore[arg-type]
    result = run_bench(rows, rounds=1, duration=0.5, connections=2, tool="builtin")
    assert result.failed
    assert result.rows[0].error == "cannot start"


def test_rounds_are_interleaved_across_rows() -> None:
    from veil.bench import _direct

    seen: list[str] = []
    rows = [Scenario("a", "A", "a", "1 KB", _direct), Scenario("b", "B", "b", "1 KB", _direct)]
    result = run_bench(rows, rounds=2, duration=0.3, connections=2, tool="builtin",
                       progress=lambda msg: seen.append(msg.split(":")[0] + msg.split(":")[1]))
    assert not result.failed
    assert seen == ["A a round 1/2", "B b round 1/2", "A a round 2/2", "B b round 2/2"]
    assert result.meta["order"].startswith("interleaved")
