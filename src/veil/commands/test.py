"""`veil test PATH...`: run policy tests (YAML files, schema in policies/README.md) in-process.

PATH may be policy files or directories (the policy set) and test files; a directory contributes its
*.veil files to the policy and its *.yaml / *.yml files as tests (policies/ → policies/tests/*.yaml).
With only test files given, the policy is the directory above their directory, unless --policy says.

With a schema (`schema "openapi.yaml"` in the policy, or --schema FILE) the policy is checked against
it as by `veil check`, and each case's response body is compared with its route's response schema:
cases whose body the API would not send are listed (by path and JSON type, never a value). That is
right for a defensive case (a field the upstream may add one day) and a mistake for a typo;
--strict-schema makes every misfit a failure.

Each failure is printed with a unified diff of expected vs actual JSON. Afterwards: which rules no case
selected and which field statements never acted (by file:line). Exit 0 when every case passes, 1 on
any failure (or, with --require-coverage, anything uncovered), 2 on usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from veil.errors import Diagnostics, VeilError
from veil.policy.compile import CompiledPolicy
from veil.policy.testing import Case, Coverage, load_cases, run_case
from veil.schema.check import Schemas, load_checked

TEST_SUFFIXES = (".yaml", ".yml")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "test", help="run policy tests", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy and test files or directories")
    parser.add_argument("--policy", action="append", metavar="PATH", help="the policy set (repeatable)")
    parser.add_argument("-k", dest="select", metavar="TEXT", help="only cases whose name contains TEXT")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case")
    parser.add_argument("--schema", action="append", default=[], metavar="FILE",
                        help="an OpenAPI document of the API (adds to the policy's `schema` lines)")
    parser.add_argument("--strict-schema", action="store_true",
                        help="a case whose response body does not fit the schema fails")
    parser.add_argument("--require-coverage", action="store_true",
                        help="fail when a rule or field statement is not exercised")
    parser.set_defaults(func=run)


def discover(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(policy paths, test files) named by the command line."""
    policy: list[Path] = []
    tests: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            policy.append(p)
            tests.extend(sorted(q for q in p.rglob("*") if q.suffix in TEST_SUFFIXES and q.is_file()))
        elif p.suffix in TEST_SUFFIXES:
            tests.append(p)
        elif p.exists():
            policy.append(p)
        else:
            raise VeilError(f"{p}: no such file or directory", code="file_unreadable")
    return policy, tests


def run(args: argparse.Namespace) -> int:
    policy_paths, tests = discover(args.paths)
    if args.policy:
        policy_paths = [Path(p) for p in args.policy]
    elif not policy_paths and tests:
        # the policy set next to the tests, written as the test file was (relative stays relative,
        # so locations in the output all read the same way)
        parent = tests[0].resolve().parent.parent
        policy_paths = [parent if tests[0].is_absolute() else Path(os.path.relpath(parent))]
    if not tests:
        print("veil test: no test files (*.yaml) found", file=sys.stderr)
        return 1
    try:
        policy, schemas = load_checked(policy_paths, extra_schemas=args.schema)
    except Diagnostics as exc:
        print(exc.render(), file=sys.stderr)
        print("veil test: the policy has errors", file=sys.stderr)
        return 1
    schema_files = schemas.files | {f for a in schemas.apis for f in a.read_files()}
    tests = [t for t in tests if t.resolve() not in schema_files]  # an OpenAPI document is no test file
    if not tests:
        print("veil test: no test files (*.yaml) found", file=sys.stderr)
        return 1
    coverage = Coverage(policy)
    passed = failed = 0
    misfit_cases: list[str] = []
    for test_file in tests:
        for case in load_cases(test_file):
            if args.select and args.select not in case.name:
                continue
            result = run_case(policy, case)
            misfit = _schema_misfits(policy, schemas, case)
            if misfit and args.strict_schema:
                result.failures.extend(misfit)
            elif misfit:
                misfit_cases.append(f"  {case.where.file}:{case.where.line}: {case.name}\n    " + "\n    ".join(misfit))
            coverage.add(result.outcome)
            where = f"{case.where.file}:{case.where.line}"
            if result.ok:
                passed += 1
                if args.verbose:
                    print(f"ok    {where}: {case.name}")
                continue
            failed += 1
            print(f"FAIL  {where}: {case.name}")
            for failure in result.failures:
                print("      " + failure.replace("\n", "\n      "))
    if misfit_cases:
        print("\nresponse bodies the schema does not allow (--strict-schema makes them failures):")
        print("\n".join(misfit_cases))
    uncovered = coverage.uncovered()
    rules_hit, rules, stmts_hit, stmts = coverage.totals()
    if uncovered:
        print("\nnot exercised by any case:")
        for loc, what in uncovered:
            text = _source_line(policy.sources, loc.file, loc.line)
            print(f"  {loc.file}:{loc.line}: {what}" + (f"  | {text}" if text else ""))
    print(f"\nveil test: {passed} passed, {failed} failed ({len(tests)} file(s)); coverage: "
          f"{rules_hit}/{rules} rules selected, {stmts_hit}/{stmts} field statements acted")
    if failed or (args.require_coverage and uncovered):
        return 1
    return 0


def _schema_misfits(policy: CompiledPolicy, schemas: Schemas, case: Case) -> list[str]:
    """The case's response body against its route's response schema (2xx bodies only)."""
    from veil.schema.reach import misfits

    resp, req = case.response, case.request
    if not schemas or not resp.has_body or not 200 <= resp.status < 300:
        return []
    found = policy.match(req.method, req.path.split("?", 1)[0].rstrip("/") or "/")
    if found is None:
        return []
    route = found[0]
    rs = schemas.of(route.method, route.template)
    if rs is None or not rs.shapes:
        return []
    bad = misfits(rs.shapes, resp.body)
    if not bad:
        return []
    return [f"the response body does not fit the schema of {route.method} {route.template} ({rs.source}): "
            + "; ".join(bad)]


def _source_line(sources: dict[str, str], file: str, line: int) -> str:
    lines = sources.get(file, "").splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""
