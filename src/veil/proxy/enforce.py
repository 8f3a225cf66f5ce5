"""Response enforcement helpers: decode the content encoding, parse JSON strictly, find list items
and their subjects. Pure functions; the field plan itself lives in veil.redact.

Anything veil cannot enforce raises EnforceError with a reason code: the proxy then fails closed.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from veil.redact.paths import Each, FieldPath, Key


class EnforceError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
            raise EnforceError("encoding_unsupported", f"content encoding {coding!r} is not supported")
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise EnforceError("body_invalid", f"the body is not valid {coding}") from exc
        if len(out) > max_bytes or d.unconsumed_tail:
            raise EnforceError("body_too_large", "the decoded body exceeds the size limit")
        if not d.eof:
            raise EnforceError("body_invalid", f"the {coding} body is cut short")
        body = out
    return body


def is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def parse_json(content_type: str | None, body: bytes) -> Any:
    if not is_json_type(content_type):
        raise EnforceError("content_type_unsupported", "the upstream body is not JSON")
    assert content_type is not None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise EnforceError("body_invalid", "JSON must be UTF-8")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnforceError("body_invalid", "the upstream body is not valid JSON") from exc


_COUNT_BELOW = 64 * 1024  # a larger body almost never has so few brackets: don't scan it twice for nothing


def check_depth(doc: Any, limit: int, body: bytes | None = None, added: int = 0) -> None:
    """Refuse documents nested deeper than `limit` (bounded recursion: never a RecursionError).

    The proxy checks the enforced document, i.e. what would leave veil: fields the plan removes are
    never walked (the parser itself refuses input nested deeper than 1024 levels, and the field plan
    fails closed on recursion it cannot finish).

    With the raw input `body`, the walk is skipped when it has no more than `limit` opening brackets
    at all, less the depth `added` by transforms (counting is C-speed; most profiles end here).
    """
    if body is not None and len(body) <= _COUNT_BELOW and body.count(b"[") + body.count(b"{") + added <= limit:
        return
    if not _depth_ok(doc, limit):
        raise EnforceError("body_invalid", f"the document is nested deeper than {limit}")


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


def find_list(doc: Any, list_path: FieldPath) -> list[Any] | None:
    """The array that `items[*]` names (keys then a final [*]); None when absent or not an array."""
    node = doc
    for seg in list_path[:-1]:
        if not isinstance(seg, Key) or not isinstance(node, dict):
            return None
        node = node.get(seg.name)
    if not list_path or not isinstance(list_path[-1], Each) or not isinstance(node, list):
        return None
    return node


def subject_of(item: Any, subject_path: FieldPath) -> str | None:
    node = item
    for seg in subject_path:
        if not isinstance(seg, Key) or not isinstance(node, dict):
            return None
        node = node.get(seg.name)
    if isinstance(node, str) and node:
        return node
    if isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    return None
