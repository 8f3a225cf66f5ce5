"""Fuzz targets: every parser veil owns, fed arbitrary bytes. Each target returns quietly for input
veil handles (a result, or the error veil promises for bad input: a VeilError subclass, an
EnforceError, an H1Error) and raises anything else: a crash, an unexpected exception type, or an
AssertionError when a property fails (lazy and eager readings disagreeing, a formatter that is not
idempotent, a body over its limit).

The targets are plain functions of bytes: `tests/fuzz/run.py` drives them under atheris (coverage-
guided, libFuzzer), `tests/fuzz/test_fuzz.py` replays the seed corpus and every regression input
in-process, and runs each target for a bounded time.

    policy        the policy parser, checks, compiler and formatter (load_policy, format_text)
    tcf           the IAB TCF v2.2 decoder (decode never raises; "internal" is a bug)
    field_path    the field-path parser (parse_path; format_path round trip)
    config        the config loader (load_config: YAML → Config or ConfigError)
    consent_import the consent import reader (CSV and JSONL rows → events or row errors)
    h1_response   the upstream HTTP/1.1 client's response parsing (h1client._Conn, any byte split)
    decode        content decoding (gzip, deflate, stacked; size limit)
    json          JSON reading (parse_json) and the depth check
    lazy_eager    lazy (simdjson) vs eager (orjson) enforcement of one body: same output, report,
                  kept subjects and filtered count, or the same refusal
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from veil.config import load_config
from veil.consent import tcf
from veil.consent.importer import validate_file
from veil.errors import Refusal, VeilError
from veil.policy.fmt import format_text
from veil.policy.load import load_policy
from veil.proxy.forwarded import TrustedProxies
from veil.proxy.h1client import H1Error, H1Pool, _Conn
from veil.redact import Action, FieldRule, compile_plan, format_path, parse_path
from veil.redact import transforms as tr
from veil.redact.items import keep_items, list_items
from veil.redact.lazy import is_lazy
from veil.redact.reading import check_depth, decode_content, parse_json, read_document

_DIR = Path(tempfile.mkdtemp(prefix="veil-fuzz-"))


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- policy
def policy(data: bytes) -> None:
    text = _text(data)
    path = _DIR / "fuzz.veil"
    path.write_text(text, encoding="utf-8")
    try:
        load_policy([path])
    except VeilError:  # Diagnostics: file:line:col, caret and hint
        return
    once = format_text(text, "fuzz.veil")
    assert format_text(once, "fuzz.veil") == once, "veil fmt is not idempotent"
    path.write_text(once, encoding="utf-8")
    load_policy([path])  # the formatted policy is still valid


# ---------------------------------------------------------------- tcf
def tcf_string(data: bytes) -> None:
    result = tcf.decode(data.decode("latin-1"))
    assert result.detail != "internal", "the TCF decoder raised internally"
    if result.string is not None:
        orjson.dumps(result.string.to_json())
        if result.valid:
            tcf.allows(result.string, purposes=[1, 2, 3], special_features=[1], vendor_id=755)
            tcf.allows(result.string, purposes=[2, 7], vendor_id=1, legitimate_interest=True)


# ---------------------------------------------------------------- field paths
def field_path(data: bytes) -> None:
    try:
        path = parse_path(_text(data))
    except VeilError:  # PathError with an offset
        return
    text = format_path(path)
    assert parse_path(text) == path, f"format_path does not round-trip: {text!r}"


# ---------------------------------------------------------------- config
def config(data: bytes) -> None:
    path = _DIR / "veil.yaml"
    path.write_bytes(data)
    try:
        loaded = load_config(path)
    except VeilError:  # ConfigError naming the key path
        return
    for u in loaded.upstreams:  # what `veil serve` builds from a config that loaded (no I/O yet)
        H1Pool(u.url, size=u.pool_size, connect_timeout=u.connect_timeout, read_timeout=u.read_timeout,
               pool_timeout=u.pool_timeout, total_timeout=u.total_timeout)
    TrustedProxies(loaded.trusted_proxies)


# ---------------------------------------------------------------- consent import
def consent_import(data: bytes) -> None:
    fmt = "csv" if not data or data[0] % 2 == 0 else "jsonl"
    path = _DIR / f"import.{fmt}"
    path.write_bytes(data[1:])
    try:
        validate_file(path, fmt)
    except VeilError:  # ImportInvalid with row errors, or an unreadable file
        return


# ---------------------------------------------------------------- upstream responses
class _Transport(asyncio.Transport):
    """The socket side of an h1client connection: writes go nowhere, close and abort are noted."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


_LOOP: asyncio.AbstractEventLoop | None = None
H1_MAX = 4096


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


