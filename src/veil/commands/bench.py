"""`veil bench`: measure veil next to its practical limits, on loopback, and print a table.

Rows: 1 upstream direct, 2 bare pass-through (aiohttp), 2b the same with httpx, 3-5 veil (enforce a
profile, 3b the same with `audit.fsync: always`, enforce a list with per-item consent, report-only,
5b report-only with discovery examining every response), 6 parse-only proxy. The veil rows need
`veil serve` and a veil scenario factory (`--veil-factory MODULE:CALLABLE`, see veil.bench.VeilCase);
without them they are skipped with a note. Exit 0 when every row that ran succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Any

from veil.errors import VeilError

DEFAULT_VEIL_FACTORY = "veil.bench.veil_factory:factory"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure throughput, latency and CPU per request on loopback",
                              description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds per row; figures are medians (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per round (default 5)")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--loadgen", choices=("auto", "wrk", "builtin"), default="auto",
                   help="load generator: wrk when on PATH (auto), or the built-in aiohttp one")
    p.add_argument("--only", metavar="KEYS", help="comma-separated row keys to run (default: all)")
    p.add_argument("--veil-factory", metavar="MODULE:CALLABLE", default=DEFAULT_VEIL_FACTORY,
                   help=f"builds the veil rows (default {DEFAULT_VEIL_FACTORY})")
    p.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    p.set_defaults(func=run)


def _load_factory(spec: str) -> tuple[Any, str | None]:
    """(factory, None) or (None, why the veil rows are skipped)."""
    if importlib.util.find_spec("veil.commands.serve") is None:
        return None, "`veil serve` is not available yet"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise VeilError(f"--veil-factory must be MODULE:CALLABLE, got {spec!r}", code="bench_usage")
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        found = None
    if found is None:
        return None, f"no veil scenario factory ({spec})"
    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        return None, f"{spec} is not callable"
    return factory, None


def run(args: argparse.Namespace) -> int:
    from veil.bench import default_scenarios, run_bench
    from veil.bench.report import render_table, write_json

    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        print("veil bench: --rounds and --connections must be >= 1, --duration > 0", file=sys.stderr)
        return 2
    factory, why = _load_factory(args.veil_factory)
    scenarios = default_scenarios(factory, why)
    if args.only:
        keys = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = keys - {s.key for s in scenarios}
        if unknown:
            print(f"veil bench: unknown row key(s) {', '.join(sorted(unknown))}; known: "
                  f"{', '.join(s.key for s in scenarios)}", file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s.key in keys]

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    result = run_bench(scenarios, args.rounds, args.duration, args.connections, tool=args.loadgen,
                       progress=None if args.quiet else progress)
    if why:
        result.notes.append(f"rows 3-5 skipped: {why}")
    print(render_table(result))
    if args.json:
        try:
            write_json(result, args.json)
        except OSError as exc:
            raise VeilError(f"cannot write {args.json}: {exc.strerror}", code="bench_output") from exc
    return 1 if result.failed else 0
