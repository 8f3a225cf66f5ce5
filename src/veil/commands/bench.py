"""`veil bench`: measure veil next to its practical limits, on loopback, and print a table.

Rows: 1 upstream direct; 2 the plain pass-through reference (httptools server + aiohttp client on
uvloop, veil.bench.plain), 2s/2b Starlette pass-throughs (aiohttp, httpx client) and 2n nginx, for
information; 3 veil enforcing a 1 KB profile (3b with `audit.fsync: always`, 3s shipping its decision
log to the PostgreSQL at VEIL_BENCH_PG_URL, 3c the same with a `veil audit ship` sidecar doing the
shipping); 5 report-only (5b with discovery examining every response); and per shape of the corpus
(veil.bench.shapes, seeded: `--seed`, `--items`, `--shapes`) 4x veil enforcing the shape's list with
per-item consent and 6x the plain parse-only reference on the same body. Ratios per shape and the worst
of them (`enforce_list_worst_vs_parse_only`); CPU per kept, dropped and transformed field per shape,
measured in-process on the real flow. The veil rows need `veil serve` and a veil scenario factory
(`--veil-factory MODULE:CALLABLE`, see veil.bench.VeilCase); without them they are skipped with a note.
Exit 0 when every row that ran succeeded, 1 otherwise.
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
    p.add_argument("--duration", type=float, default=4.0, help="seconds per round (default 4)")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--loadgen", choices=("auto", "wrk", "builtin"), default="auto",
                   help="load generator: wrk when on PATH (auto), or the built-in aiohttp one")
    p.add_argument("--only", metavar="KEYS", help="comma-separated row keys to run (default: all)")
    p.add_argument("--seed", type=int, default=1, help="seed of the shape corpus (default 1)")
    p.add_argument("--items", type=int, default=1000, help="items per list of the shape corpus (default 1000)")
    p.add_argument("--shapes", metavar="NAMES",
                   help="comma-separated shapes of the corpus to run (default: all; the names are in "
                        "veil.bench.shapes, and an unknown name lists them)")
    p.add_argument("--field-repeats", type=int, default=7, metavar="N",
                   help="in-process repeats per plan for CPU per field, 0 to skip (default 7)")
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


def _shape_names(spec: str | None) -> tuple[str, ...] | None:
    from veil.bench import SHAPE_NAMES

    if not spec:
        return SHAPE_NAMES
    given = {n.strip() for n in spec.split(",") if n.strip()}
    names = tuple(n for n in SHAPE_NAMES if n in given)  # the corpus order, whatever order was given
    unknown = sorted(given - set(SHAPE_NAMES))
    if unknown or not names:
        print(f"veil bench: unknown shape(s) {', '.join(unknown) or '(none given)'}; known: "
              f"{', '.join(SHAPE_NAMES)}", file=sys.stderr)
        return None
    return names


def _corpus(seed: int, items: int, names: list[str]) -> list[Any]:
    from veil.bench.shapes import corpus

    return corpus(seed, items, tuple(names)) if names else []


def _field_costs(result: Any, shapes: list[Any], repeats: int, progress: Any) -> None:
    """Per shape: leaves per response and, with `repeats`, CPU per field (veil.bench.fieldcost)."""
    from veil.bench.fieldcost import measure
    from veil.bench.report import ShapeFigures

    for s in shapes:
        cost = None
        if repeats:
            progress(f"CPU per field, in-process: {s.name}")
            cost = measure(s, repeats).to_dict()
        result.shapes.append(ShapeFigures(s.name, s.title, s.items, len(s.body), s.kept_leaves, s.dropped_leaves,
                                          s.transformed_leaves, cost))


def run(args: argparse.Namespace) -> int:
    from veil.bench import default_scenarios, run_bench
    from veil.bench.report import render_table, write_json

    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.items < 1 or args.field_repeats < 0:
        print("veil bench: --rounds, --connections and --items must be >= 1, --duration > 0, "
              "--field-repeats >= 0", file=sys.stderr)
        return 2
    names = _shape_names(args.shapes)
    if names is None:
        return 2
    factory, why = _load_factory(args.veil_factory)
    scenarios = default_scenarios(factory, why, names)
    if args.only:
        keys = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = keys - {s.key for s in scenarios}
        if unknown:
            print(f"veil bench: unknown row key(s) {', '.join(sorted(unknown))}; known: "
                  f"{', '.join(s.key for s in scenarios)}", file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s.key in keys]

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"  {line}", file=sys.stderr, flush=True)

    used = [n for n in names if any(s.shape == n for s in scenarios)]
    progress(f"shape corpus: seed {args.seed}, {args.items} items per list: {', '.join(used) or 'none'}")
    shapes = _corpus(args.seed, args.items, used)
    result = run_bench(scenarios, args.rounds, args.duration, args.connections, tool=args.loadgen,
                       progress=progress, corpus=shapes)
    result.meta.update({"seed": args.seed, "items": args.items, "shapes": used})
    _field_costs(result, shapes, args.field_repeats, progress)
    if why:
        result.notes.append(f"veil rows skipped: {why}")
    print(render_table(result))
    if args.json:
        try:
            write_json(result, args.json)
        except OSError as exc:
            raise VeilError(f"cannot write {args.json}: {exc.strerror}", code="bench_output") from exc
    return 1 if result.failed else 0
