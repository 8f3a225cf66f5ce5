"""`veil tcf decode STRING`: decode an IAB TCF v2 TC string and print it as indented JSON.

Exit 0 when the string is valid under TCF v2.2 rules, 1 when it is not (what could be decoded is
still printed, with "valid": false and the reason code), 2 on usage errors. STRING `-` reads stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from veil.consent.tcf import decode


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tcf", help="IAB TCF v2 consent strings", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=_usage(parser))
    sub = parser.add_subparsers(dest="tcf_command", metavar="SUBCOMMAND")
    dec = sub.add_parser("decode", help="decode a TC string and print it as JSON")
    dec.add_argument("string", metavar="STRING", help="the TC string, or - to read it from stdin")
    dec.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text: str = args.string
    if text == "-":
        text = sys.stdin.read().strip()
    result = decode(text)
    out: dict[str, Any] = result.string.to_json() if result.string is not None else {}
    out["valid"] = result.valid
    out["reason"] = result.reason
    print(json.dumps(out, indent=2))
    return 0 if result.valid else 1


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
