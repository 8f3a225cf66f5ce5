"""`veil bench`: size a deployment by measuring veil next to its practical limits, on loopback only.

A **scenario** is one table row: `setup(ctx)` starts what it needs (registering the stops on
`ctx.stack`) and returns a `Target` (URL, request headers, the servers whose CPU is counted).
`run_bench` starts every row's servers, then runs the rounds interleaved (round 1 of every row, then
round 2, ...), then stops them; one fast upstream (`servers.start_fast_upstream`) is shared by all rows.

The veil rows (3-5) are built by a **veil scenario factory**: given a `VeilCase` (which variant, the
upstream URL, a work directory, two free ports, the subject ids the upstream serves) it writes
veil.yaml and the policy, seeds consent and returns a `VeilSetup` (config path, request path, headers,
extra environment such as key material referenced as `env:NAME`).

    rows = default_scenarios(veil_factory=None)          # rows 1, 2, 2b, 6; 3-5 skipped with a reason
    result = run_bench(rows, rounds=3, duration=5.0, connections=16)
    print(report.render_table(result))
"""

from __future__ import annotations

import os
import platform
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from veil.bench.report import BenchResult, RoundStats, RowResult
from veil.errors import VeilError

if TYPE_CHECKING:  # imported lazily: `python -m veil.bench.servers|loadgen` must not import them twice
    from veil.bench.loadgen import LoadSpec
    from veil.bench.servers import Server

__all__ = [
    "VEIL_VARIANTS", "BenchContext", "BenchResult", "RoundStats", "RowResult", "Scenario", "Target",
    "VeilCase", "VeilScenarioFactory", "VeilSetup", "default_scenarios", "run_bench", "veil_scenarios",
]

Headers = tuple[tuple[str, str], ...]
VEIL_VARIANTS = ("enforce_small", "enforce_small_fsync", "enforce_list", "report_only", "report_only_discovery")


@dataclass(frozen=True)
class Target:
    url: str
    headers: Headers = ()
    measured: tuple[Server, ...] = ()  # whose CPU is counted


@dataclass
class BenchContext:
    workdir: Path
    upstream: Server  # the shared fast upstream
    profile_id: str  # subject of the ~1 KB profile it serves for any /customers/{id}
    list_ids: tuple[str, ...]  # subjects of the ~1 MB list it serves for /customers
    stack: ExitStack = field(default_factory=ExitStack)

    def keep(self, server: Server) -> Server:
        """Stop `server` when the scenario ends."""
        self.stack.callback(server.stop)
        return server


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    title: str
    body: str
    setup: Callable[[BenchContext], Target] | None
    skipped: str | None = None  # why the row is not run, shown in the table


@dataclass(frozen=True)
class VeilCase:
    variant: str  # one of VEIL_VARIANTS
    upstream_url: str
    workdir: Path  # empty, private to this case
    proxy_port: int
    admin_port: int
    profile_id: str
    list_ids: tuple[str, ...]


@dataclass(frozen=True)
class VeilSetup:
    config_path: Path
    path: str  # request path and query, e.g. "/customers/c-000123"
    headers: Headers  # Veil-Key, Veil-Purpose, ...
    env: Mapping[str, str] = field(default_factory=dict)


VeilScenarioFactory = Callable[[VeilCase], VeilSetup]


def _servers() -> types.ModuleType:
    from veil.bench import servers

    return servers


def _direct(ctx: BenchContext) -> Target:
    return Target(f"{ctx.upstream.url}/customers/{ctx.profile_id}", (), (ctx.upstream,))


def _proxy(client: str, parse: bool, path: str) -> Callable[[BenchContext], Target]:
    def setup(ctx: BenchContext) -> Target:
        proxy = ctx.keep(_servers().start_proxy(ctx.upstream.url, client=client, parse=parse))
        return Target(proxy.url + path.format(id=ctx.profile_id), (), (proxy,))

    return setup


def _veil(factory: VeilScenarioFactory, variant: str) -> Callable[[BenchContext], Target]:
    def setup(ctx: BenchContext) -> Target:
        workdir = ctx.workdir / variant
        workdir.mkdir(parents=True, exist_ok=True)
        servers = _servers()
        case = VeilCase(variant, ctx.upstream.url, workdir, servers.free_port(), servers.free_port(),
                        ctx.profile_id, ctx.list_ids)
        made = factory(case)
        veil = ctx.keep(servers.start_veil(made.config_path, env=made.env))
        return Target(veil.url + made.path, made.headers, (veil,))

    return setup


_VEIL_ROWS = (
    ("veil_enforce_small", "3", "veil enforce (profile)", "1 KB", "enforce_small"),
    ("veil_enforce_small_fsync", "3b", "veil enforce (profile), fsync always", "1 KB", "enforce_small_fsync"),
    ("veil_enforce_list", "4", "veil enforce list, per-item consent", "1 MB", "enforce_list"),
    ("veil_report_only", "5", "veil report-only (profile)", "1 KB", "report_only"),
    ("veil_report_only_discovery", "5b", "veil report-only + discovery (every response)", "1 KB",
     "report_only_discovery"),
)


