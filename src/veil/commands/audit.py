"""`veil audit verify LOG...` and `veil audit report --subject ID [LOG...]`.

Keys: `--key env:NAME` / `--key file:PATH` (repeatable; `--key KID=env:NAME` names the key id the
records carry; a key without an id verifies records of any kid not otherwise given), or `--config
veil.yaml` for keys.audit (and keys.pseudonym for reports). Without LOG, the config's audit directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from veil.audit._chain import WILDCARD_KID
from veil.audit.report import pseudonyms, report
from veil.audit.verify import verify
from veil.config import Config, load_config
from veil.errors import VeilError
from veil.keys import KeyRing, load_secret


class _Usage(VeilError):
    """A usage mistake: exit code 2."""

    code = "usage"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="verify the decision log; per-subject access reports")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION")

    v = sub.add_parser("verify", help="check every MAC, link and seq of the decision log chains")
    _common(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=run)

    r = sub.add_parser("report", help="who received which data of one subject (GDPR Art. 15)")
    _common(r)
    r.add_argument("--subject", required=True, help="the subject id ('-' reads it from standard input)")
    r.add_argument("--pseudonym-key", action="append", default=[], metavar="[KID=]SPEC",
                   help="the pseudonym key (env:NAME or file:PATH); default: keys.pseudonym of --config")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=run)
    parser.set_defaults(func=run, audit_parser=parser)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="*", metavar="LOG", help="log files, directories or globs")
    p.add_argument("--key", action="append", default=[], metavar="[KID=]SPEC",
                   help="an audit key: env:NAME or file:PATH, optionally KID=SPEC; repeatable")
    p.add_argument("--config", metavar="FILE", help="veil.yaml: keys.audit, keys.pseudonym, audit.path")
    p.add_argument("--no-head", action="store_true",
                   help="accept chains without a head file if they end in a checkpoint (archives)")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "audit_command", None)
    if action is None:
        args.audit_parser.print_help(sys.stderr)
        return 2
    config = load_config(args.config) if args.config else None
    try:
        logs = _logs(args.logs, config)
        ring = _ring(args.key, config, "audit")
        if logs is None or ring is None:
            raise _Usage("give LOG paths and --key, or --config veil.yaml")
        if action == "verify":
            return _verify(logs, ring, args)
        return _report(logs, ring, args, config)
    except _Usage as exc:
        print(f"veil audit {action}: {exc}", file=sys.stderr)
        return 2


def _verify(logs: list[str], ring: KeyRing, args: argparse.Namespace) -> int:
    result = verify(logs, ring, require_head=not args.no_head)
    if args.json:
        out = {"ok": result.ok, "records": result.records, "files": result.files, "chains": result.chains,
               "problem": result.problem, "message": result.message,
               "first_bad": [str(result.first_bad[0]), result.first_bad[1]] if result.first_bad else None,
               "torn_tails": [t.to_json() for t in result.torn_tails]}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(result.render())
    return 0 if result.ok else 1


def _report(logs: list[str], ring: KeyRing, args: argparse.Namespace, config: Config | None) -> int:
    pring = _ring(args.pseudonym_key, config, "pseudonym")
    if pring is None:
        raise _Usage("give --pseudonym-key or --config veil.yaml")
    subject = sys.stdin.readline().strip() if args.subject == "-" else args.subject
    if not subject:
        raise _Usage("the subject id is empty")
    rep = report(logs, ring, pseudonyms(pring, subject), require_head=not args.no_head)
    if args.json:
        print(orjson.dumps(rep.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0 if rep.verification.ok else 1
    print(f"subject pseudonym: {', '.join(rep.subjects)}")
    v = rep.verification
    print(f"log: {v.render()}")
    if not v.ok:
        print("WARNING: the log did not verify; disclosures after the first bad line are not listed")
    rows = [("CALLER", "PURPOSE", "CATEGORIES (FORM)", "COUNT", "FIRST", "LAST")]
    rows += [(r.caller, r.purpose, categories_text(r.categories, r.unknown), str(r.count), r.first, r.last)
             for r in rep.recipients]
    if len(rows) == 1:
        print("no disclosures of this subject's data were recorded")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if v.ok else 1


def categories_text(categories: dict[str, tuple[str, ...]], unknown: int = 0) -> str:
    """`contact.email (hash), identity` — a category alone left in clear; `+ n unknown` for disclosures
    whose categories the log cannot tell."""
    parts = [c if forms == ("clear",) else f"{c} ({', '.join(forms)})" for c, forms in categories.items()]
    if unknown:
        parts.append(f"+ {unknown} of unknown categories")
    return ", ".join(parts) or "uncategorized fields only"


def _logs(given: list[str], config: Config | None) -> list[str] | None:
    if given:
        return given
    if config is not None:
        return [str(Path(config.audit_path).parent)]
    return None


def _ring(specs: list[str], config: Config | None, name: str) -> KeyRing | None:
    if specs:
        keys: dict[str, bytes] = {}
        for spec in specs:
            kid, sep, ref = spec.partition("=")
            if not sep or spec.startswith(("env:", "file:")):
                kid, ref = WILDCARD_KID, spec
            if not kid or kid in keys:
                raise _Usage(f"key id {kid!r} is empty or given twice")
            keys[kid] = load_secret(ref, what="--key" if kid == WILDCARD_KID else f"--key {kid}")
        return KeyRing(next(iter(keys)), keys)
    if config is not None:
        return config.keyring(name)
    return None
