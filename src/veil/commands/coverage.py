"""`veil coverage PATH... [--schema openapi.yaml] [--format md|json]`: for each route and purpose, every
field of the response schema with its fate (kept, transformed how, partial, dropped, removed by
minimization) and the policy line behind it. Fates come from the compiled field plans (the engine
that enforces), applied to documents synthesized from the schema.

Fields that look personal (schema format, name, `x-veil-category`) and leave in clear while no
category of the policy names them are listed first. `--route "GET /customers/{id}"` and
`--purpose NAME` narrow the output.

Exit 0, or 1 when such a field exists (or the policy or schema has errors), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from veil.errors import Diagnostics
from veil.schema.coverage import RuleCoverage


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "coverage", help="every response field's fate, per route and purpose, from the API's schema",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    p.add_argument("--schema", action="append", default=[], metavar="FILE",
                   help="an OpenAPI document (repeatable; adds to the policy's `schema` lines)")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("--route", metavar='"METHOD /template"', help="only this route")
    p.add_argument("--purpose", metavar="NAME", help="only this purpose")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from veil.schema.check import coverage, load_checked

    try:
        policy, schemas = load_checked(args.paths, extra_schemas=args.schema)
    except Diagnostics as exc:
        print(exc.render(), file=sys.stderr)
        print("veil coverage: the policy or its schema has errors", file=sys.stderr)
        return 1
    if not schemas:
        print("veil coverage: no schema: name one with `schema \"openapi.yaml\"` in the policy or --schema FILE",
              file=sys.stderr)
        return 2
    found = coverage(policy, schemas)
    if args.route:
        found = [c for c in found if f"{c.method} {c.route}" == args.route.strip()]
    if args.purpose:
        found = [c for c in found if c.purpose == args.purpose]
    uncovered = sorted(f"{m} {t}" for (m, t), rs in schemas.routes.items() if rs is None)
    if args.format == "json":
        print(json.dumps({"policy": policy.version, "rules": [_json(c) for c in found],
                          "routes_without_operation": uncovered}, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(markdown(found, uncovered))
    return 1 if any(c.findings for c in found) else 0


def _json(c: RuleCoverage) -> dict[str, Any]:
    return {"route": f"{c.method} {c.route}", "purpose": c.purpose, "schema": c.source, "truncated": c.truncated,
            "personal_in_clear": [r.template for r in c.findings], "guards": c.guards,
            "fields": [r.to_json() for r in _ordered(c)]}


def _ordered(c: RuleCoverage) -> list[Any]:
    """Personal fields in clear without a category first, then personal ones, then the rest."""
    return sorted(c.rows, key=lambda r: (not r.personal_in_clear, r.personal is None))


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def markdown(found: list[RuleCoverage], uncovered: list[str]) -> str:
    out: list[str] = ["# Field coverage", ""]
    total = sum(len(c.findings) for c in found)
    out.append(f"{len(found)} rule(s); {total} personal field(s) kept in clear without a category.")
    out.append("")
    for c in found:
        out.append(f"## {c.method} {c.route} — {c.purpose}")
        out.append("")
        out.append(f"Schema: {c.source}" + (" (truncated: the schema is deeper or larger than listed)"
                                            if c.truncated else ""))
        if c.findings:
            out.append("")
            out.append("**Personal and in clear, no category:** " + ", ".join(f"`{r.template}`" for r in c.findings))
        for g in c.guards:
            out.append(f"\nAggregate guard: {g}")
        out.append("")
        out.append("| field | types | fate | personal | category | policy line |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for r in _ordered(c):
            fate = r.fate + (f" ({r.how})" if r.how else "") + (f"; {r.note}" if r.note else "")
            personal = f"{r.personal.category} ({r.personal.reason})" if r.personal else ""
            where = f"{r.location}: `{r.statement}`" if r.statement else (str(r.location) if r.location else "")
            out.append(f"| `{_cell(r.template)}` | {'/'.join(r.kinds)} | {_cell(fate)} | {_cell(personal)} | "
                       f"{_cell(r.category)} | {_cell(where)} |")
        out.append("")
    if uncovered:
        out.append("## Routes with no operation in the schema")
        out.append("")
        out.extend(f"- {u}" for u in uncovered)
        out.append("")
    return "\n".join(out)
