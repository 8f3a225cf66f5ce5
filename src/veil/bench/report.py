"""Bench figures: rounds → rows (medians and spread) → ratios → a table for people and JSON for machines.

A row's figure is the median of its rounds; the spread is the min-max of the rounds' requests/s.
CPU per request is CPU seconds of the process(es) under test over the requests of the measured window.
A ratio is the median requests/s of one row over another's, or None when either row is missing. Each
corpus shape gives `enforce_list_vs_parse_only.<shape>` (veil's list row over the parse-only reference
on the same body); `enforce_list_worst_vs_parse_only` is the lowest of them (`worst_shape` names it).
Requests/s per core is 1e6 / CPU µs per request of the process under test (one worker: what one core
delivers when the load generator and the upstream run elsewhere); RSS is the process's (and its
children's) VmRSS at the end of the row's last round. The shape section adds, per shape, the leaves one
response keeps, drops and transforms and the CPU per field measured in-process (veil.bench.fieldcost).
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
    "enforce_list_vs_parse_only": ("veil_enforce_list_demo", "parse_only_demo"),
    "report_only_vs_passthrough": ("veil_report_only", "passthrough"),
    "discovery_vs_report_only": ("veil_report_only_discovery", "veil_report_only"),
    "enforce_small_fsync_always_vs_passthrough": ("veil_enforce_small_fsync", "passthrough"),
    "enforce_small_shipped_vs_not": ("veil_enforce_small_ship", "veil_enforce_small"),
    "enforce_small_sidecar_shipped_vs_not": ("veil_enforce_small_ship_sidecar", "veil_enforce_small"),
    "enforce_small_vs_starlette_passthrough": ("veil_enforce_small", "passthrough_starlette"),
    "passthrough_vs_direct": ("passthrough", "upstream_direct"),
    "starlette_vs_plain_passthrough": ("passthrough_starlette", "passthrough"),
    "nginx_vs_plain_passthrough": ("passthrough_nginx", "passthrough"),
    "httpx_vs_aiohttp_passthrough": ("passthrough_httpx", "passthrough_starlette"),
}
SHAPE_RATIO = "enforce_list_vs_parse_only."  # + shape name
WORST_RATIO = "enforce_list_worst_vs_parse_only"
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
    rss_mb: float | None = None  # VmRSS of the process(es) under test at the end of the round


@dataclass
class RowResult:
    key: str  # stable id, used by ratios and JSON
    label: str  # row number shown in the table ("1", "2b")
    title: str
    body: str  # response size class ("1 KB", "1 MB")
    rounds: list[RoundStats] = field(default_factory=list)
    error: str | None = None  # set when the row failed to run (a failure of the bench)
    skipped: str | None = None  # set when the row was not run on purpose (why)
    shape: str | None = None  # the corpus shape of a list row

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
    def rps_per_core(self) -> float | None:
        """Requests/s one core delivers: 1e6 / CPU µs per request of the process(es) under test."""
        cpu = self.cpu_us_per_req
        return 1e6 / cpu if cpu else None

    @property
    def rss_mb(self) -> float | None:
        last = [r.rss_mb for r in self.rounds if r.rss_mb is not None]
        return last[-1] if last and self.ok else None

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
            "rps_per_core": self.rps_per_core, "rss_mb": self.rss_mb, "shape": self.shape,
            "bad_responses": self.bad_responses,
            "rounds": [vars(r) for r in self.rounds],
        }


@dataclass
class ShapeFigures:
    """One corpus shape: its size, what one response keeps, drops and transforms, and CPU per field."""

    name: str
    title: str
    items: int
    body_bytes: int
    kept_leaves: int
    dropped_leaves: int
    transformed_leaves: int
    cost: dict[str, Any] | None = None  # veil.bench.fieldcost.FieldCost.to_dict(), when measured

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class BenchResult:
    rows: list[RowResult]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    shapes: list[ShapeFigures] = field(default_factory=list)

    def row(self, key: str) -> RowResult | None:
        return next((r for r in self.rows if r.key == key), None)

    def _ratio(self, num: str, den: str) -> float | None:
        a, b = self.row(num), self.row(den)
        ra, rb = (a.rps if a else None), (b.rps if b else None)
        return ra / rb if ra is not None and rb else None

    def shape_ratios(self) -> dict[str, float | None]:
        """veil's list row over the parse-only row of the same shape, per shape with a list row."""
        names = list(dict.fromkeys(r.shape for r in self.rows if r.shape is not None))
        return {n: self._ratio(f"veil_enforce_list_{n}", f"parse_only_{n}") for n in names}

    @property
    def worst_shape(self) -> str | None:
        measured = {n: v for n, v in self.shape_ratios().items() if v is not None}
        return min(measured, key=lambda n: measured[n]) if measured else None

    @property
    def ratios(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {name: self._ratio(num, den) for name, (num, den) in RATIOS.items()}
        per_shape = self.shape_ratios()
        worst = self.worst_shape
        out[WORST_RATIO] = per_shape[worst] if worst is not None else None
        out.update({SHAPE_RATIO + n: v for n, v in per_shape.items()})
        return out

    @property
    def failed(self) -> bool:
        return any(r.error is not None for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [r.to_dict() for r in self.rows], "ratios": self.ratios,
                "worst_shape": self.worst_shape, "shapes": [s.to_dict() for s in self.shapes], "notes": self.notes}


def render_shapes(result: BenchResult) -> list[str]:
    """The shape section: leaves per response and CPU per field, in-process on the real flow."""
    lines = [
        "shapes: leaves per response (kept / dropped / transformed), CPU per field in µs and per request in "
        "ms (in-process on the real flow, least of the repeats)",
        f"  {'shape':<14} {'items':>6} {'B/item':>6} {'kept':>7} {'dropped':>8} {'transf.':>8} "
        f"{'us/kept':>8} {'us/drop':>8} {'us/transf':>9} {'ms/req':>7}  title",
    ]
    for s in result.shapes:
        c = s.cost or {}
        lines.append(
            f"  {s.name:<14} {s.items:>6} {_num(s.body_bytes / max(s.items, 1)):>6} {s.kept_leaves:>7,} "
            f"{s.dropped_leaves:>8,} {s.transformed_leaves:>8,} {_num(c.get('us_per_kept'), 2):>8} "
            f"{_num(c.get('us_per_dropped'), 2):>8} {_num(c.get('us_per_transformed'), 2):>9} "
            f"{_num(c['us_per_request'] / 1000 if c.get('us_per_request') else None, 1):>7}  {s.title}")
    return lines


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
        f"{'#':<3} {'scenario':<46} {'body':<6} {'req/s':>9} {'(min-max)':<17} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU us/req':>10} {'req/s/core':>10} {'RSS MB':>6} {'bad':>4}",
    ]
    for row in result.rows:
        if not row.ok:
            why = (f"skipped: {row.skipped}" if row.skipped else f"FAILED: {row.error}" if row.error
                   else "no response completed within a round: try a longer --duration")
            lines.append(f"{row.label:<3} {row.title:<46} {row.body:<6} {why}")
            continue
        spread = row.spread or (0.0, 0.0)
        lines.append(
            f"{row.label:<3} {row.title:<46} {row.body:<6} {_num(row.rps):>9} "
            f"{'(' + _num(spread[0]) + '-' + _num(spread[1]) + ')':<17} {_num(row.p50_ms, 2):>8} "
            f"{_num(row.p99_ms, 2):>8} {_num(row.cpu_us_per_req):>10} {_num(row.rps_per_core):>10} "
            f"{_num(row.rss_mb):>6} {row.bad_responses:>4}"
            + ("  !" if row.suspect else "")
        )
    ratios = result.ratios
    lines += ["", "ratios (median req/s):"]
    for name, (num, den) in RATIOS.items():
        value = ratios[name]
        lines.append(f"  {name:<42} {'n/a' if value is None else f'{value:.2f}':>6}   ({num} / {den})")
    per_shape = result.shape_ratios()
    if per_shape:
        worst = result.worst_shape
        value = ratios[WORST_RATIO]
        lines.append(f"  {WORST_RATIO:<42} {'n/a' if value is None else f'{value:.2f}':>6}   "
                     f"(worst shape: {worst or 'n/a'})")
        for name, value in per_shape.items():
            lines.append(f"  {SHAPE_RATIO + name:<42} {'n/a' if value is None else f'{value:.2f}':>6}")
    if result.shapes:
        lines += ["", *render_shapes(result)]
    if any(r.ok and r.suspect for r in result.rows):
        lines.append(f"\n! more than {MAX_BAD_SHARE:.0%} of the responses failed or were not 2xx/3xx: "
                     "the figures of that row do not measure the intended path")
    if result.notes:
        lines += ["", *(f"note: {n}" for n in result.notes)]
    return "\n".join(lines)
