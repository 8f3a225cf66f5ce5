"""`veil fmt [--check] PATH...`: rewrite policy files in their canonical layout (grammar/README.md).

Without --check, files that change are rewritten in place (atomically: a temporary file renamed over
the original). With --check nothing is written; files that would change are listed and the exit code
is 1. With --diff nothing is written either; a unified diff of each file that would change is printed
and the exit code is 1 when there is one. A file that does not parse is reported with its diagnostic,
never touched, and makes the exit code 1. Directories stand for every *.veil file below them. Imports
are not followed.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from veil.atomic import write_text_atomically
from veil.errors import Diagnostics, VeilError
from veil.policy.fmt import format_text


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fmt", help="format policy files canonically", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories (*.veil)")
    parser.add_argument("--check", action="store_true", help="only list files that would change (exit 1)")
    parser.add_argument("--diff", action="store_true", help="print what would change as a unified diff (exit 1)")
    parser.set_defaults(func=run)


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.veil") if q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise VeilError(f"{p}: no such file or directory", code="file_unreadable")
    return out


def write_atomically(path: Path, text: str) -> None:
    write_text_atomically(path, text, mode=path.stat().st_mode & 0o7777)  # keep the file's mode


def run(args: argparse.Namespace) -> int:
    status = 0
    changed: list[Path] = []
    for path in _files(args.paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: error[file_unreadable]: cannot read: "
                  f"{exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}", file=sys.stderr)
            status = 1
            continue
        try:
            out = format_text(text, str(path))
        except Diagnostics as exc:
            print(exc.render(), file=sys.stderr)
            status = 1
            continue
        if out == text:
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), out.splitlines(keepends=True), f"a/{path}", f"b/{path}"))
        elif args.check:
            print(f"would reformat {path}")
        else:
            write_atomically(path, out)
            print(f"reformatted {path}")
    if (args.check or args.diff) and changed:
        status = 1
    return status
