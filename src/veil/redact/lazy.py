"""Lazy JSON documents: parse a large body with simdjson and turn into Python objects only the parts a
field plan reads (see `FieldPlan.apply_lazy`). Fields a plan removes are never built as Python
objects at all: the work (and the personal data held in memory) stays proportional to what is kept.

A lazy node is a `simdjson.Object` or `simdjson.Array` proxy that reads the parsed document in place.
Two differences from an orjson parse are handled by falling back to it (`NotLazy`):

- documents simdjson refuses (integers beyond 64 bits, which orjson reads as floats; anything else
  it rejects, orjson decides) and the one kind it accepts that orjson refuses (a byte order mark);
- duplicate keys: a proxy lookup finds the first occurrence, orjson keeps the last. Every object a
  lazy plan reads by key is a filtered object whose key set is recorded, so `FieldPlan.apply_lazy`
  sees duplicates and the caller redoes the work on an orjson parse.

Proxies are valid while their document is: a caller parses with a fresh `Parser` per document
(`parse`), so no later parse can invalidate them.
"""

from __future__ import annotations

from typing import Any

import simdjson

from veil.errors import VeilError

Object: Any = simdjson.Object
Array: Any = simdjson.Array
DICT: Any = (dict, Object)  # what a lazy plan treats as an object
LIST: Any = (list, Array)


class NotLazy(VeilError):
    """The lazy reading cannot stand in for an orjson parse of this document: parse it with orjson.
    Raised and handled inside veil.redact (`reading.read_document` retries on an orjson parse)."""

    code = "not_lazy"


def parse(body: bytes) -> Any:
    """A lazy document (or a plain scalar). NotLazy when simdjson refuses the body, or would accept
    what orjson refuses (a leading UTF-8 byte order mark)."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise NotLazy("a byte order mark")
    try:
        return simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):  # includes UnicodeDecodeError; its text may quote the body
        raise NotLazy("simdjson refused the body") from None


def materialize(v: Any) -> Any:
    """The plain Python value of a (possibly lazy) node: what orjson.loads would have given.

    Python containers occur in a lazy document only along a list path the proxy made plain (see
    `veil.redact.items.plain_list`); their contents may still be lazy."""
    t = type(v)
    if t is Object:
        return v.as_dict()
    if t is Array:
        return v.as_list()
    if t is dict:
        return {k: materialize(x) for k, x in v.items()}
    if t is list:
        return [materialize(x) for x in v]
    return v


def lazy_key(name: str) -> bool:
    """Whether a proxy looks `name` up exactly: simdjson takes lookup keys as C strings (a NUL ends
    them early) in UTF-8 (a lone surrogate cannot be encoded). Plans naming other keys stay eager."""
    if "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_lazy(doc: Any) -> bool:
    return type(doc) is Object or type(doc) is Array


def has_duplicate_keys(keys: tuple[str, ...]) -> bool:
    return len(set(keys)) != len(keys)
