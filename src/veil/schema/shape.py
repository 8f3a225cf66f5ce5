"""JSON Schema → a graph of Shapes: what JSON a schema lets a response contain, location by location.

A Shape is one schema object, read for structure only: its JSON types, named properties, what other
keys may hold (`additionalProperties`, `patternProperties`), what array elements hold (`items`,
`prefixItems`), and its alternatives (`$ref` targets, `allOf`/`oneOf`/`anyOf`, `if`/`then`/`else`),
which are all read as "may also be" (a union: for the question "can this path exist?" that is exact
for oneOf/anyOf and an over-approximation for allOf, which is the safe side for a checker that must not
reject valid paths). Validation keywords (`pattern`, `minimum`, ...) do not change shapes.

Objects: properties are the keys a response has; an object with named properties and no
`additionalProperties` is read as closed (the convention of OpenAPI documents, where leaving it out
rarely means "any key"); `additionalProperties: true` or a schema, an object schema with no
properties at all, and `{}` are open. OpenAPI 3.0 `nullable` and 3.1 `type: [..., "null"]` add null.

`$ref` is resolved with `referencing` (the python-jsonschema project's resolver): JSON pointers with
`~0`/`~1` and percent escapes, relative refs against the right base URI (also inside other files),
`$id` scopes in 3.1 / 2020-12 schemas. Refs to other files are read from disk (relative to the
referring file); refs to http(s) URLs are refused (a policy check never fetches from the network).
Recursive schemas become cycles in the graph; every walk over it guards against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import referencing
import referencing.exceptions
import referencing.jsonschema
from referencing import Registry, Resource

from veil.errors import VeilError

KINDS = ("object", "array", "string", "number", "integer", "boolean", "null")
_ALL = frozenset(KINDS)


class SchemaError(VeilError):
    """A schema that cannot be read; `where` is the JSON pointer (or file) of the problem."""

    code = "schema_invalid"

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(eq=False)
class Shape:
    where: str  # file#/json/pointer of the schema object (for messages)
    types: frozenset[str] = frozenset()  # declared (or inferred) JSON types; empty: not constrained here
    props: dict[str, Shape] = field(default_factory=dict)
    extra: Shape | None = None  # what any other key holds; None: no other keys
    items: Shape | None = None  # what array elements hold
    alts: list[Shape] = field(default_factory=list)
    format: str | None = None
    category: str | None = None  # `x-veil-category`
    personal: bool | None = None  # `x-veil-personal: false` marks a personal-looking field as not personal
    any: bool = False  # `{}` / `true`: any JSON at all

    def __repr__(self) -> str:
        return f"Shape({self.where!r})"


def _any_shape() -> Shape:
    s = Shape("<any>", _ALL, any=True)
    s.extra = s
    s.items = s
    return s


ANY = _any_shape()
NEVER = Shape("<false>")


def flatten(shape: Shape) -> list[Shape]:
    """The shape and every alternative reachable from it (cycle-safe), each once."""
    out: list[Shape] = []
    seen: set[int] = set()
    stack = [shape]
    while stack:
        s = stack.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        out.append(s)
        stack.extend(reversed(s.alts))
    return out


def kinds(shape: Shape) -> frozenset[str]:
    """The JSON types a value at this shape may have (all of them when nothing constrains it)."""
    found: set[str] = set()
    constrained = False
    for s in flatten(shape):
        if s.any:
            return _ALL
        if s.types:
            constrained = True
            found |= s.types
        elif s.props or s.extra is not None:
            constrained = True
            found.add("object")
        elif s.items is not None:
            constrained = True
            found.add("array")
    return frozenset(found) if constrained else _ALL


def key_children(shape: Shape) -> Iterator[tuple[str | None, Shape]]:
    """(key, shape) for every named property, and (None, shape) for what other keys may hold."""
    for s in flatten(shape):
        yield from s.props.items()
        if s.extra is not None:
            yield None, s.extra


def child(shape: Shape, key: str) -> list[Shape]:
    """The shapes a value under `key` may have (empty: this key cannot occur)."""
    out: list[Shape] = []
    for s in flatten(shape):
        hit = s.props.get(key)
        if hit is not None:
            out.append(hit)
        elif s.extra is not None:
            out.append(s.extra)
    return out


def element(shape: Shape) -> list[Shape]:
    """The shapes of array elements (empty: never an array)."""
    out: list[Shape] = []
    for s in flatten(shape):
        if s.items is not None:
            out.append(s.items)
        elif "array" in s.types:
            out.append(ANY)  # `type: array` without items
    return out


# ---------------------------------------------------------------- building
Retrieve = Callable[[str], Any]


@dataclass
class Builder:
    """Builds shapes from schema objects of one document set; memoized per schema object."""

    registry: Registry[Any]
    openapi30: bool = False  # OpenAPI 3.0: `nullable`, no `$id`
    memo: dict[int, Shape] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # schema objects memoized by id() stay alive

    def build(self, schema: Any, resolver: Any, where: str, depth: int = 0) -> Shape:
        if schema is True:
            return ANY
        if schema is False:
            return NEVER
        if not isinstance(schema, dict) or not schema:  # not a schema (an invalid document): anything
            return ANY
        hit = self.memo.get(id(schema))
        if hit is not None:
            return hit
        if depth > 200:
            raise SchemaError("the schema nests more than 200 levels deep", where)
        node = Shape(where)
        self.memo[id(schema)] = node
        self.keep.append(schema)
        if not self.openapi30 and isinstance(schema.get("$id"), str):  # a new base URI for what is inside
            uri = urljoin(resolver._base_uri, schema["$id"]).rstrip("#")  # referencing keeps it private
            self.registry = self.registry.with_resource(uri, referencing.jsonschema.DRAFT202012.create_resource(schema))
            resolver = self.registry.resolver(base_uri=uri)
        d = depth + 1
        ref = schema.get("$ref")
        if ref is not None:
            if not isinstance(ref, str):
                raise SchemaError("$ref must be a string", where)
            node.alts.append(self._ref(ref, resolver, where, d))
        if isinstance(schema.get("$dynamicRef"), str):
            node.alts.append(self._ref(schema["$dynamicRef"], resolver, where, d))
        node.types = self._types(schema, where)
        props = schema.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                node.props[str(name)] = self.build(sub, resolver, f"{where}/properties/{_esc(name)}", d)
        extra = schema.get("additionalProperties")
        pattern = schema.get("patternProperties")
        if isinstance(pattern, dict) and pattern:
            alts = [self.build(sub, resolver, f"{where}/patternProperties/{_esc(p)}", d) for p, sub in pattern.items()]
            if extra not in (None, False):
                alts.append(self.build(extra, resolver, f"{where}/additionalProperties", d))
            node.extra = alts[0] if len(alts) == 1 else Shape(f"{where}/patternProperties", alts=alts)
        elif extra is not None and extra is not False:
            node.extra = self.build(extra, resolver, f"{where}/additionalProperties", d)
        elif extra is None and not node.props and not isinstance(pattern, dict) and self._open_object(schema):
            node.extra = ANY  # `type: object` with nothing said about its keys: a free-form map
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        elems: list[Shape] = []
        if isinstance(prefix, list):
            elems += [self.build(s, resolver, f"{where}/prefixItems/{i}", d) for i, s in enumerate(prefix)]
        if isinstance(items, list):  # draft 4 tuple form
            elems += [self.build(s, resolver, f"{where}/items/{i}", d) for i, s in enumerate(items)]
        elif items is not None and items is not False:
            elems.append(self.build(items, resolver, f"{where}/items", d))
        if elems:
            node.items = elems[0] if len(elems) == 1 else Shape(f"{where}/items", alts=elems)
        for kw in ("allOf", "oneOf", "anyOf"):
            subs = schema.get(kw)
            if subs is None:
                continue
            if not isinstance(subs, list):
                raise SchemaError(f"{kw} must be a list of schemas", where)
            node.alts += [self.build(s, resolver, f"{where}/{kw}/{i}", d) for i, s in enumerate(subs)]
        for kw in ("then", "else"):
            if kw in schema:
                node.alts.append(self.build(schema[kw], resolver, f"{where}/{kw}", d))
        dependent = schema.get("dependentSchemas")
        if isinstance(dependent, dict):
            node.alts += [self.build(s, resolver, f"{where}/dependentSchemas/{_esc(k)}", d)
                          for k, s in dependent.items()]
        unevaluated = schema.get("unevaluatedProperties")
        if node.extra is None and unevaluated is not None and unevaluated is not False and extra is None:
            node.extra = self.build(unevaluated, resolver, f"{where}/unevaluatedProperties", d)
        fmt = schema.get("format")
        node.format = fmt if isinstance(fmt, str) else None
        cat = schema.get("x-veil-category")
        node.category = cat if isinstance(cat, str) and cat else None
        personal = schema.get("x-veil-personal")
        node.personal = personal if isinstance(personal, bool) else None
        if not (node.types or node.props or node.extra or node.items or node.alts):
            node.any, node.extra, node.items = True, ANY, ANY  # nothing said about its shape: any JSON
        return node

    def _ref(self, ref: str, resolver: Any, where: str, depth: int) -> Shape:
        try:
            resolved = resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as exc:
            cause = exc.__cause__ or exc.__context__
            why = f" ({cause})" if isinstance(cause, SchemaError) else ""
            raise SchemaError(f"$ref {ref!r} cannot be resolved{why}", where) from exc
        return self.build(resolved.contents, resolved.resolver, ref, depth)

    def _types(self, schema: dict[str, Any], where: str) -> frozenset[str]:
        t = schema.get("type")
        found: set[str] = set()
        if isinstance(t, str):
            found.add(t)
        elif isinstance(t, list):
            found |= {x for x in t if isinstance(x, str)}
        elif t is not None:
            raise SchemaError("type must be a string or a list of strings", where)
        unknown = found - _ALL
        if unknown:
            raise SchemaError(f"unknown type {sorted(unknown)[0]!r}", where)
        values = [schema["const"]] if "const" in schema else schema.get("enum") if isinstance(
            schema.get("enum"), list) else None
        if not found and values:
            found |= {json_kind(v) for v in values}
        if schema.get("nullable") is True:
            found.add("null")
        if "integer" in found:
            found.add("number")
        return frozenset(found)

    @staticmethod
    def _open_object(schema: dict[str, Any]) -> bool:
        t = schema.get("type")
        is_object = t == "object" or (isinstance(t, list) and "object" in t)
        structural = ("allOf", "oneOf", "anyOf", "$ref", "items", "prefixItems", "then", "else", "enum", "const",
                      "$dynamicRef")
        return is_object and not any(k in schema for k in structural)


def _esc(name: Any) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def json_kind(v: Any) -> str:
    """The JSON Schema type name of a parsed JSON value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def resource(contents: Any, openapi30: bool) -> Resource[Any]:
    spec = referencing.Specification.OPAQUE if openapi30 else referencing.jsonschema.DRAFT202012
    return spec.create_resource(contents)


__all__ = ["ANY", "KINDS", "NEVER", "Builder", "SchemaError", "Shape", "child", "element", "flatten",
           "key_children", "kinds", "resource"]
