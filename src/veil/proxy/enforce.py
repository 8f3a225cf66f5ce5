"""Response enforcement helpers: decode the content encoding, parse JSON strictly, find list items
and their subjects. Pure functions; the field plan itself lives in veil.redact.

Anything veil cannot enforce raises EnforceError with a reason code: the proxy then fails closed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from veil.redact import lazy as lazy_json
from veil.redact.lazy import NotLazy
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


def parse_json(content_type: str | None, body: bytes, *, lazy: bool = False) -> Any:
    """The parsed body; with `lazy`, a lazy document (veil.redact.lazy) where simdjson reads the body
    (an orjson parse otherwise: it decides what simdjson refuses)."""
    if not is_json_type(content_type):
        raise EnforceError("content_type_unsupported", "the upstream body is not JSON")
    assert content_type is not None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise EnforceError("body_invalid", "JSON must be UTF-8")
    if lazy:
        try:
            return lazy_json.parse(body)
        except NotLazy:
            pass
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


def plain_list(doc: Any, list_path: FieldPath) -> tuple[Any, list[Any] | None]:
    """`find_list` for a lazy document: the objects down to the array and the array itself are made
    plain (their values stay lazy), so the list can be filtered in place. Returns the (new) root and
    the list, or None as find_list. NotLazy when one of those objects has duplicate keys."""
    if not list_path or not isinstance(list_path[-1], Each) or not all(isinstance(s, Key) for s in list_path[:-1]):
        return doc, None
    root = node = _plain(doc)
    for seg in list_path[:-1]:
        assert isinstance(seg, Key)
        if not isinstance(node, dict) or seg.name not in node:
            return root, None
        child = node[seg.name] = _plain(node[seg.name])
        node = child
    return root, node if isinstance(node, list) else None


def _plain(v: Any) -> Any:
    """A lazy object or array one level plain (the Python dict or list of its lazy children)."""
    t = type(v)
    if t is lazy_json.Object:  # not v.items(): it makes every value plain, the whole subtree
        keys = tuple(v)
        if lazy_json.has_duplicate_keys(keys):
            raise NotLazy("an object on the list path has duplicate keys")
        return {k: v[k] for k in keys}
    if t is lazy_json.Array:
        return list(v)
    return v


def duplicate_keys_on(item: Any, subject_path: FieldPath) -> bool:
    """Whether a lazy object on the way to an item's subject has duplicate keys (the subject read
    from it may not be the one orjson would read)."""
    node: Any = item
    for seg in subject_path:
        if type(node) is not lazy_json.Object:
            return False
        if lazy_json.has_duplicate_keys(tuple(node)):
            return True
        node = node.get(seg.name) if isinstance(seg, Key) else None
    return False


def subject_of(item: Any, subject_path: FieldPath) -> str | None:
    node: Any = item
    for seg in subject_path:
        if not isinstance(seg, Key) or not isinstance(node, lazy_json.DICT):
            return None
        node = node.get(seg.name)
    return _subject_value(node)


def subjects_of(items: list[Any], subject_path: FieldPath) -> list[str | None]:
    """`subject_of` for each item (a subject one key down, the usual case, read without the walk)."""
    if len(subject_path) == 1 and isinstance(subject_path[0], Key):
        name, dicts = subject_path[0].name, lazy_json.DICT
        return [_subject_value(item.get(name)) if isinstance(item, dicts) else None for item in items]
    return [subject_of(item, subject_path) for item in items]


def _subject_value(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def list_items(doc: Any, each: tuple[FieldPath, FieldPath], lazy: bool = False
               ) -> tuple[Any, list[Any] | None, list[str | None]]:
    """A list route's items and their subjects: (the root, the items array or None, subject per item).
    With `lazy`, the path down to the array is made plain first (plain_list)."""
    list_path, subject_path = each
    doc, items = plain_list(doc, list_path) if lazy else (doc, find_list(doc, list_path))
    return doc, items, ([] if items is None else subjects_of(items, subject_path))


def keep_items(items: list[Any], ids: list[str | None], verdicts: Mapping[str, str | None],
               subject_path: FieldPath, lazy: bool = False) -> tuple[list[str], int]:
    """Remove, in place, the items without a subject or whose subject's verdict is a reason; returns
    the kept items' subjects and how many were removed. For a lazy document, NotLazy when a removed
    item may hold a subject other than the one read (kept items are checked by the field plan)."""
    keep: list[Any] = []
    kept_ids: list[str] = []
    for item, sid in zip(items, ids, strict=True):
        if sid is not None and verdicts[sid] is None:
            keep.append(item)
            kept_ids.append(sid)
        elif lazy and duplicate_keys_on(item, subject_path):
            raise NotLazy("an item has duplicate keys")
    filtered = len(items) - len(keep)
    items[:] = keep
    return kept_ids, filtered
