"""`veil check PATH...`: load a policy set and print every diagnostic (errors and warnings), sorted by
location, with the source line, a caret and hints; then a summary line.

With a schema (`schema "openapi.yaml"` in the policy, or `--schema FILE`), field paths are also
checked against the API's response schemas (veil.schema.check).

Exit 0 when there is no error (warnings allowed; `--strict` makes warnings fail), 1 on errors, 2 on usage.

`--format json` prints one JSON object instead, for editors and CI: {"ok", "errors", "warnings",
"files", "diagnostics": [{"file", "line", "col", "end_line", "end_col", "severity", "code", "message",
"hint"}]}, sorted by location (line and col are 1-based; null when a diagnostic has no location).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from veil.errors import Diagnostic, Diagnostics


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check", help="check a policy set for errors and warnings", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories (*.veil)")
    parser.add_argument("--strict", action="store_true", help="warnings fail the check too")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("--schema", action="append", default=[], metavar="FILE",
                        help="an OpenAPI document of the API (repeatable; adds to the policy's `schema` lines)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from veil.schema.check import load_checked

    try:
        policy, _schemas = load_checked(args.paths, extra_schemas=args.schema)
    except Diagnostics as exc:
        found = exc
        files = len(exc.sources)
    else:
        found = Diagnostics(list(policy.warnings), dict(policy.sources))
        files = len(policy.sources)
    errors, warnings = len(found.errors), len(found.warnings)
    failed = bool(errors) or (args.strict and bool(warnings))
    if args.format == "json":
        print(orjson.dumps({
            "ok": not failed, "errors": errors, "warnings": warnings, "files": files,
            "diagnostics": [d.to_dict() for d in sorted(found.items, key=Diagnostic.sort_key)],
        }, option=orjson.OPT_INDENT_2).decode())
        return 1 if failed else 0
    if found.items:
        print(found.render(), end="\n\n")
    verdict = "failed" if failed else "ok"
    print(f"veil check: {verdict}: {errors} error(s), {warnings} warning(s) in {files} file(s)",
          file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0
