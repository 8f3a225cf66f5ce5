"""The `veil` command line. Exit codes: 0 success, 1 findings or failures, 2 usage errors."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from veil import __version__
from veil.errors import VeilError

# Command modules under veil.commands, in help order.
COMMANDS = (
    "serve", "demo", "init", "check", "fmt", "test", "coverage", "explain", "playground", "notice", "discover",
    "consent", "audit", "tcf",
    "bench", "keygen", "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veil", description="Data-policy enforcement proxy.")
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"veil.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"veil.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except VeilError as exc:
        print(f"veil {args.command}: error[{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
