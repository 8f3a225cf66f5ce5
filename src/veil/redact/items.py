"""List responses: the items of a list route and their subjects, on plain or lazy documents.

    list_items(doc, each, lazy)                     → (root, items or None, subject per item)
    keep_items(items, ids, verdicts, subject_path)  → (kept subjects, how many removed)   (in place)
    subject_at(doc, path)                           → the subject id a path names, or None

A subject is a non-empty string or an integer (read as its decimal text); anything else is no subject.
On a lazy document, NotLazy (handled by veil.redact.reading) where a lazy lookup could read another
value than an orjson parse would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veil.redact import lazy as lazy_json
from veil.redact.lazy import NotLazy
from veil.redact.paths import Each, FieldPath, Key


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


def subject_at(item: Any, subject_path: FieldPath) -> str | None:
    """The subject id at `subject_path` (keys only) in `item`, or None."""
    node: Any = item
    for seg in subject_path:
        if not isinstance(seg, Key) or not isinstance(node, lazy_json.DICT):
            return None
        node = node.get(seg.name)
    return _subject_value(node)


def subjects_of(items: list[Any], subject_path: FieldPath) -> list[str | None]:
    """`subject_at` for each item (a subject one key down, the usual case, read without the walk)."""
    if len(subject_path) == 1 and isinstance(subject_path[0], Key):
        name, dicts = subject_path[0].name, lazy_json.DICT
        return [_subject_value(item.get(name)) if isinstance(item, dicts) else None for item in items]
    return [subject_at(item, subject_path) for item in items]


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


__all__ = ["duplicate_keys_on", "find_list", "keep_items", "list_items", "plain_list", "subject_at", "subjects_of"]
