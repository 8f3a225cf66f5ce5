"""`veil doctor --config veil.yaml`: what would stop a deployment from starting, and its weak settings.

Severity: `error` (veil will not start, or will refuse every request), `warning` (a weak or surprising
setting), `note` (for information). Exit 0 when there are no errors or warnings (notes alone do not
count), 1 otherwise; a config that does not load is an error too."""

from __future__ import annotations

import argparse

import orjson

from veil.config import load_config
from veil.doctor import COUNTED, ERROR, NOTE, WARNING, Finding, inspect
from veil.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="find what would stop a deployment from starting, and weak settings")
    p.add_argument("--config", required=True, help="path to veil.yaml")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        findings = inspect(load_config(args.config))
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{exc.file}: ").removeprefix(f"{exc.key}: ") if exc.file else exc.message
        findings = [Finding("config_invalid", exc.key or args.config, f"{message}: veil will not start",
                            "correct the config file", ERROR)]
    if args.json:
        print(orjson.dumps([f.__dict__ for f in findings], option=orjson.OPT_INDENT_2).decode())
    else:
        for f in findings:
            print(f.render())
        counts = {s: sum(1 for f in findings if f.severity == s) for s in (ERROR, WARNING, NOTE)}
        said = ", ".join(f"{n} {s}(s)" for s, n in counts.items() if n)
        print(f"{args.config}: {said}" if findings else f"{args.config}: no findings")
    return 1 if any(f.severity in COUNTED for f in findings) else 0