async def _h1_once(data: bytes) -> None:
    loop = asyncio.get_running_loop()
    step = (data[0] if data else 0) + 1
    reply = data[1:]
    conn = _Conn(loop)
    transport = _Transport()
    conn.connection_made(transport)
    task = loop.create_task(conn.roundtrip(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None, False, H1_MAX, 0.0,
                                           loop.time() + 60))
    await asyncio.sleep(0)
    for i in range(0, len(reply), step):
        if conn.closed:
            break
        conn.data_received(reply[i:i + step])
    if not conn.closed:
        conn.connection_lost(None)
    try:
        status, headers, body, _ = await task
    except H1Error:
        return
    assert 200 <= status <= 599, status
    assert len(body) <= H1_MAX
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers)


def h1_response(data: bytes) -> None:
    _loop().run_until_complete(_h1_once(data))


# ---------------------------------------------------------------- content decoding, JSON
ENCODINGS = ["gzip", "deflate", "gzip, gzip", "identity", "x-gzip", "br", "deflate, gzip", "", "GZIP , identity"]


def decode(data: bytes) -> None:
    if len(data) < 2:
        return
    encoding = ENCODINGS[data[0] % len(ENCODINGS)]
    limit = 1 << (data[1] % 21)
    try:
        out = decode_content(data[2:], encoding, limit)
    except Refusal:  # Unenforceable: encoding_unsupported, body_invalid, body_too_large
        return
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        assert len(out) <= limit, (len(out), limit)


def json_body(data: bytes) -> None:
    try:
        doc = parse_json("application/json", data)
        check_depth(doc, 64, data)
    except Refusal:  # Unenforceable: body_invalid
        return


# ---------------------------------------------------------------- lazy vs eager
PATHS = ["id", "email", "items", "items[*]", "items[*].id", "items[*].email", "items[*].*", "items[*].who.id",
         "*", "**", "a.b", "a[*]", "[*]", "[*].id", "data.items[*].id", "data", '"x y"', "**.email", "a.**",
         "*.phone", "total"]
TRANSFORMS = [tr.hash(bytes(32)), tr.mask(), tr.mask(1, 1), tr.null(), tr.replace("R"), tr.replace({"R": [1]}),
              tr.prefix(2), tr.bucket(10), tr.date("month"), tr.round_(1), tr.ip()]
EACH = [None, ("items[*]", "id"), ("items[*]", "who.id"), ("data.items[*]", "id"), ("[*]", "id")]
ACTIONS = list(Action)


def _plan_of(spec: bytes) -> tuple[Any, Any]:
    rules = []
    for i in range(spec[0] % 6):
        p, a, t = spec[1 + 3 * i], spec[2 + 3 * i], spec[3 + 3 * i]
        action = ACTIONS[a % len(ACTIONS)]
        transform = TRANSFORMS[t % len(TRANSFORMS)] if action is Action.TRANSFORM else None
        rules.append(FieldRule(parse_path(PATHS[p % len(PATHS)]), action, transform, rule_id=i))
    each_spec = EACH[spec[16] % len(EACH)]
    each = None if each_spec is None else (parse_path(each_spec[0]), parse_path(each_spec[1]))
    return compile_plan(rules), each


def _apply(plan: Any, each: Any, doc: Any, body: bytes) -> tuple[Any, ...]:
    lazy = is_lazy(doc)
    kept: list[str] = []
    filtered = 0
    if each is not None:
        doc, items, ids = list_items(doc, each, lazy)
        if items is not None:
            verdicts = {i: None if len(i) % 2 == 0 else "consent_missing" for i in ids if i is not None}
            kept, filtered = keep_items(items, ids, verdicts, each[1], lazy)
    out, report = plan.apply_lazy(doc) if lazy else plan.apply(doc)
    check_depth(out, 64, body, plan.added_depth)
    return ("ok", orjson.dumps(out), report, kept, filtered)


def _enforce(plan: Any, each: Any, body: bytes, lazy: bool) -> tuple[Any, ...]:
    """The proxy's reading of one body (veil.redact.reading.read_document, as the flow calls it): parse
    (lazily when asked), per-item consent, the plan, the depth check; a lazy reading that cannot stand
    in is redone on an orjson parse."""
    async def work(doc: Any) -> tuple[Any, ...]:
        return _apply(plan, each, doc, body)

    coro = read_document(body, "application/json", lazy, work)
    try:
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        raise AssertionError("reading a document waited on I/O")
    except Refusal as exc:
        return ("block", exc.reason.value)
    except (RecursionError, TypeError, VeilError):
        return ("block", "body_invalid")
    finally:
        coro.close()


def lazy_eager(data: bytes) -> None:
    if len(data) < 17:
        return
    plan, each = _plan_of(data[:17])
    body = data[17:]
    eager = _enforce(plan, each, body, lazy=False)
    if not plan.lazy_ok(each):
        return
    lazily = _enforce(plan, each, body, lazy=True)
    assert lazily == eager, f"lazy and eager enforcement disagree:\n  lazy  {lazily!r}\n  eager {eager!r}"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "policy": policy,
    "tcf": tcf_string,
    "field_path": field_path,
    "config": config,
    "consent_import": consent_import,
    "h1_response": h1_response,
    "decode": decode,
    "json": json_body,
    "lazy_eager": lazy_eager,
}
