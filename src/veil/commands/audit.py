"""`veil audit verify LOG...`, `veil audit report --subject ID [LOG...]`, and the fleet-wide store:
`verify --store URL`, `report --store URL`, `ship` (the shipper on its own), `prune --store URL`.

Keys: `--key env:NAME` / `--key file:PATH` (repeatable; `--key KID=env:NAME` names the key id the
records carry; a key without an id verifies records of any kid not otherwise given), or `--config
veil.yaml` for keys.audit (and keys.pseudonym for reports). Without LOG, the config's audit directory.
`--store` without a URL: the config's audit.ship.url.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from veil.audit._chain import WILDCARD_KID
from veil.audit.report import SubjectReport, pseudonyms, report
from veil.audit.verify import verify
from veil.config import Config, load_config
from veil.errors import VeilError
from veil.keys import KeyRing, load_secret

T = TypeVar("T")


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
    r.add_argument("--json", action="store_true", help="print the report as JSON (same as --format json)")
    r.add_argument("--format", choices=("text", "json", "html"), default="text",
                   help="text (default), json, or html: a page the customer can read")
    r.add_argument("--policy", action="append", default=[], metavar="PATH",
                   help="policy files for the purposes' descriptions in --format html (default: --config's)")
    r.set_defaults(func=run)

    s = sub.add_parser("ship", help="ship the decision log to the store (sidecar); see audit.ship in veil.yaml")
    s.add_argument("--config", required=True, metavar="FILE", help="veil.yaml: audit.path, audit.ship, keys.audit")
    s.add_argument("--once", action="store_true", help="ship what is there now, then exit (0: all shipped)")
    s.add_argument("--migrate", action="store_true", help="only create the store's tables, then exit")
    s.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics (veil_audit_ship_*) here")
    s.set_defaults(func=run)

    pr = sub.add_parser("prune", help="apply retention to the store now (drops old partitions, signed markers)")
    pr.add_argument("--config", required=True, metavar="FILE", help="veil.yaml: keys.audit, audit.retention")
    pr.add_argument("--store", nargs="?", const="", metavar="URL", help="default: audit.ship.url")
    pr.add_argument("--before", metavar="DATE", help="drop partitions that end at or before this date "
                                                     "(default: now less the retention)")
    pr.set_defaults(func=run)
    parser.set_defaults(func=run, audit_parser=parser)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="*", metavar="LOG", help="log files, directories or globs")
    p.add_argument("--key", action="append", default=[], metavar="[KID=]SPEC",
                   help="an audit key: env:NAME or file:PATH, optionally KID=SPEC; repeatable")
    p.add_argument("--config", metavar="FILE", help="veil.yaml: keys.audit, keys.pseudonym, audit.path")
    p.add_argument("--no-head", action="store_true",
                   help="accept chains without a head file if they end in a checkpoint (archives)")
    p.add_argument("--store", nargs="?", const="", metavar="URL",
                   help="the PostgreSQL store (postgresql://...?schema=NAME) instead of LOG files; "
                        "without URL: audit.ship.url of --config")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "audit_command", None)
    if action is None:
        args.audit_parser.print_help(sys.stderr)
        return 2
    config = load_config(args.config) if args.config else None
    try:
        if action == "ship":
            assert config is not None
            return _ship(config, args)
        if action == "prune":
            assert config is not None
            return _prune(config, args)
        ring = _ring(args.key, config, "audit")
        if args.store is not None:
            url = _store_url(args.store, config)
            if ring is None:
                raise _Usage("give --key, or --config veil.yaml")
            if action == "verify":
                return _verify_store(url, ring, args)
            return _report(None, ring, args, config, url)
        logs = _logs(args.logs, config)
        if logs is None or ring is None:
            raise _Usage("give LOG paths and --key, or --config veil.yaml")
        if action == "verify":
            return _verify(logs, ring, args)
        return _report(logs, ring, args, config, None)
    except _Usage as exc:
        print(f"veil audit {action}: {exc}", file=sys.stderr)
        return 2


def _store_url(given: str, config: Config | None) -> str:
    if given:
        if not given.startswith(("postgresql://", "postgres://")):
            raise _Usage("--store must be a postgresql:// URL")
        return given
    if config is not None and config.audit_ship is not None:
        return config.audit_ship.url
    raise _Usage("give --store postgresql://..., or --config veil.yaml with audit.ship.url")


def _with_store(url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    from veil.audit.store import AuditStore

    async def go() -> T:
        store = await AuditStore.connect(url, timeout=30.0)
        try:
            await store.open()
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _verify_store(url: str, ring: KeyRing, args: argparse.Namespace) -> int:
    from veil.audit.store_verify import verify_store

    result = _with_store(url, lambda store: verify_store(store, ring))
    if args.json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(result.render())
    return 0 if result.ok else 1


def _ship(config: Config, args: argparse.Namespace) -> int:
    from veil.audit.sidecar import Sidecar, serve_sidecar

    if config.audit_ship is None:
        raise _Usage("audit.ship is not configured in --config")
    if args.migrate:
        from veil.audit.store import AuditStore

        async def migrate() -> str:
            assert config.audit_ship is not None
            store = await AuditStore.connect(config.audit_ship.url, timeout=config.audit_ship.timeout)
            try:
                return await store.migrate(config.audit_ship.partition)
            finally:
                await store.close()

        print(f"store ready (partitions: {asyncio.run(migrate())})")
        return 0
    if args.once:
        ok = asyncio.run(Sidecar(config).once())
        print("all shipped" if ok else "not everything was shipped (see the log)")
        return 0 if ok else 1
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    listen = None
    if args.metrics:
        host, sep, port = args.metrics.rpartition(":")
        if not sep or not port.isdigit():
            raise _Usage("--metrics must be HOST:PORT")
        listen = (host or "127.0.0.1", int(port))
    asyncio.run(serve_sidecar(config, metrics_listen=listen))
    return 0


def _prune(config: Config, args: argparse.Namespace) -> int:
    from veil.audit.sidecar import Sidecar

    url = _store_url(args.store or "", config)
    ring = config.keyring("audit")
    if args.before:
        try:
            before = datetime.fromisoformat(args.before)
        except ValueError:
            raise _Usage("--before must be an ISO date, like 2025-01-31") from None
        before = before if before.tzinfo else before.replace(tzinfo=UTC)
    else:
        days = Sidecar(config).retention() if config.audit_ship else config.audit_max_retention_days
        before = datetime.now(UTC) - timedelta(days=days)
    markers = _with_store(url, lambda store: store.prune(before, ring))
    for m in markers:
        print(f"chain {m['genesis'][:16]}: {m['records']} records up to seq {m['through_seq']} removed "
              f"({m['partition']})")
    print(f"{sum(m['records'] for m in markers)} records removed, before {before.isoformat()}")
    return 0


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


def _report(logs: list[str] | None, ring: KeyRing, args: argparse.Namespace, config: Config | None,
            store_url: str | None) -> int:
    pring = _ring(args.pseudonym_key, config, "pseudonym")
    if pring is None:
        raise _Usage("give --pseudonym-key or --config veil.yaml")
    subject = sys.stdin.readline().strip() if args.subject == "-" else args.subject
    if not subject:
        raise _Usage("the subject id is empty")
    wanted = pseudonyms(pring, subject)
    rep: SubjectReport
    if store_url is not None:
        from veil.audit.store_report import store_report

        rep = _with_store(store_url, lambda store: store_report(store, ring, wanted))
    else:
        assert logs is not None
        rep = report(logs, ring, wanted, require_head=not args.no_head)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(orjson.dumps(rep.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0 if rep.verification.ok else 1
    if fmt == "html":
        from veil.audit.report_html import render_report_html

        print(render_report_html(rep, purposes=_purposes(args.policy, config),
                                 generated=datetime.now(UTC).isoformat(timespec="seconds")), end="")
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


def _purposes(paths: list[str], config: Config | None) -> dict[str, Any]:
    """The policy's purposes (descriptions, recipients) for the HTML page; {} when none loads."""
    from veil.policy.load import load_policy

    given = paths or (list(config.policy_paths) if config is not None else [])
    if not given:
        return {}
    try:
        return dict(load_policy(given).purposes)
    except (VeilError, OSError) as exc:
        print(f"note: policy not loaded, purposes are shown by name only ({exc})", file=sys.stderr)
        return {}


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
