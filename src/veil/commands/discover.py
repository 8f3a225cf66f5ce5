"""`veil discover`: what report-only traffic showed about personal data (the `discovery:` config).

    veil discover report  STATE... [--policy policies/] [--format md|json] [--min-rate 0.5]
    veil discover suggest STATE... [--policy policies/] [--min-rate 0.5] [--apply]
    veil discover merge   STATE... --output merged.json

STATE files are what each replica (and each worker: `discovery-w0.json`, ...) writes to
`discovery.state`; several are added up. `report` lists, per route and purpose, the paths seen (how
often, JSON types, detector hit rates) with the policy's fate for each, personal paths in clear first.
`suggest` prints `category` lines and per-finding statements, checked to pass `veil check`;
`--apply` writes them into the policy files. Exit codes: report 1 when a personal path leaves in clear,
suggest 1 when the lines would not pass the checks, 0 otherwise; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from veil.errors import Diagnostics, VeilError


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "discover", help="report and suggest from report-only discovery", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    for name, help_text in (("report", "per route and purpose: paths, detector hit rates, fates"),
                            ("suggest", "policy lines for the findings (checked)")):
        q = sub.add_parser(name, help=help_text)
        q.add_argument("states", nargs="+", metavar="STATE", help="discovery state files (one per replica/worker)")
        q.add_argument("--policy", action="append", metavar="PATH", help="the policy set (default: policies)")
        q.add_argument("--min-rate", type=float, default=0.5, metavar="R",
                       help="a detector's hit rate that makes a path look personal (default 0.5)")
        if name == "report":
            q.add_argument("--format", choices=("md", "json"), default="md")
        else:
            q.add_argument("--apply", action="store_true", help="write the lines into the policy files")
        q.set_defaults(func=run)
    m = sub.add_parser("merge", help="add up the state files of several replicas")
    m.add_argument("states", nargs="+", metavar="STATE")
    m.add_argument("--output", "-o", required=True, metavar="FILE")
    m.set_defaults(func=run)
    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)


def _states(paths: list[str]) -> Any:
    from veil.discovery.recorder import read_state
    from veil.discovery.state import merge

    return merge([read_state(Path(p)) for p in paths])


def run(args: argparse.Namespace) -> int:
    from veil.discovery.recorder import write_state

    try:
        state = _states(args.states)
    except VeilError as exc:
        print(f"veil discover: {exc}", file=sys.stderr)
        return 1
    if args.action == "merge":
        write_state(Path(args.output), state)
        rules = len(state.rules)
        print(f"veil discover merge: {len(args.states)} state file(s) → {args.output} ({rules} route/purpose pair(s))")
        return 0
    if not 0.0 < args.min_rate <= 1.0:
        print("veil discover: --min-rate must be in (0, 1]", file=sys.stderr)
        return 2
    from veil.discovery.report import build_report, markdown, to_json
    from veil.schema.check import load_checked

    try:
        policy, _schemas = load_checked(args.policy or ["policies"])
    except Diagnostics as exc:
        print(exc.render(), file=sys.stderr)
        print("veil discover: the policy has errors", file=sys.stderr)
        return 1
    reports = build_report(policy, state, min_rate=args.min_rate)
    if args.action == "report":
        if args.format == "json":
            print(json.dumps(to_json(reports, state), indent=2, ensure_ascii=False))
        else:
            sys.stdout.write(markdown(reports, state))
        return 1 if any(r.findings for r in reports) else 0
    from veil.discovery.suggest import apply, plan, render

    s = plan(policy, reports)
    sys.stdout.write(render(s))
    if s.problems:
        return 1
    if args.apply and not s.empty:
        written = apply(s)
        print(f"veil discover suggest: wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
