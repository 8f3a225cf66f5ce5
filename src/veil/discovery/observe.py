"""One response body → counts in a Shapes record (veil.discovery.state). Values are read here, in
memory, by the detectors and then forgotten; only path templates, JSON types and counts remain.

Work per response is bounded: at most `array_items` elements of each array are read (the rest of a
long list adds nothing new about its shape), at most `max_values` values go through the detectors and
at most `max_nodes` nodes are visited. Keys that look like data rather than field names (not an
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
        local: dict[tuple[str | int, ...], PathStats] = {}
        values = lim.max_values
        nodes = lim.max_nodes
        stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
        while stack and nodes > 0:
            nodes -= 1
            node, steps = stack.pop()
            rec = local.get(steps)
            if rec is None:
                rec = local[steps] = PathStats(seen=1)
            if isinstance(node, lz.DICT):
                kind = "object"
                keys = list(node.keys())
                as_map = len(keys) > lim.map_keys
                for k in reversed(keys):
                    stack.append((node[k], (*steps, "*" if as_map else self.fold(k))))
            elif isinstance(node, lz.LIST):
                kind = "array"
                for i in range(min(len(node), lim.array_items) - 1, -1, -1):
                    stack.append((node[i], (*steps, 0)))
            else:
                kind = _SCALAR.get(type(node), "number")
                if values > 0 and (kind == "string" or kind == "integer"):
                    values -= 1
                    rec.checked += 1
                    hit = detect(node)
                    if hit is not None:
                        rec.hits[hit] = rec.hits.get(hit, 0) + 1
            rec.types[kind] = rec.types.get(kind, 0) + 1
        into.responses += 1
        paths = into.paths
        for steps, rec in local.items():
            tpl = self.template(steps)
            have = paths.get(tpl)
            if have is None:
                if len(paths) >= lim.max_paths:
                    into.overflow += 1
                    continue
                have = paths[tpl] = PathStats()
            have.add(rec)


_SCALAR = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}

__all__ = ["Limits", "Observer"]
