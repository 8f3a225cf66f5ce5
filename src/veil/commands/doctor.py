"""`veil doctor --config veil.yaml`: weak settings of a deployment and what to change.

Exit 0 when nothing is found (notes alone do not count), 1 on findings."""

from __future__ import annotations

import argparse

import orjson

from veil.config import load_config
from veil.doctor import WARNING, inspect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="inspect a deployment's config for weak security settings")
    p.add_argument("--config", required=True, help="path to veil.yaml")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    findings = inspect(config)
    warnings = [f for f in findings if f.severity == WARNING]
    if args.json:
        print(orjson.dumps([f.__dict__ for f in findings], option=orjson.OPT_INDENT_2).decode())
    else:
        for f in findings:
            print(f.render())
        notes = len(findings) - len(warnings)
        print(f"{args.config}: {len(warnings)} finding(s)" + (f", {notes} note(s)" if notes else "")
              if findings else f"{args.config}: no findings")
    return 1 if warnings else 0
