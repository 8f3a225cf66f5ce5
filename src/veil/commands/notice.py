"""`veil notice PATH...`: the privacy notice generated from a policy set, or its records of processing.

    veil notice policies/ [--format md|html|json] [--lang en|de] [--output FILE]
    veil notice policies/ --records [--format csv|json] [--output FILE]

With a schema (`schema "openapi.yaml"` in the policy, or --schema FILE) the notice is checked against
what actually leaves: a field the schema marks as personal that some purpose discloses in clear while
no category names it would be missing from the notice, so the notice is not written (exit 1) and the
fields are listed; name them in a category (or --allow-uncategorized).

Exit 0 when written, 1 when the policy is invalid (its diagnostics go to stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from veil.atomic import write_text_atomically
from veil.errors import Diagnostics, VeilError

NOTICE_FORMATS = ("md", "html", "json")
RECORD_FORMATS = ("csv", "json")


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "notice", help="privacy notice or records of processing generated from a policy",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    p.add_argument("--format", choices=sorted({*NOTICE_FORMATS, *RECORD_FORMATS}), default=None,
                   help="notice: md (default), html or json; records: csv (default) or json")
    from veil.notice.lang import DEFAULT, available

    p.add_argument("--lang", choices=available(), default=DEFAULT,
                   help=f"the notice's language ({', '.join(available())}; default {DEFAULT})")
    p.add_argument("--records", action="store_true", help="GDPR Art. 30 records of processing instead")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--schema", action="append", default=[], metavar="FILE",
                   help="an OpenAPI document of the API (adds to the policy's `schema` lines)")
    p.add_argument("--allow-uncategorized", action="store_true",
                   help="write the notice even when personal fields leave without a category")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records: bool = args.records
    allowed = RECORD_FORMATS if records else NOTICE_FORMATS
    fmt: str = args.format or allowed[0]
    if fmt not in allowed:
        what = "--records" if records else "a notice"
        print(f"veil notice: --format {fmt} is not available for {what} ({', '.join(allowed)})",
              file=sys.stderr)
        return 2
    from veil.notice import records_csv, records_json, records_of_processing, render_notice
    from veil.schema.check import coverage, load_checked

    try:
        policy, schemas = load_checked(args.paths, extra_schemas=args.schema)
    except Diagnostics as exc:
        print(f"veil notice: the policy is invalid:\n{exc.render()}", file=sys.stderr)
        return 1
    if schemas and not args.allow_uncategorized:
        missing = sorted({f"{c.method} {c.route} for {c.purpose}: {r.template} ({r.personal.reason})"
                          for c in coverage(policy, schemas) for r in c.findings if r.personal})
        if missing:
            print("veil notice: these personal fields leave in clear but no category names them, so the notice "
                  "would not mention them:\n  " + "\n  ".join(missing)
                  + "\nname them in a category (veil check shows where), or pass --allow-uncategorized",
                  file=sys.stderr)
            return 1
    if records:
        rows = records_of_processing(policy)
        text = records_csv(rows) if fmt == "csv" else records_json(rows)
    else:
        text = render_notice(policy, fmt, args.lang)
    if args.output:
        _write(Path(args.output), text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _write(path: Path, text: str) -> None:
    """Atomic: a reader never sees half a notice."""
    try:
        write_text_atomically(path, text, mode=0o644)  # a notice is meant to be read
    except OSError as exc:
        raise VeilError(f"cannot write {path}: {exc.strerror}", code="output_unwritable") from exc
