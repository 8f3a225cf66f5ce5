"""`veil bench` end to end: real servers, real load, the table and the JSON file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from veil.bench import Scenario, default_scenarios, run_bench
from veil.bench.report import BenchResult, RoundStats, RowResult, render_table
from veil.cli import main

RATIO_KEYS = {"enforce_small_vs_passthrough", "enforce_list_vs_parse_only", "report_only_vs_passthrough",
              "enforce_list_worst_vs_parse_only", "enforce_list_vs_parse_only.issue",
              "enforce_list_vs_parse_only.transforms"}
SHORT_ROWS = ("upstream_direct,passthrough,passthrough_starlette,veil_enforce_small,veil_enforce_list_issue,"
              "parse_only_issue,veil_enforce_list_transforms,parse_only_transforms")


def _veil(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_bench_short_run_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = _veil("--duration", "1", "--rounds", "1", "--shapes", "transforms,issue", "--items", "60",
                 "--seed", "3", "--field-repeats", "1", "--only", SHORT_ROWS, "--json", str(out), timeout=180)
    assert done.returncode == 0, done.stderr
    data = orjson.loads(out.read_bytes())
    assert set(data["ratios"]) >= RATIO_KEYS
    assert data["meta"]["connections"] == 16
    assert (data["meta"]["seed"], data["meta"]["items"], data["meta"]["shapes"]) == (3, 60, ["issue", "transforms"])
    rows = {r["key"]: r for r in data["rows"]}
    assert set(rows) == set(SHORT_ROWS.split(","))
    for key, row in rows.items():
        assert row["ok"], row
        assert row["rps"] > 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["cpu_us_per_req"] > 0 and row["rps_per_core"] == pytest.approx(1e6 / row["cpu_us_per_req"])
        assert row["rss_mb"] > 0
        assert len(row["rounds"]) == 1
        assert row["bad_responses"] == 0, key
    assert rows["veil_enforce_list_issue"]["shape"] == "issue"
    per_shape = {n: data["ratios"][f"enforce_list_vs_parse_only.{n}"] for n in ("issue", "transforms")}
    assert data["worst_shape"] == min(per_shape, key=lambda n: per_shape[n])
    assert data["ratios"]["enforce_list_worst_vs_parse_only"] == min(per_shape.values())
    figures = {s["name"]: s for s in data["shapes"]}
    assert set(figures) == {"issue", "transforms"}
    for s in figures.values():
        assert s["items"] == 60 and s["kept_leaves"] > 0 and s["dropped_leaves"] > 0
        assert s["cost"]["us_per_request"] > 0 and s["cost"]["us_per_dropped"] > 0
    assert figures["transforms"]["cost"]["us_per_transformed"] is not None
    for line in ("upstream direct", "plain pass-through (httptools + aiohttp)", "parse-only: issue",
                 "veil enforce list: transforms", "enforce_list_worst_vs_parse_only", "us/kept"):
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


def test_missing_veil_factory_skips_the_veil_rows() -> None:
    rows = default_scenarios(None, "`veil serve` is not available yet", ("demo", "issue"))
    skipped = [s for s in rows if s.skipped and s.key != "passthrough_nginx"]
    assert [s.label for s in skipped] == ["3", "3b", "3s", "3c", "5", "5b", "4a", "4b"]
    assert all(s.setup is None for s in skipped)
    assert [s.label for s in rows if not s.skipped and s.key != "passthrough_nginx"] == ["1", "2", "2s", "2b",
                                                                                        "6a", "6b"]


def test_unknown_shapes_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("--shapes", "demo,nope") == 2
    assert "unknown shape(s) nope" in capsys.readouterr().err
    assert _main("--items", "0") == 2


def test_worst_shape_ratio() -> None:
    def row(key: str, rps: float, shape: str | None) -> RowResult:
        return RowResult(key, key, key, "1 MB", [RoundStats(rps, 1.0, 2.0, 100.0, 100, 0, 0, 80.0)], shape=shape)

    result = BenchResult([row("veil_enforce_list_deep", 40.0, "deep"), row("parse_only_deep", 50.0, "deep"),
                          row("veil_enforce_list_numbers", 30.0, "numbers"), row("parse_only_numbers", 60.0, "numbers"),
                          RowResult("veil_enforce_list_issue", "4b", "x", "1 MB", skipped="no", shape="issue")])
    ratios = result.ratios
    assert ratios["enforce_list_vs_parse_only.deep"] == pytest.approx(0.8)
    assert ratios["enforce_list_vs_parse_only.numbers"] == pytest.approx(0.5)
    assert ratios["enforce_list_vs_parse_only.issue"] is None
    assert result.worst_shape == "numbers" and ratios["enforce_list_worst_vs_parse_only"] == pytest.approx(0.5)
    assert result.rows[0].rps_per_core == pytest.approx(10_000) and result.rows[0].rss_mb == 80.0
    table = render_table(result)
    assert "worst shape: numbers" in table


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
    assert seen == ["A a started", "B b started", "A a round 1/2", "B b round 1/2", "A a round 2/2",
                    "B b round 2/2"]
    assert result.meta["order"].startswith("interleaved")


def test_a_row_whose_first_requests_fail_is_broken() -> None:
    from veil.bench import BenchContext, Target, servers

    def refused(ctx: BenchContext) -> Target:  # the upstream port is closed: every answer is a 502
        proxy = ctx.keep(servers.start_plain(f"http://127.0.0.1:{servers.free_port()}"))
        return Target(proxy.url + "/customers/c-000001", (), (proxy,))

    result = run_bench([Scenario("refused", "r", "refused", "1 KB", refused)], rounds=1, duration=0.5,
                       connections=2, tool="builtin")
    assert result.failed and not result.rows[0].rounds
    assert result.rows[0].error == "the first requests were answered 502"
