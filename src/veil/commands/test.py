"""`veil test PATH...`: run policy tests (YAML files, schema in policies/README.md) in-process.

PATH may be policy files or directories (the policy set) and test files; a directory contributes its
*.veil files to the policy and its *.yaml / *.yml files as tests (policies/ → policies/tests/*.yaml).
With only test files given, the policy is the directory above their directory, unless --policy says.

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
from veil.policy.load import load_policy
from veil.policy.testing import Coverage, load_cases, run_case

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
        policy = load_policy(policy_paths)
    except Diagnostics as exc:
        print(exc.render(), file=sys.stderr)
        print("veil test: the policy has errors", file=sys.stderr)
        return 1
    coverage = Coverage(policy)
    passed = failed = 0
    for test_file in tests:
        for case in load_cases(test_file):
            if args.select and args.select not in case.name:
                continue
            result = run_case(policy, case)
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


def _source_line(sources: dict[str, str], file: str, line: int) -> str:
    lines = sources.get(file, "").splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""
