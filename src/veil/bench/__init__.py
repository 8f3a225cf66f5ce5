"""`veil bench`: size a deployment by measuring veil next to its practical limits, on loopback only.

A **scenario** is one table row: `setup(ctx)` starts what it needs (registering the stops on
`ctx.stack`) and returns a `Target` (URL, request headers, the servers whose CPU is counted).
`run_bench` starts every row's servers, then runs the rounds interleaved (round 1 of every row, then
round 2, ...), then stops them; one fast upstream (`servers.start_fast_upstream`) is shared by all rows
and serves the shape corpus (veil.bench.shapes) besides the demo's profile and list.

The references are the fastest plain Python proxies we built (veil.bench.plain: httptools' parser on
an asyncio protocol on uvloop, with one aiohttp client session): row 2 passes a 1 KB profile through, rows 6x parse
and re-serialize each shape's list (`orjson.loads` + `orjson.dumps`). The Starlette pass-throughs (2s,
2b) and nginx (2n, the non-Python floor of a proxy hop) are information rows.

The veil rows are built by a **veil scenario factory**: given a `VeilCase` (which variant, the
upstream URL, a work directory, two free ports, the subject ids the upstream serves, and for a list
row its `Shape`) it writes veil.yaml and the policy, seeds consent and returns a `VeilSetup` (config
path, request path, headers, extra environment such as key material referenced as `env:NAME`).

    shapes = corpus(seed=1, items=1000)
    rows = default_scenarios(veil_factory=None, shapes=[s.name for s in shapes])
    result = run_bench(rows, rounds=3, duration=5.0, connections=16, corpus=shapes)
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
    from veil.bench.shapes import Shape

__all__ = [
    "SHAPE_NAMES", "VEIL_VARIANTS", "BenchContext", "BenchResult", "RoundStats", "RowResult", "Scenario", "Target",
    "VeilCase", "VeilScenarioFactory", "VeilSetup", "default_scenarios", "enforce_list_key", "parse_only_key",
    "run_bench", "shape_scenarios", "veil_scenarios",
]

Headers = tuple[tuple[str, str], ...]
VEIL_VARIANTS = ("enforce_small", "enforce_small_fsync", "enforce_small_ship", "enforce_small_ship_sidecar",
                 "enforce_list", "report_only",
                 "report_only_discovery")
# every shape of the corpus, in veil.bench.shapes.SHAPES order (kept here so the rows are known without
# generating anything)
SHAPE_NAMES = ("demo", "issue", "wide_dropped", "deep", "nested_arrays", "transforms", "long_strings", "numbers",
               "mostly_kept", "unknown_keys")


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
    shapes: Mapping[str, Shape] = field(default_factory=dict)  # the corpus the upstream serves, by name

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
    shape: str | None = None  # the corpus shape a list row serves


@dataclass(frozen=True)
class VeilCase:
    variant: str  # one of VEIL_VARIANTS
    upstream_url: str
    workdir: Path  # empty, private to this case
    proxy_port: int
    admin_port: int
    profile_id: str
    list_ids: tuple[str, ...]
    shape: Shape | None = None  # enforce_list: the corpus shape to serve


@dataclass(frozen=True)
class VeilSetup:
    config_path: Path
    path: str  # request path and query, e.g. "/customers/c-000123"
    headers: Headers  # Veil-Key, Veil-Purpose, ...
    env: Mapping[str, str] = field(default_factory=dict)
    # processes to start beside veil (e.g. `veil audit ship`): (name, argv, URL that answers when ready);
    # their CPU is not counted in the row, which measures veil's own request path
    sidecars: tuple[tuple[str, tuple[str, ...], str], ...] = ()


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


def _plain(ctx: BenchContext) -> Target:
    proxy = ctx.keep(_servers().start_plain(ctx.upstream.url))
    return Target(f"{proxy.url}/customers/{ctx.profile_id}", (), (proxy,))


def _nginx(ctx: BenchContext) -> Target:
    proxy = ctx.keep(_servers().start_nginx(ctx.upstream.url, ctx.workdir / "nginx"))
    return Target(f"{proxy.url}/customers/{ctx.profile_id}", (), (proxy,))


def _shape_of(ctx: BenchContext, name: str) -> Shape:
    shape = ctx.shapes.get(name)
    if shape is None:
        raise VeilError(f"shape {name} is not in the corpus the bench was given", code="bench_usage")
    return shape


def _parse_only(name: str) -> Callable[[BenchContext], Target]:
    def setup(ctx: BenchContext) -> Target:
        shape = _shape_of(ctx, name)
        proxy = ctx.keep(_servers().start_plain(ctx.upstream.url, parse=True))
        return Target(proxy.url + shape.path, (), (proxy,))

    return setup


def _veil(factory: VeilScenarioFactory, variant: str, shape: str | None = None) -> Callable[[BenchContext], Target]:
    def setup(ctx: BenchContext) -> Target:
        workdir = ctx.workdir / (variant if shape is None else f"{variant}-{shape}")
        workdir.mkdir(parents=True, exist_ok=True)
        servers = _servers()
        case = VeilCase(variant, ctx.upstream.url, workdir, servers.free_port(), servers.free_port(),
                        ctx.profile_id, ctx.list_ids, _shape_of(ctx, shape) if shape else None)
        made = factory(case)
        veil = ctx.keep(servers.start_veil(made.config_path, env=made.env))
        for name, argv, ready in made.sidecars:
            ctx.keep(servers.start_process(name, argv, ready.rsplit("/", 1)[0], ready_url=ready, env=made.env))
        return Target(veil.url + made.path, made.headers, (veil,))

    return setup


_VEIL_ROWS = (
    ("veil_enforce_small", "3", "veil enforce (profile)", "1 KB", "enforce_small"),
    ("veil_enforce_small_fsync", "3b", "veil enforce (profile), fsync always", "1 KB", "enforce_small_fsync"),
    ("veil_enforce_small_ship", "3s", "veil enforce (profile), log shipped", "1 KB", "enforce_small_ship"),
    ("veil_enforce_small_ship_sidecar", "3c", "veil enforce (profile), log shipped (sidecar)", "1 KB",
     "enforce_small_ship_sidecar"),
    ("veil_report_only", "5", "veil report-only (profile)", "1 KB", "report_only"),
    ("veil_report_only_discovery", "5b", "veil report-only + discovery (every response)", "1 KB",
     "report_only_discovery"),
)


def enforce_list_key(shape: str) -> str:
    return f"veil_enforce_list_{shape}"


def parse_only_key(shape: str) -> str:
    return f"parse_only_{shape}"


def _letter(shape: str) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[SHAPE_NAMES.index(shape)] if shape in SHAPE_NAMES else "?"


def _why_skipped(factory: VeilScenarioFactory | None, skipped: str | None) -> str | None:
    return None if factory else (skipped or "no veil scenario factory")


def veil_scenarios(factory: VeilScenarioFactory | None, skipped: str | None = None) -> list[Scenario]:
    """Rows 3 and 5 (3b: row 3 with `audit.fsync: always`; 3s: row 3 shipping its decision log to the
    PostgreSQL at VEIL_BENCH_PG_URL; 5b: row 5 with discovery examining every response,
    `discovery.sample: 1.0`); with no factory they are listed as skipped with the reason given."""
    rows = []
    for key, label, title, body, variant in _VEIL_ROWS:
        why = _why_skipped(factory, skipped)
        if why is None and variant.startswith("enforce_small_ship") and not os.environ.get("VEIL_BENCH_PG_URL"):
            why = "set VEIL_BENCH_PG_URL=postgresql://...?schema=NAME to ship the decision log there"
        rows.append(Scenario(key, label, title, body, _veil(factory, variant) if factory else None, why))
    return rows


def shape_scenarios(shapes: Sequence[str], factory: VeilScenarioFactory | None,
                    skipped: str | None = None) -> list[Scenario]:
    """Per shape: row 4x (veil enforcing the shape's list with per-item consent) and row 6x (the plain
    parse-only reference on the same body)."""
    rows = []
    why = _why_skipped(factory, skipped)
    for name in shapes:
        rows.append(Scenario(enforce_list_key(name), "4" + _letter(name), f"veil enforce list: {name}", "list",
                             _veil(factory, "enforce_list", name) if factory else None, why, shape=name))
    for name in shapes:
        rows.append(Scenario(parse_only_key(name), "6" + _letter(name), f"parse-only: {name}", "list",
                             _parse_only(name), shape=name))
    return rows


def default_scenarios(veil_factory: VeilScenarioFactory | None = None, veil_skipped: str | None = None,
                      shapes: Sequence[str] = SHAPE_NAMES) -> list[Scenario]:
    from veil.bench.servers import nginx_binary

    unknown = [s for s in shapes if s not in SHAPE_NAMES]
    if unknown:
        raise VeilError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPE_NAMES)}",
                        code="bench_usage")
    return [
        Scenario("upstream_direct", "1", "upstream direct", "1 KB", _direct),
        Scenario("passthrough", "2", "plain pass-through (httptools + aiohttp)", "1 KB", _plain),
        Scenario("passthrough_starlette", "2s", "Starlette pass-through (aiohttp client)", "1 KB",
                 _proxy("aiohttp", False, "/customers/{id}")),
        Scenario("passthrough_httpx", "2b", "Starlette pass-through (httpx client)", "1 KB",
                 _proxy("httpx", False, "/customers/{id}")),
        Scenario("passthrough_nginx", "2n", "nginx pass-through (non-Python floor)", "1 KB", _nginx,
                 None if nginx_binary() else "nginx is not installed (apt-get install nginx-light)"),
        *veil_scenarios(veil_factory, veil_skipped),
        *shape_scenarios(shapes, veil_factory, veil_skipped),
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


PRIME_REQUESTS = 2


def _prime(target: Target, timeout: float = 60.0) -> None:
    """A couple of requests before any round: a row's first requests pay one-time work (code a plan
    generates on first use, the consent store read before its cache holds the subjects, upstream
    connections), which a time-based warm-up shorter than a list response would leave in the
    measured window. A row that does not answer 2xx here is a broken row, not a slow one."""
    import urllib.error
    import urllib.request

    from veil.bench.loadgen import check_loopback

    check_loopback(target.url)
    for _ in range(PRIME_REQUESTS):
        req = urllib.request.Request(target.url, headers=dict(target.headers))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise VeilError(f"the first requests were answered {exc.code}", code="bench_row_broken") from exc


def _one_round(scenario: Scenario, target: Target, spec: LoadSpec, tool: str) -> RoundStats:
    from veil.bench import loadgen, servers

    window = _CpuWindow(target.measured)
    res = loadgen.run_load(spec, tool, window.start)
    cpu = window.seconds()
    dead = [s.name for s in target.measured if not s.alive()]
    if dead:
        raise servers.ServerError(f"{', '.join(dead)} died during the run")
    rss = servers.rss_bytes([p for s in target.measured for p in s.pids()])
    return RoundStats(res.rps, res.p50_ms, res.p99_ms,
                      cpu / res.requests * 1e6 if cpu is not None and res.requests else None,
                      res.requests, res.non_2xx, res.errors, rss / 2**20 if rss else None)


def run_bench(scenarios: Sequence[Scenario], rounds: int = 3, duration: float = 5.0, connections: int = 16,
              *, tool: str = "auto", warmup: float | None = None,
              progress: Callable[[str], None] | None = None, corpus: Sequence[Shape] = ()) -> BenchResult:
    """Start every scenario's servers, then run the rounds interleaved: round 1 of every row, then
    round 2, ... so that drift on a shared machine touches all rows alike and the ratios compare
    rows measured minutes, not a whole run, apart. A row that fails records its error and the
    others still run. `corpus`: the shapes the upstream serves (each list row names its own)."""
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
    shapes = {s.name: s for s in corpus}
    bodies = {s.path.partition("?")[0]: s.body for s in corpus}
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp, \
            servers.start_fast_upstream(bodies, Path(tmp)) as upstream, ExitStack() as running:
        live: list[tuple[RowResult, Scenario, Target]] = []
        for sc in scenarios:
            served = shapes.get(sc.shape) if sc.shape else None
            body = f"{len(served.body) / 2**20:.1f} MB" if served is not None else sc.body
            row = RowResult(sc.key, sc.label, sc.title, body, skipped=sc.skipped, shape=sc.shape)
            result.rows.append(row)
            if sc.skipped or sc.setup is None:
                row.skipped = row.skipped or "not available"
                continue
            ctx = BenchContext(Path(tmp), upstream, profile_id, list_ids, shapes=shapes)
            running.enter_context(ctx.stack)
            try:
                target = sc.setup(ctx)
                _prime(target)
                live.append((row, sc, target))
            except (VeilError, OSError) as exc:
                row.error = _one_line(exc)
            if progress:
                progress(f"{sc.label} {sc.title}: started" if row.error is None else
                         f"{sc.label} {sc.title}: FAILED to start: {row.error}")
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
