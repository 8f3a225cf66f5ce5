"""`veil init --openapi spec.yaml [--out policies/]`: write a starter policy set for an API from its
OpenAPI document: a purpose to fill in, categories suggested from field names and formats, a route
for each GET operation (subject guessed from its path or query parameters) with an empty rule, so
that deny and minimize by default hold until `keep` lines are added. The set passes `veil check` (warnings
name what is left to fill in) and `veil fmt --check`; it is checked before anything is written.

Existing files are never overwritten unless --force. Exit 0 when written, 1 on a bad document or
existing files, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from veil.atomic import write_text_atomically
from veil.errors import Diagnostics


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "init", help="write a starter policy set from an OpenAPI document", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--openapi", required=True, metavar="SPEC", help="the API's OpenAPI 3.0/3.1 document")
    p.add_argument("--out", default="policies", metavar="DIR", help="where to write the .veil files (policies/)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from veil.schema.check import load_checked
    from veil.schema.openapi import load_api
    from veil.schema.shape import SchemaError
    from veil.schema.starter import starter

    spec = Path(args.openapi)
    out = Path(args.out)
    try:
        api = load_api(spec)
    except SchemaError as exc:
        print(f"veil init: {exc}", file=sys.stderr)
        return 1
    ref = os.path.relpath(spec.resolve(), out.resolve())
    files = starter(api, ref)
    existing = [out / name for name in files if (out / name).exists()]
    if existing and not args.force:
        print("veil init: would overwrite " + ", ".join(map(str, existing)) + " (use --force)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="veil-init-", dir=out.parent if out.parent.exists() else None) as tmp:
        trial = Path(tmp) / out.name
        trial.mkdir()
        for name, text in starter(api, os.path.relpath(spec.resolve(), trial)).items():
            (trial / name).write_text(text, encoding="utf-8")
        try:
            load_checked([trial])
        except Diagnostics as exc:  # a bug in the generator: write nothing
            print(exc.render(), file=sys.stderr)
            print("veil init: the starter policy does not pass veil check; nothing written", file=sys.stderr)
            return 1
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_text_atomically(out / name, text, mode=0o644)
    routes = files["routes.veil"].count("\nroute ") + files["routes.veil"].startswith("route ")
    cats = sum(1 for line in files["categories.veil"].splitlines() if line.startswith("category "))
    print(f"veil init: wrote {len(files)} files to {out}/: {routes} route(s), {cats} suggested categor"
          f"{'y' if cats == 1 else 'ies'}; next: veil check {out}, then keep what each purpose needs "
          f"(veil coverage {out})")
    return 0
