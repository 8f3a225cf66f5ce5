"""Bench figures: rounds → rows (medians and spread) → ratios → a table for people and JSON for machines.

A row's figure is the median of its rounds; the spread is the min-max of the rounds' requests/s.
CPU per request is CPU seconds of the process(es) under test over the requests of the measured window.
A ratio is the median requests/s of one row over another's, or None when either row is missing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

# ratio name → (numerator row key, denominator row key)
RATIOS: dict[str, tuple[str, str]] = {
    "enforce_small_vs_passthrough": ("veil_enforce_small", "passthrough"),
    "enforce_list_vs_parse_only": ("veil_enforce_list", "parse_only_list"),
    "report_only_vs_passthrough": ("veil_report_only", "passthrough"),
    "discovery_vs_report_only": ("veil_report_only_discovery", "veil_report_only"),
    "enforce_small_fsync_always_vs_passthrough": ("veil_enforce_small_fsync", "passthrough"),
    "passthrough_vs_direct": ("passthrough", "upstream_direct"),
    "httpx_vs_aiohttp_passthrough": ("passthrough_httpx", "passthrough"),
}
MAX_BAD_SHARE = 0.01  # rounds with more failed or non-2xx responses than this are flagged


@dataclass(frozen=True)
class RoundStats:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float | None
    requests: int
    non_2xx: int
    errors: int


@dataclass
class RowResult:
    key: str  # stable id, used by ratios and JSON
    label: str  # row number shown in the table ("1", "2b")
    title: str
    body: str  # response size class ("1 KB", "1 MB")
    rounds: list[RoundStats] = field(default_factory=list)
    error: str | None = None  # set when the row failed to run (a failure of the bench)
    skipped: str | None = None  # set when the row was not run on purpose (why)

    @property
    def ran(self) -> bool:
        return self.error is None and self.skipped is None and bool(self.rounds)

    @property
    def ok(self) -> bool:
        """Ran and measured something: a round shorter than one response under load measures nothing."""
        return self.ran and sum(r.requests for r in self.rounds) > 0

    def _median(self, values: list[float]) -> float | None:
        return float(statistics.median(values)) if values and self.ok else None

    @property
    def rps(self) -> float | None:
        return self._median([r.rps for r in self.rounds])

    @property
    def p50_ms(self) -> float | None:
        return self._median([r.p50_ms for r in self.rounds])

    @property
    def p99_ms(self) -> float | None:
        return self._median([r.p99_ms for r in self.rounds])

    @property
    def cpu_us_per_req(self) -> float | None:
        return self._median([r.cpu_us_per_req for r in self.rounds if r.cpu_us_per_req is not None])

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(r.rps for r in self.rounds), max(r.rps for r in self.rounds)) if self.ok else None

    @property
    def bad_responses(self) -> int:
        return sum(r.non_2xx + r.errors for r in self.rounds)

    @property
    def suspect(self) -> bool:
        total = sum(r.requests + r.errors for r in self.rounds)
        return total == 0 or self.bad_responses > MAX_BAD_SHARE * total

    def to_dict(self) -> dict[str, Any]:
        spread = self.spread
        return {
            "key": self.key, "label": self.label, "title": self.title, "body": self.body,
            "ok": self.ok, "error": self.error, "skipped": self.skipped, "suspect": self.ok and self.suspect,
            "rps": self.rps,
            "rps_min": spread[0] if spread else None,
            "rps_max": spread[1] if spread else None,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "cpu_us_per_req": self.cpu_us_per_req,
            "bad_responses": self.bad_responses,
            "rounds": [vars(r) for r in self.rounds],
        }


@dataclass
class BenchResult:
    rows: list[RowResult]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> RowResult | None:
        return next((r for r in self.rows if r.key == key), None)

    @property
    def ratios(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, (num, den) in RATIOS.items():
            a, b = self.row(num), self.row(den)
            ra, rb = (a.rps if a else None), (b.rps if b else None)
            out[name] = ra / rb if ra is not None and rb else None
        return out

    @property
    def failed(self) -> bool:
        return any(r.error is not None for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [r.to_dict() for r in self.rows], "ratios": self.ratios,
                "notes": self.notes}


def write_json(result: BenchResult, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(result: BenchResult) -> str:
    m = result.meta
    lines = [
        f"veil bench: {m.get('rounds')} round(s) x {m.get('duration')} s, "
        f"{m.get('connections')} connections, load generator {m.get('tool')}, "
        f"{m.get('cpus')} CPU(s), loopback",
        "",
        f"{'#':<3} {'scenario':<38} {'body':<5} {'req/s':>9} {'(min-max)':<17} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU us/req':>10} {'bad':>5}",
    ]
    for row in result.rows:
        if not row.ok:
            why = (f"skipped: {row.skipped}" if row.skipped else f"FAILED: {row.error}" if row.error
                   else "no response completed within a round: try a longer --duration")
            lines.append(f"{row.label:<3} {row.title:<38} {row.body:<5} {why}")
            continue
        spread = row.spread or (0.0, 0.0)
        lines.append(
            f"{row.label:<3} {row.title:<38} {row.body:<5} {_num(row.rps):>9} "
            f"{'(' + _num(spread[0]) + '-' + _num(spread[1]) + ')':<17} {_num(row.p50_ms, 2):>8} "
            f"{_num(row.p99_ms, 2):>8} {_num(row.cpu_us_per_req):>10} {row.bad_responses:>5}"
            + ("  !" if row.suspect else "")
        )
    lines += ["", "ratios (median req/s):"]
    for name, value in result.ratios.items():
        num, den = RATIOS[name]
        lines.append(f"  {name:<30} {'n/a' if value is None else f'{value:.2f}':>6}   ({num} / {den})")
    if any(r.ok and r.suspect for r in result.rows):
        lines.append(f"\n! more than {MAX_BAD_SHARE:.0%} of the responses failed or were not 2xx/3xx: "
                     "the figures of that row do not measure the intended path")
    if result.notes:
        lines += ["", *(f"note: {n}" for n in result.notes)]
    return "\n".join(lines)
