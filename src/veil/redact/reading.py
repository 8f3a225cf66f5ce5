"""Reading an upstream body as a document for a field plan: the one home of content decoding, strict
JSON parsing, the depth limit and lazy reading with its fallback.

    decode_content(body, encoding, max_bytes)           → bytes            (gzip, deflate, identity)
    parse_json(content_type, body, lazy=False)          → document         (orjson, or a lazy document)
    await read_document(body, content_type, lazy, work) → work's result    (lazy first, orjson if it must)
    ReadChoice                                                             (lazy or whole, by measurement)
    check_depth(doc, limit, body, added)                                   (what would leave is not too deep)

A large body that a plan mostly filters is read lazily (veil.redact.lazy: simdjson, only what the plan
keeps becomes Python objects). Where the lazy reading cannot stand in for an orjson parse (duplicate
keys, numbers simdjson refuses, a byte order mark) the work raises NotLazy and `read_document` runs it
again on an orjson parse: NotLazy never leaves this module.

Anything veil cannot enforce raises Unenforceable with its reason: the caller fails closed.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from veil.errors import Unenforceable
from veil.reasons import Reason
from veil.redact import lazy as lazy_json
from veil.redact import native
from veil.redact.lazy import NotLazy

T = TypeVar("T")


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo Content-Encoding (identity, gzip, deflate; stacked in order). Unknown → fail closed."""
    if not encoding:
        return body
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif coding == "deflate":
            wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
        else:
            raise Unenforceable(Reason.ENCODING_UNSUPPORTED, f"content encoding {coding!r} is not supported")
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise Unenforceable(Reason.BODY_INVALID, f"the body is not valid {coding}") from exc
        if len(out) > max_bytes or d.unconsumed_tail:
            raise Unenforceable(Reason.BODY_TOO_LARGE, "the decoded body exceeds the size limit")
        if not d.eof:
            raise Unenforceable(Reason.BODY_INVALID, f"the {coding} body is cut short")
        body = out
    return body


def is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def parse_json(content_type: str | None, body: bytes, *, lazy: bool = False) -> Any:
    """The parsed body; with `lazy`, a lazy document where simdjson reads the body (an orjson parse
    otherwise: it decides what simdjson refuses)."""
    if not is_json_type(content_type):
        raise Unenforceable(Reason.CONTENT_TYPE_UNSUPPORTED, "the upstream body is not JSON")
    assert content_type is not None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Unenforceable(Reason.BODY_INVALID, "JSON must be UTF-8")
    if lazy:
        try:
            return lazy_json.parse(body)
        except NotLazy:
            pass
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unenforceable(Reason.BODY_INVALID, "the upstream body is not valid JSON") from exc


async def read_document(body: bytes, content_type: str | None, lazy: bool,
                        work: Callable[[Any], Awaitable[T]]) -> T:
    """`work(document)` on the body read lazily when `lazy` (and simdjson can), else parsed by orjson;
    when the lazy reading cannot stand in for orjson's (work raised NotLazy), once more on orjson's."""
    doc = parse_json(content_type, body, lazy=lazy)
    if not lazy_json.is_lazy(doc):
        return await work(doc)
    try:
        return await work(doc)
    except NotLazy:
        pass
    # outside the handler: its traceback would keep the lazy document alive during the re-parse
    doc = None
    return await work(parse_json(content_type, body))


class ReadChoice:
    """Whether a plan reads large bodies lazily or parses them whole, chosen from what each way cost on
    the bodies it was given: CPU per body byte of the reading, the plan, the depth check and the
    serialization (what differs between the two ways; awaited consent lookups are not counted).

    Which is cheaper depends on the data, not on the plan alone: lazy reading builds only what the plan
    keeps but pays per key it reads; a whole parse builds everything, and the native loop filters it
    cheaply. So a plan tries both: its first `PROBES` bodies each way, alternating, then the way with the
    lower median, and every `EVERY`-th body the other way once more, so that a change in the upstream's
    data can move the choice. Costs are kept for the last `PROBES` bodies of each way. Both ways give
    the same answer (tests/redact/test_lazy.py, tests/redact/test_native.py); only their cost differs."""

    PROBES = 5
    EVERY = 256

    __slots__ = ("_costs", "_n", "lazy")

    def __init__(self) -> None:
        self._costs: dict[bool, list[float]] = {True: [], False: []}
        self._n = 0
        self.lazy = True  # the way chosen so far

    def pick(self) -> bool:
        """The way to read the next body (True: lazily)."""
        self._n += 1
        short = [way for way in (True, False) if len(self._costs[way]) < self.PROBES]
        if short:
            return short[0] if len(short) == 1 else self._n % 2 == 1
        return (not self.lazy) if self._n % self.EVERY == 0 else self.lazy

    def record(self, lazy: bool, cost_per_byte: float) -> None:
        """What reading one body `lazy` (or whole) cost, per body byte."""
        costs = self._costs[lazy]
        costs.append(cost_per_byte)
        if len(costs) > self.PROBES:
            del costs[0]
        mine, other = self._costs[True], self._costs[False]
        if len(mine) >= self.PROBES and len(other) >= self.PROBES:
            self.lazy = _median(mine) <= _median(other)

    def state(self) -> dict[str, Any]:
        """The choice and the medians it rests on (CPU seconds per MiB of body)."""
        med = {("lazy" if way else "whole"): round(_median(c) * 2**20, 6) if c else None
               for way, c in self._costs.items()}
        return {"lazy": self.lazy, "cpu_s_per_mib": med}


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


_COUNT_BELOW = 64 * 1024  # a larger body almost never has so few brackets: don't scan it twice for nothing


def check_depth(doc: Any, limit: int, body: bytes | None = None, added: int = 0, known: int | None = None
                ) -> None:
    """Refuse documents nested deeper than `limit` (bounded recursion: never a RecursionError).

    The flow checks the enforced document, i.e. what would leave veil: fields the plan removes are
    never walked (the parser itself refuses input nested deeper than 1024 levels, and the field plan
    fails closed on recursion it cannot finish).

    With the raw input `body`, the walk is skipped when it has no more than `limit` opening brackets
    at all, less the depth `added` by transforms (counting is C-speed; most profiles end here). With
    `known`, the depth the document cannot exceed (Report.depth: a lazy plan's output that holds
    nothing but the plan's own structure), it is skipped when that is within the limit.
    """
    if known is not None and known <= limit:
        return
    if body is not None and len(body) <= _COUNT_BELOW and body.count(b"[") + body.count(b"{") + added <= limit:
        return
    ok = native.cplan.depth_ok(doc, limit) if native.ENABLED and limit <= native.DEPTH_LIMIT else _depth_ok(doc, limit)
    if not ok:
        raise Unenforceable(Reason.BODY_INVALID, f"the document is nested deeper than {limit}")


def _depth_ok(node: Any, remaining: int) -> bool:
    t = type(node)
    if t is dict:
        values: Any = node.values()
    elif t is list:
        values = node
    else:
        return True
    if remaining <= 0:
        return False
    for v in values:
        tv = type(v)
        if (tv is dict or tv is list) and not _depth_ok(v, remaining - 1):
            return False
    return True


__all__ = ["ReadChoice", "check_depth", "decode_content", "is_json_type", "parse_json", "read_document"]
