"""`veil explain`: why a request is admitted or blocked, and, with a body, what happens to each field.

    veil explain --policy policies/ --request "GET /customers/c-1" --caller storefront \\
                 --purpose personalize.recommendations --consent personalization=given --body c-1.json

Prints the decision (admitted, or blocked with its reason) and the policy locations behind it; with
--body, every field's fate (kept / removed by minimization / dropped / transformed / suppressed /
filtered) and the policy line (file:line:col) that decided it. `--json` prints the same as JSON.
`--show-plan` adds the rule's compiled field plan: its statements by rule id, and the Python source
generated for it, under the file names (`<veil plan GET /customers/{id} for … #1: $>`) that tracebacks
and profilers show.
Consent given with --consent applies to the request's subject and to every list item's subject;
`--consent KEY=given` marks it given to the purpose's current notice version now.
Exit 0 when admitted, 1 when blocked, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.consent.store import ConsentState, Status
from veil.errors import Diagnostics, VeilError
from veil.policy.explain import explain_request
from veil.policy.load import load_policy
from veil.policy.testing import Request, Response, parse_state, parse_time


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain", help="explain the decision for one request", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", action="append", required=True, metavar="PATH",
                        help="policy file or directory (repeatable)")
    parser.add_argument("--request", required=True, metavar='"METHOD /path"',
                        help='e.g. "GET /customers/c-1"')
    parser.add_argument("--caller", metavar="NAME", help="the caller, by its name in the policy")
    parser.add_argument("--key", metavar="KEY", help="or a raw Veil-Key to authenticate")
    parser.add_argument("--purpose", action="append", default=[], metavar="P", help="the declared purpose")
    parser.add_argument("--consent", action="append", default=[], metavar="KEY=STATE",
                        help="consent state: given, withdrawn, expired, missing (repeatable)")
    parser.add_argument("--consent-store-down", action="store_true", help="the consent store cannot answer")
    parser.add_argument("--gpc", action="store_true", help="the request carries Sec-GPC: 1")
    parser.add_argument("--tcf", metavar="TC_STRING", help="an IAB TCF v2 consent string")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                        help="a request header")
    parser.add_argument("--body", metavar="FILE.json", help="the upstream response body (JSON)")
    parser.add_argument("--status", type=int, default=200, help="the upstream status (default 200)")
    parser.add_argument("--now", metavar="ISO8601", help="evaluate at this time (default: now)")
    parser.add_argument("--show-plan", action="store_true",
                        help="also print the compiled field plan of the rule (its statements and the generated "
                             "Python source, under the file names tracebacks and profilers show)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def _usage(msg: str) -> int:
    print(f"veil explain: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    method, _, path = args.request.strip().partition(" ")
    if not path.strip().startswith("/"):
        return _usage('--request must look like "GET /customers/c-1"')
    headers = [("Sec-GPC", "1")] if args.gpc else []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            return _usage(f"--header {h!r} must be NAME:VALUE")
        headers.append((name.strip(), value.strip()))
    now = parse_time(args.now, "--now") if args.now else datetime.now(UTC)
    try:
        policy = load_policy(args.policy)
    except Diagnostics as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    states: dict[str, ConsentState] = {}
    for item in args.consent:
        key, sep, state = item.partition("=")
        if not sep or state not in {s.value for s in Status}:
            return _usage(f"--consent {item!r} must be KEY=given|withdrawn|expired|missing")
        notice = max((p.min_notice or 0 for p in policy.purposes.values() if p.consent_key == key), default=0)
        spec = {"status": state, "at": now.isoformat(), "notice_version": notice or None}
        states[key] = parse_state(key, spec, {}, "--consent")
    resp = Response(status=args.status)
    if args.body:
        try:
            body = json.loads(Path(args.body).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VeilError(f"--body {args.body}: cannot read JSON", code="body_invalid") from exc
        resp = Response(status=args.status, body=body, has_body=True)
    req = Request(method=method.upper(), path=path.strip(), caller=args.caller, key=args.key,
                  purposes=tuple(args.purpose), headers=tuple(headers), tcf=args.tcf)
    consent = None if args.consent_store_down else {"*": states}
    exp = explain_request(policy, req, consent, resp, now)
    rule = exp.outcome.rule or exp.outcome.selected
    if args.json:
        data = exp.to_json()
        if args.show_plan:
            data["plan"] = None if rule is None else {
                "name": rule.plan.name,
                "sources": [{"file": f, "source": src} for f, src in rule.plan.sources],
            }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(exp.render())
        if args.show_plan:
            print()
            if rule is None:
                print("no plan: the request is refused before a rule applies")
            else:
                print(rule.plan.describe(lambda i: str(rule.location_of(i))))
    return 1 if exp.outcome.decision == "block" else 0
