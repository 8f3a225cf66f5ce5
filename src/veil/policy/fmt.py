"""Canonical formatting of a policy file, regenerated from its AST (`veil fmt`).

Canonical layout: 2-space indent, one statement or attribute per line, `, ` between list items,
strings re-escaped JSON-style, a blank line between top-level items (consecutive one-line `category`,
`import` or `schema` items stay together), a blank line before each `for` rule that follows something
in its route. Purpose attributes and rule statements keep their source order; caller attributes are written
description, key, may, vendor, cert; route attributes subject, each, upstream, mode, schema, then the rules.

Comments survive: a comment on a line of its own belongs to the next line of code (or to the closing
`}` of the block it sits in); a comment after code on the same line stays trailing. Formatting is
idempotent, and `same_meaning(parse(fmt(x)), parse(x))` holds (checked before any file is written).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from veil.errors import Diagnostics
from veil.location import Location
from veil.policy import ast
from veil.policy.build import build_module
from veil.policy.syntax import parse_text

INDENT = "  "
_GROUPED = (ast.Category, ast.Import, ast.SchemaRef)  # one-line items that stay together


@dataclass
class _Line:
    depth: int
    text: str
    anchor: int | None  # source line this output line came from (None: blank or synthetic)
    closing: bool = False  # a block's closing brace: leading comments get the inner indent


def parse_module(text: str, file: str) -> ast.Module:
    """Parse one file (imports are not followed); raises Diagnostics on a syntax error."""
    tree, diags, comments = parse_text(text, file)
    module = None
    if tree is not None:
        module, diags = build_module(tree, file)
    if module is None:
        raise Diagnostics(diags, {file: text})
    return dataclasses.replace(module, comments=tuple(comments))


def format_text(text: str, file: str = "<policy>") -> str:
    """The canonical form of `text`; raises Diagnostics when it does not parse."""
    module = parse_module(text, file)
    out = format_module(module)
    again = parse_module(out, file)
    if not same_meaning(module, again):  # a formatter bug must never change a policy
        raise AssertionError(f"formatting {file} would change its meaning")
    return out


def format_module(module: ast.Module) -> str:
    lines: list[_Line] = []
    prev: Any = None
    for item in module.order:
        if prev is not None and not (isinstance(item, _GROUPED) and type(item) is type(prev)):
            lines.append(_Line(0, "", None))
        lines.extend(_item(item))
        prev = item
    return _render(lines, module.comments)


# ---------------------------------------------------------------- comments
def _render(lines: list[_Line], comments: tuple[tuple[int, str], ...]) -> str:
    leading: dict[int, list[tuple[int, str]]] = {}
    trailing: dict[int, list[str]] = {}
    tail: list[str] = []
    by_anchor: dict[int, int] = {}
    for i, ln in enumerate(lines):
        if ln.anchor is not None:
            by_anchor[ln.anchor] = i  # the last output line that came from a source line
    for line_no, text in sorted(comments):
        if line_no in by_anchor:
            trailing.setdefault(by_anchor[line_no], []).append(text)
            continue
        nxt = next((i for i, ln in enumerate(lines) if ln.anchor is not None and ln.anchor > line_no), None)
        if nxt is None:
            tail.append(text)
        else:
            leading.setdefault(nxt, []).append((line_no, text))
    out: list[str] = []
    for i, ln in enumerate(lines):
        if i in leading:
            group = leading[i]
            depth = ln.depth + 1 if ln.closing else ln.depth
            top = depth == 0 and _top_start(lines, i)
            for n, (line_no, text) in enumerate(group):
                out.append(INDENT * depth + text)
                following = group[n + 1][0] if n + 1 < len(group) else ln.anchor
                if top and following is not None and following > line_no + 1:
                    out.append("")  # above a top-level item, blank lines between comment blocks stay
        text = INDENT * ln.depth + ln.text if ln.text else ""
        if i in trailing:
            text += "  " + "  ".join(trailing[i])
        out.append(text)
    out.extend(tail)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _top_start(lines: list[_Line], i: int) -> bool:
    return i == 0 or lines[i - 1].text == ""


# ---------------------------------------------------------------- items
def _item(item: Any) -> list[_Line]:
    if isinstance(item, ast.Header):
        version = f" version {_str(item.version)}" if item.version is not None else ""
        return [_Line(0, f"policy {_str(item.name)}{version}", item.loc.line)]
    if isinstance(item, ast.Import):
        return [_Line(0, f"import {_str(item.target)}", item.loc.line)]
    if isinstance(item, ast.SchemaRef):
        return [_Line(0, f"schema {_str(item.target)}", item.loc.line)]
    if isinstance(item, ast.Purpose):
        return _block(f"purpose {item.name}", item.loc, [_Line(1, _attr(a), a.loc.line) for a in item.attrs])
    if isinstance(item, ast.Notice):
        return _block("notice", item.loc, [_Line(1, _notice_attr(a), a.loc.line) for a in item.attrs])
    if isinstance(item, ast.Category):
        flag = " sensitive" if item.sensitive else ""
        paths = ", ".join(p.text for p in item.paths)
        return [_Line(0, f"category {item.name}{flag} = {paths}", item.loc.line)]
    if isinstance(item, ast.Caller):
        return _block(f"caller {item.name}", item.loc, _caller_body(item))
    if isinstance(item, ast.Route):
        return _block(f"route {item.method} {item.template}", item.loc, _route_body(item))
    raise TypeError(f"unknown policy item {type(item).__name__}")  # pragma: no cover


def _block(head: str, loc: Location, body: list[_Line], depth: int = 0) -> list[_Line]:
    if not body:
        return [_Line(depth, head + " {", loc.line), _Line(depth, "}", loc.end_line, closing=True)]
    return [_Line(depth, head + " {", loc.line), *body, _Line(depth, "}", loc.end_line, closing=True)]


def _notice_attr(a: ast.Attr) -> str:
    return f"{a.name} " + ", ".join(str(x) if isinstance(x, ast.Ident) else _str(x) for x in a.values)


def _attr(a: ast.Attr) -> str:
    v = a.values
    base, _, lang = a.name.partition(".")
    if lang:  # description de "…", profiling_logic de "…"
        return f"{base} {lang} {_str(v[0])}"
    if a.name == "automated_decisions" and isinstance(v[0], ast.Ident):
        return f"automated_decisions {v[0]}"
    if a.name in ("description", "consent", "profiling_logic", "profiling_effects", "automated_decisions"):
        return f"{a.name} {_str(v[0])}"
    if a.name in ("basis", "gpc"):
        return f"{a.name} {v[0]}"
    if a.name in ("retention", "consent_max_age"):
        return f"{a.name} {v[0].amount} {v[0].unit}"
    if a.name == "recipients":
        return "recipients " + ", ".join(_str(x) for x in v)
    if a.name in ("processing", "consent_from"):
        return f"{a.name} " + ", ".join(v)
    if a.name == "notice_version":
        return f"notice_version >= {v[0]}"
    if a.name == "tcf":
        parts = []
        for kind, nums in v:
            parts.append(kind if kind == "legitimate_interest" else f"{kind} " + ", ".join(map(str, nums)))
        return "tcf " + " ".join(parts)
    raise ValueError(f"unknown purpose attribute {a.name}")  # pragma: no cover


def _caller_body(c: ast.Caller) -> list[_Line]:
    layout = c.layout or tuple(
        (name, c.loc) for name, present in (
            ("description", c.description is not None), ("key", bool(c.keys)), ("may", bool(c.may)),
            ("vendor", c.vendor is not None), ("cert", bool(c.certs)),
        ) if present
    )
    keys, certs = list(c.keys), list(c.certs)
    out: list[_Line] = []
    done: set[str] = set()
    for name, loc in layout:
        if name == "key" and keys:
            k = keys.pop(0)
            text = {
                "sha256": f"key sha256:{k.value}", "env": f"key env {k.value}",
                "file": f"key file {_str(k.value)}", "plain": f"key {_str(k.value)}",
            }[k.kind]
        elif name == "cert" and certs:
            text = f"cert {_str(certs.pop(0))}"
        elif name in done or name in ("key", "cert"):
            continue  # the builder keeps one description, vendor and (merged) may list
        elif name == "description" and c.description is not None:
            text = f"description {_str(c.description)}"
        elif name == "may" and c.may:
            text = "may " + ", ".join(n for n, _ in c.may)
        elif name == "vendor" and c.vendor is not None:
            text = f"vendor {c.vendor}"
        else:
            continue
        done.add(name)
        out.append(_Line(1, text, loc.line if loc.line else None))
    out.extend(_Line(1, f"cert {_str(cert)}", None) for cert in certs)
    return out


def _route_body(r: ast.Route) -> list[_Line]:
    singles = {
        "subject": (f"subject {r.subject[0]}.{r.subject[1]}" if r.subject else None),
        "each": (f"each {r.each[0].text} subject {r.each[1].text}" if r.each else None),
        "upstream": (f"upstream {r.upstream}" if r.upstream is not None else None),
        "mode": (f"mode {r.mode}" if r.mode is not None else None),
        "schema": (f"schema {_str(r.schema.target)}" if r.schema is not None else None),
    }
    layout = list(r.layout) or (
        [(n, r.loc) for n, t in singles.items() if t] + [("rule", r.loc)] * len(r.rules)
    )
    last = {name: i for i, (name, _) in enumerate(layout)}  # the builder keeps the last of a kind
    rules = list(r.rules)
    out: list[_Line] = []
    for i, (name, loc) in enumerate(layout):
        if name == "rule":
            if not rules:
                continue
            rule = rules.pop(0)
            if out:
                out.append(_Line(1, "", None))
            head = "for " + ", ".join(n for n, _ in rule.purposes)
            out.extend(_block(head, rule.loc, [_Line(2, _stmt(s), s.loc.line) for s in rule.body], depth=1))
        elif last[name] == i and singles.get(name):
            out.append(_Line(1, str(singles[name]), loc.line if loc.line else None))
    return out


def _stmt(s: ast.Stmt) -> str:
    targets = ", ".join(str(t) for t in s.targets)
    k = s.kind
    if k in ("keep", "drop", "hash", "null"):
        return f"{k} {targets}"
    if k == "mask":
        return f"mask {targets} " + " ".join(f"{name} {n}" for name, n in s.args)
    if k == "replace":
        return f"replace {targets} with {_value(s.args[0])}"
    if k == "generalize":
        return f"generalize {targets} " + " ".join(str(a) for a in s.args)
    if k == "suppress":
        return f"suppress {s.targets[0].text} where {s.targets[1].text} < {s.args[0]}"
    if k == "require_consent":
        return "require consent " + ", ".join(_str(a) for a in s.args)
    if k == "require_caller":
        return "require caller " + ", ".join(s.args)
    if k == "respect_gpc":
        return "respect gpc"
    if k == "block":
        return f"block {_str(s.args[0])}"
    raise ValueError(f"unknown statement kind {k}")  # pragma: no cover


# ---------------------------------------------------------------- values
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _str(value: str) -> str:
    """JSON-style string literal; characters that some readers treat as line breaks are escaped."""
    out = json.dumps(value, ensure_ascii=False)
    for ch, esc in _LINE_BREAKS.items():
        out = out.replace(ch, esc)
    return out


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "-1e999" if v < 0 else "1e999"
        return repr(v)
    return str(v)


# ---------------------------------------------------------------- meaning
def same_meaning(a: ast.Module, b: ast.Module) -> bool:
    """AST equality that ignores every location (also those nested in tuples) and layout."""
    return bool(meaning(a) == meaning(b))


def meaning(node: Any) -> Any:
    """A comparable form of an AST node: locations and non-compared fields removed."""
    if isinstance(node, Location):
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, tuple(
            meaning(getattr(node, f.name)) for f in dataclasses.fields(node) if f.compare
        ))
    if isinstance(node, tuple | list):
        return tuple(meaning(x) for x in node)
    if isinstance(node, float) and math.isnan(node):  # pragma: no cover - the grammar has no NaN
        return "nan"
    return node


__all__ = ["format_module", "format_text", "meaning", "parse_module", "same_meaning"]
