"""`veil consent`: record, show, import and migrate consent.

    veil consent grant    --subject ID --key K [--source S --method M --notice-version N --expires DATE
                          --jurisdiction J --purpose P ...]
    veil consent withdraw --subject ID --key K [same options]
    veil consent show     --subject ID [--proof] [--json]
    veil consent import   FILE [--format csv|jsonl] [--resume | --restart]
    veil consent migrate
    veil consent hash     --subject ID|-     (the store hash and key id, for a system writing the store)
    veil consent rekey    --ids FILE [--batch-size N] [--quiet]   (needs --config: the key ring)
    veil consent rekey    --status [--json]

Every subcommand takes `--config veil.yaml` (consent.url and keys.store) or `--store URL --store-key
env:NAME|file:PATH`. Output names subjects by their store hash only, never the raw id.

`rekey --ids` moves the rows of the listed subjects (one id per line, exactly as veil sees it) to the
current store key, in batches; `rekey --status` counts rows per key id and exits 1 while rows remain
under a key other than the current one (docs/keys.md, "Consent store key").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from veil.config import load_config
from veil.consent._schema import KeyCounts, Recorded, Rekeyed, now_utc, utc
from veil.consent.importer import ImportInvalid, import_file
from veil.consent.open import StoreImpl, check_url, open_raw_store
from veil.consent.postgres import PostgresConsentStore
from veil.consent.store import Action, ConsentEvent, ConsentState, SubjectHasher
from veil.errors import VeilError
from veil.keys import KeyRing, load_secret


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("consent", help="record, show, import and migrate consent")
    sub = parser.add_subparsers(dest="consent_command", metavar="SUBCOMMAND")
    for name, helptext in (("grant", "record that consent was given"), ("withdraw", "record a withdrawal")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--subject", required=True, help="the subject id (stored only as a keyed hash)")
        p.add_argument("--key", required=True, help="the consent key, e.g. personalization")
        p.add_argument("--source", default="cli", help="where the choice was made (default: cli)")
        p.add_argument("--method", default="unspecified", help="how it was collected, e.g. web-form")
        p.add_argument("--notice-version", type=int, help="version of the notice shown")
        p.add_argument("--expires", help="expiry date or date-time, ISO 8601 (no offset: UTC)")
        p.add_argument("--jurisdiction", help="e.g. EU, US-CA")
        p.add_argument("--purpose", action="append", default=[], help="a purpose covered (repeatable)")
        p.add_argument("--at", help="when the choice was made (default: now), ISO 8601")
    show = sub.add_parser("show", help="current consent of a subject (--proof: full history)")
    _common(show)
    show.add_argument("--subject", required=True)
    show.add_argument("--proof", action="store_true", help="every recorded event with all its fields")
    show.add_argument("--json", action="store_true", help="print JSON")
    imp = sub.add_parser("import", help="import consent records from CSV or JSON Lines")
    _common(imp)
    imp.add_argument("file")
    imp.add_argument("--format", choices=("csv", "jsonl"))
    again = imp.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted import of FILE")
    again.add_argument("--restart", action="store_true", help="import FILE again from its first line")
    imp.add_argument("--batch-size", type=int, default=10_000)
    imp.add_argument("--quiet", action="store_true", help="no progress lines")
    mig = sub.add_parser("migrate", help="create or upgrade the store's schema")
    _common(mig)
    hs = sub.add_parser("hash", help="a subject's store hash and key id (for writing the store directly)")
    _common(hs)
    hs.add_argument("--subject", required=True, help="the subject id ('-' reads it from standard input)")
    rk = sub.add_parser("rekey", help="move rows to the current store key, or count rows per key")
    _common(rk)
    what = rk.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", metavar="FILE", help="subject ids to re-key, one per line ('-': stdin)")
    what.add_argument("--status", action="store_true", help="rows per key id; exit 1 while old ones remain")
    rk.add_argument("--batch-size", type=int, default=1000, help="subjects per transaction (default 1000)")
    rk.add_argument("--quiet", action="store_true", help="no progress lines")
    rk.add_argument("--json", action="store_true", help="--status as JSON")
    parser.set_defaults(func=run, _consent_parser=parser)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="veil.yaml (uses consent.url and keys.store)")
    p.add_argument("--store", help="store URL: sqlite:///path or postgresql://…")
    p.add_argument("--store-key", help="env:NAME or file:PATH of the store key")


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "consent_command", None)
    if command is None:
        args._consent_parser.print_help(sys.stderr)
        return 2
    if args.config and (args.store or args.store_key):
        print("veil consent: use either --config or --store/--store-key, not both", file=sys.stderr)
        return 2
    if command == "rekey" and args.ids and not args.config:
        print("veil consent rekey --ids: pass --config veil.yaml (it needs the whole keys.store ring)",
              file=sys.stderr)
        return 2
    if command == "hash":
        return _hash(args)
    keyless = command == "migrate" or (command == "rekey" and args.status)
    if not args.config and not (args.store and (args.store_key or keyless)):
        print("veil consent: pass --config veil.yaml, or --store URL --store-key env:NAME", file=sys.stderr)
        return 2
    action: Callable[[StoreImpl], Awaitable[int]] = {
        "grant": lambda s: _record(s, args, Action.GIVEN),
        "withdraw": lambda s: _record(s, args, Action.WITHDRAWN),
        "show": lambda s: _show(s, args),
        "import": lambda s: _import(s, args),
        "migrate": lambda s: _migrate(s),
        "rekey": lambda s: _rekey(s, args),
    }[command]
    return asyncio.run(_with_store(args, action))


async def _with_store(args: argparse.Namespace, action: Callable[[StoreImpl], Awaitable[int]]) -> int:
    url, hasher = _target(args)
    store = await open_raw_store(url, hasher, migrate=True, listen=False)
    try:
        return await action(store)
    finally:
        await store.close()


def _target(args: argparse.Namespace) -> tuple[str, SubjectHasher]:
    if args.config:
        config = load_config(args.config)
        return check_url(config.consent_url), SubjectHasher(config.keyring("store"))
    check_url(args.store)
    if args.store_key:
        ring = KeyRing.single(load_secret(args.store_key, what="--store-key"))
    else:  # migrate and rekey --status need no key: they never hash a subject
        ring = KeyRing.single(b"\0" * 32, key_id="")
    return str(args.store), SubjectHasher(ring)


def _hash(args: argparse.Namespace) -> int:
    """Print `<hash> <key id>`: what another system writes as subject_hash and key_id, and NOTIFYs
    (docs/deploy.md, "Writing consent from another system"). No store is opened."""
    if args.config:
        hasher = SubjectHasher(load_config(args.config).keyring("store"))
    elif args.store_key:
        hasher = SubjectHasher(KeyRing.single(load_secret(args.store_key, what="--store-key")))
    else:
        print("veil consent hash: pass --config veil.yaml or --store-key env:NAME", file=sys.stderr)
        return 2
    subject = sys.stdin.readline().rstrip("\r\n") if args.subject == "-" else args.subject
    if not subject:
        print("veil consent hash: the subject id is empty", file=sys.stderr)
        return 2
    print(f"{hasher(subject)} {hasher.key_id}")
    return 0


def _when(text: str, what: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise VeilError(f"{what} must be an ISO 8601 date or date-time", code="usage") from exc


async def _record(store: StoreImpl, args: argparse.Namespace, action: Action) -> int:
    at = _when(args.at, "--at") if args.at else now_utc()
    event = ConsentEvent(
        subject=args.subject, consent_key=args.key, action=action, at=at, source=args.source,
        method=args.method, notice_version=args.notice_version,
        expires_at=_when(args.expires, "--expires") if args.expires else None,
        jurisdiction=args.jurisdiction, purposes=tuple(args.purpose),
    )
    if event.expires_at is not None and event.expires_at <= at:
        raise VeilError("--expires must be after the time of the choice", code="usage")
    await store.record([event])
    print(f"recorded: {args.key} {action.value} for subject {store.hasher(args.subject)}")
    return 0


async def _show(store: StoreImpl, args: argparse.Namespace) -> int:
    records = await store.proof(args.subject)
    keys = sorted({r.event.consent_key for r in records})
    states = await store.current([args.subject], keys) if keys else {}
    now = datetime.now(UTC)
    current = [_state_json(states[(args.subject, k)], now) for k in keys if (args.subject, k) in states]
    doc: dict[str, Any] = {"subject_hash": store.hasher(args.subject), "consent": current}
    if args.proof:
        doc["events"] = [_event_json(r) for r in records]
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"subject {doc['subject_hash']}: {len(current)} consent key(s)")
    for c in current:
        extra = f", expires {c['expires_at']}" if c["expires_at"] else ""
        since = f"since {c['at']}, notice {c['notice_version']}"
        print(f"  {c['consent_key']}: {c['effective']} ({since}{extra})")
    if args.proof:
        print(f"history ({len(records)} event(s), oldest first):")
        for e in doc["events"]:
            fields = ", ".join(f"{k}={v}" for k, v in e.items() if k != "subject_hash")
            print(f"  - {fields}")
    return 0


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else utc(dt).isoformat()


def _state_json(s: ConsentState, now: datetime) -> dict[str, Any]:
    expired = s.status.value == "given" and not s.is_given(now)
    return {
        "consent_key": s.consent_key, "status": s.status.value,
        "effective": "expired" if expired else s.status.value, "at": _iso(s.at),
        "notice_version": s.notice_version, "expires_at": _iso(s.expires_at), "source": s.source,
    }


def _event_json(r: Recorded) -> dict[str, Any]:
    e = r.event
    return {
        "event_id": e.event_id, "subject_hash": e.subject, "consent_key": e.consent_key,
        "action": e.action.value, "at": _iso(e.at), "recorded_at": _iso(r.recorded_at),
        "source": e.source, "method": e.method, "notice_version": e.notice_version,
        "expires_at": _iso(e.expires_at), "jurisdiction": e.jurisdiction, "purposes": list(e.purposes),
    }


async def _import(store: StoreImpl, args: argparse.Namespace) -> int:
    def progress(rows: int, line: int) -> None:
        if not args.quiet:
            print(f"  {rows} rows committed (through line {line})", file=sys.stderr)

    try:
        result = await import_file(
            store, args.file, fmt=args.format, resume=args.resume, restart=args.restart,
            batch_size=max(1, args.batch_size), progress=progress,
        )
    except ImportInvalid as exc:
        print(exc.render(), file=sys.stderr)
        raise
    if result.already_done:
        print(f"nothing to do: {args.file} was imported completely (through line {result.last_line})")
        return 0
    skipped = f", {result.skipped} skipped (imported before)" if result.skipped else ""
    print(f"imported {result.rows} row(s){skipped} in {result.seconds:.1f}s ({result.rate:.0f} rows/s)")
    return 0


async def _migrate(store: StoreImpl) -> int:
    if isinstance(store, PostgresConsentStore):
        version = await store.migrate()
        print(f"consent store schema (postgresql, schema {store.schema}) at version {version}")
    else:
        ok = await store.ping()
        if not ok:
            raise VeilError("consent store (sqlite) cannot be opened", code="consent_unavailable")
        print("consent store schema (sqlite) is up to date")
    return 0


# -- rekey ---------------------------------------------------------------------------------------------


async def _rekey(store: StoreImpl, args: argparse.Namespace) -> int:
    if args.status:
        return _print_status(store, await store.key_counts(), as_json=args.json, known=bool(args.config))
    ring = store.hasher.ring
    if not store.hasher.rotating and not args.quiet:
        print(f"keys.store holds one key ({ring.current_id}): nothing to move, "
              "unlabelled rows get labelled", file=sys.stderr)
    size, total, subjects, started = max(1, args.batch_size), Rekeyed(), 0, time.monotonic()
    for batch in _id_batches(args.ids, size):
        total = total + await store.rekey(batch)
        subjects += len(batch)
        if not args.quiet:
            print(f"  {subjects} subject(s): {total.events} event row(s) and {total.current} current row(s)"
                  f" re-keyed, {total.labelled} labelled", file=sys.stderr)
    seconds = time.monotonic() - started
    print(f"re-keyed {total.events} event row(s) and {total.current} current row(s) of {subjects} listed "
          f"subject(s) to key {ring.current_id}, labelled {total.labelled} row(s) in {seconds:.1f}s")
    _print_status(store, await store.key_counts(), as_json=False, known=True)
    return 0


def _id_batches(path: str, size: int) -> Iterator[list[str]]:
    """Subject ids from a file ('-': stdin), one per line, blank lines skipped, in lists of `size`."""
    if path == "-":
        yield from _batches(sys.stdin, path, size)
        return
    try:
        with open(path, encoding="utf-8") as f:
            yield from _batches(f, path, size)
    except OSError as exc:
        raise VeilError(f"cannot read {path}: {exc.strerror}", code="usage") from exc


def _batches(lines: Iterable[str], path: str, size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    n = 0
    try:
        for text in lines:
            n += 1
            sid = text.rstrip("\r\n")
            if sid:
                batch.append(sid)
                if len(batch) >= size:
                    yield batch
                    batch = []
    except UnicodeDecodeError as exc:
        raise VeilError(f"{path}: not UTF-8 text (after {n} line(s))", code="usage") from exc
    if batch:
        yield batch


def _print_status(store: StoreImpl, counts: KeyCounts, *, as_json: bool, known: bool) -> int:
    """Rows per key id; exit 1 while rows remain under a key other than the current one."""
    ring = store.hasher.ring
    current = ring.current_id if known else None
    ids = sorted(set(counts.events) | set(counts.current), key=lambda k: (k is None, k != current, k or ""))
    other = sum(n for k, n in counts.events.items() if k != current)
    other += sum(n for k, n in counts.current.items() if k != current)
    if as_json:
        doc = {
            "current_key": current, "ring": list(ring.keys) if known else None,
            "keys": [{"key_id": k, "events": counts.events.get(k, 0), "current": counts.current.get(k, 0),
                      "in_ring": None if not known else k in ring.keys} for k in ids],
            "rows_under_other_keys": other if known else None,
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if known and other else 0
    if known:
        print(f"keys.store: {', '.join(k + (' (current)' if k == current else '') for k in ring.keys)}")
    print(f"{'rows per key id':<34}{'events':>12}{'current':>12}")
    for k in ids:
        if k is None:
            name = "(unlabelled)"
        elif not known:
            name = k
        else:
            name = k + (" (current)" if k == current else "" if k in ring.keys else " (not in keys.store)")
        print(f"  {name:<32}{counts.events.get(k, 0):>12}{counts.current.get(k, 0):>12}")
    if not ids:
        print("  (the store is empty)")
    if not known:
        return 0
    if not other:
        older = [k for k in ring.keys if k != current]
        tail = f": {', '.join(older)} can be removed from keys.store" if older else ""
        print(f"every row is under the current key {current}{tail}")
        return 0
    print(f"{other} row(s) are not under the current key {current}. Keep the older keys in keys.store "
          "until this is 0: lookups re-key the rows they find, `veil consent rekey --ids FILE` the subjects "
          "it lists. Rows nobody looks up or lists become unreachable once their key is removed.")
    if None in ids:
        print("(unlabelled: written before veil recorded key ids, or by an outside writer; "
              "`rekey --ids` labels those of the subjects it lists)")
    return 1