def veil_scenarios(factory: VeilScenarioFactory | None, skipped: str | None = None) -> list[Scenario]:
    """Rows 3-5 (3b: row 3 with `audit.fsync: always`; 5b: row 5 with discovery examining every
    response, `discovery.sample: 1.0`); with no factory they are listed as skipped
    with the reason given."""
    return [
        Scenario(key, label, title, body, _veil(factory, variant) if factory else None,
                 None if factory else (skipped or "no veil scenario factory"))
        for key, label, title, body, variant in _VEIL_ROWS
    ]


def default_scenarios(veil_factory: VeilScenarioFactory | None = None,
                      veil_skipped: str | None = None) -> list[Scenario]:
    return [
        Scenario("upstream_direct", "1", "upstream direct", "1 KB", _direct),
        Scenario("passthrough", "2", "bare pass-through (aiohttp)", "1 KB",
                 _proxy("aiohttp", False, "/customers/{id}")),
        Scenario("passthrough_httpx", "2b", "bare pass-through (httpx)", "1 KB",
                 _proxy("httpx", False, "/customers/{id}")),
        *veil_scenarios(veil_factory, veil_skipped),
        Scenario("parse_only_list", "6", "parse-only proxy (orjson round trip)", "1 MB",
                 _proxy("aiohttp", True, "/customers")),
    ]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _CpuWindow:
    """CPU seconds of some servers (and their children) between `start()` and `seconds()`."""

    def __init__(self, measured: Sequence[Server]) -> None:
        self.measured = measured
        self.pids: list[int] = []
        self.before: float | None = None

    def start(self) -> None:
        from veil.bench.servers import cpu_seconds

        self.pids = [p for s in self.measured for p in s.pids()]
        self.before = cpu_seconds(self.pids)

    def seconds(self) -> float | None:
        from veil.bench.servers import cpu_seconds

        return None if self.before is None else cpu_seconds(self.pids) - self.before


def _one_round(scenario: Scenario, target: Target, spec: LoadSpec, tool: str) -> RoundStats:
    from veil.bench import loadgen, servers

    window = _CpuWindow(target.measured)
    res = loadgen.run_load(spec, tool, window.start)
    cpu = window.seconds()
    dead = [s.name for s in target.measured if not s.alive()]
    if dead:
        raise servers.ServerError(f"{', '.join(dead)} died during the run")
    return RoundStats(res.rps, res.p50_ms, res.p99_ms,
                      cpu / res.requests * 1e6 if cpu is not None and res.requests else None,
                      res.requests, res.non_2xx, res.errors)


def run_bench(scenarios: Sequence[Scenario], rounds: int = 3, duration: float = 5.0, connections: int = 16,
              *, tool: str = "auto", warmup: float | None = None,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Start every scenario's servers, then run the rounds interleaved: round 1 of every row, then
    round 2, ... so that drift on a shared machine touches all rows alike and the ratios compare
    rows measured minutes, not a whole run, apart. A row that fails records its error and the
    others still run."""
    from veil.bench import loadgen, servers

    if rounds < 1 or duration <= 0 or connections < 1:
        raise VeilError("rounds and connections must be >= 1 and duration > 0", code="bench_usage")
    chosen = loadgen.choose_tool(tool)
    warm = min(1.0, 0.2 * duration) if warmup is None else warmup
    meta = {"rounds": rounds, "duration": duration, "connections": connections, "warmup": warm,
            "tool": chosen, "cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "cpu_counts": "process(es) under test, not the upstream",
            "order": "interleaved: each round runs every row once"}
    result = BenchResult([], meta)
    profile_id = str(servers.fast_profile()["id"])
    list_ids = tuple(servers.fast_list_ids())
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp, servers.start_fast_upstream() as upstream, \
            ExitStack() as running:
        live: list[tuple[RowResult, Scenario, Target]] = []
        for sc in scenarios:
            row = RowResult(sc.key, sc.label, sc.title, sc.body, skipped=sc.skipped)
            result.rows.append(row)
            if sc.skipped or sc.setup is None:
                row.skipped = row.skipped or "not available"
                continue
            ctx = BenchContext(Path(tmp), upstream, profile_id, list_ids)
            running.enter_context(ctx.stack)
            try:
                live.append((row, sc, sc.setup(ctx)))
            except (VeilError, OSError) as exc:
                row.error = _one_line(exc)
        for i in range(rounds):
            for row, sc, target in live:
                if row.error is not None:
                    continue
                spec = loadgen.LoadSpec(target.url, duration, connections, target.headers, warm)
                try:
                    row.rounds.append(_one_round(sc, target, spec, chosen))
                except (VeilError, OSError) as exc:
                    row.error = _one_line(exc)
                    continue
                if progress:
                    progress(f"{sc.label} {sc.title}: round {i + 1}/{rounds}: {row.rounds[-1].rps:,.0f} req/s")
    if any(r.key == "passthrough_httpx" and r.ok for r in result.rows) and not _has_sniffio():
        result.notes.append("sniffio is not installed: httpcore retries `import sniffio` on every lock, "
                            "which costs httpx several failed imports per request")
    return result


def _has_sniffio() -> bool:
    import importlib.util

    return importlib.util.find_spec("sniffio") is not None
