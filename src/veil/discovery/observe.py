"""One response body → counts in a Shapes record (veil.discovery.state). Values are read here, in
memory, by the detectors and then forgotten; only path templates, JSON types and counts remain.

Work per response is bounded: at most `array_items` elements of each array are read (the rest of a
long list adds nothing new about its shape), at most `max_values` values go through the detectors and
at most `max_nodes` nodes are visited. Once a path has had 256 values examined, only every 8th of its
values is (hit rates are shares of the values examined). Keys that look like data rather than field names (not an
identifier, a run of 4 or more digits, a detector's hit, or a key of an object with more than
`map_keys` keys: a map keyed by ids) are folded to `*`, so no key that is a value reaches a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from veil.discovery.detectors import Detect
from veil.discovery.state import PathStats, Shapes
from veil.redact import lazy as lz
from veil.schema.reach import template_of

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_DIGIT_RUN = re.compile(r"\d{4}")
_TEMPLATES_MAX = 20_000
# Once a path's first 256 values went through the detectors, every 8th does: its hit rates are known
# well by then, and the detectors are the larger part of the cost.
_DETECT_ALL = 256
_DETECT_EVERY = 8


@dataclass(frozen=True)
class Limits:
    max_paths: int = 512
    array_items: int = 20
    max_values: int = 2000
    max_nodes: int = 20_000
    map_keys: int = 64


class Observer:
    def __init__(self, detect: Detect, limits: Limits) -> None:
        self.detect = detect
        self.limits = limits
        self._templates: dict[tuple[str | int, ...], str] = {}
        self._keys: dict[str, str] = {}
        self._recs: dict[tuple[int, tuple[str | int, ...]], PathStats] = {}  # (Shapes, steps) → its record
        self._serial = 0  # responses observed: a record counts as seen once per response

    def fold(self, key: str) -> str:
        hit = self._keys.get(key)
        if hit is not None:
            return hit
        out = key
        if _FIELD_NAME.fullmatch(key) is None or _DIGIT_RUN.search(key) or self.detect.string(key):
            out = "*"
        elif len(self._keys) < _TEMPLATES_MAX:  # only field names are remembered, never a folded key
            self._keys[key] = key
        return out

    def template(self, steps: tuple[str | int, ...]) -> str:
        hit = self._templates.get(steps)
        if hit is None:
            hit = template_of(steps)
            if len(self._templates) < _TEMPLATES_MAX:
                self._templates[steps] = hit
        return hit

    def observe(self, doc: Any, into: Shapes) -> None:
        lim = self.limits
        detect = self.detect
        self._serial += 1
        serial = self._serial
        recs = self._recs
        ident = id(into)
        values = lim.max_values
        nodes = lim.max_nodes
        items = lim.array_items
        dict_types, list_types = lz.DICT, lz.LIST
        stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
        pop, push = stack.pop, stack.append
        while stack and nodes > 0:
            nodes -= 1
            node, steps = pop()
            rec = recs.get((ident, steps))
            if rec is None:
                rec = self._stats(steps, into)
            if rec is not None and rec.last != serial:  # first time in this response
                rec.last = serial
                rec.seen += 1
            t = type(node)
            kind = _SCALAR.get(t)
            if kind is None:
                if isinstance(node, dict_types):
                    kind = "object"
                    keys = list(node.keys())
                    fold = (lambda _k: "*") if len(keys) > lim.map_keys else self.fold
                    for k in reversed(keys):  # popped in document order
                        push((node[k], (*steps, fold(k))))
                elif isinstance(node, list_types):
                    kind = "array"
                    for i in range(min(len(node), items) - 1, -1, -1):
                        push((node[i], (*steps, 0)))
                else:
                    kind = "number"
            elif values > 0 and (kind == "string" or kind == "integer") and rec is not None and (
                    rec.checked < _DETECT_ALL or rec.types.get(kind, 0) % _DETECT_EVERY == 0):
                values -= 1
                rec.checked += 1
                hit = detect(node)
                if hit is not None:
                    rec.hits[hit] = rec.hits.get(hit, 0) + 1
            if rec is not None:
                rec.types[kind] = rec.types.get(kind, 0) + 1
        into.responses += 1

    def _stats(self, steps: tuple[str | int, ...], into: Shapes) -> PathStats | None:
        """The record of a path (remembered for the next responses); None (an overflow) over the cap."""
        tpl = self.template(steps)
        rec = into.paths.get(tpl)
        if rec is None:
            if len(into.paths) >= self.limits.max_paths:
                into.overflow += 1
                return None
            rec = into.paths[tpl] = PathStats()
        if len(self._recs) < _TEMPLATES_MAX:
            self._recs[(id(into), steps)] = rec
        return rec


_SCALAR = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}

__all__ = ["Limits", "Observer"]
