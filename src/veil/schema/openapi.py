"""Schema documents: OpenAPI 3.0 / 3.1 (and Swagger 2.0) descriptions of an API, or a plain JSON
Schema for one route's response body; JSON or YAML, with `$ref`s into other local files.

    load_api(path)                  → Api          an OpenAPI document: operations and their responses
    load_json_schema(ref)           → Shape        `file.json` or `file.yaml#/pointer`
    Api.operations_for(method, template) → [Operation]   the operations a policy route serves

A policy route matches an operation when both paths have the same number of segments and every
segment pair is equal or has a parameter on either side (`/customers/{id}` serves
`/customers/{customerId}`, and `/customers/me` if the document has it). A route parameter fits a
document segment of a parameter and a fixed suffix (`{Sid}.json`) as well as a whole-segment
parameter: a policy route cannot split a segment, its parameter holds the whole of it. The
document's server URL paths (`servers: [{url: https://api.example.com/v1}]`) may prefix its paths.
An operation's response shapes are those of its 2xx responses (and `2XX`) with a JSON media type
(`application/json`, `*/*+json`, or a `*/*` wildcard): the bodies veil enforces; other statuses never
reach a caller.

Some documents give one path several operations of the same method by writing a query or a fragment
into the path key (`/files/{id}#shared_link`, `/responses/{id}?beta=true`), which OpenAPI does not
allow but tools accept. Such an operation serves the path before the `?` or `#` (`Operation.route_path`):
a route matches it, and the route's response shapes are those of every operation it serves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from veil.schema.shape import Builder, SchemaError, Shape, resource

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"^\{[^{}/]+\}$")
_SUFFIXED = re.compile(r"^\{[^{}/]+\}[^{}/]+$")  # `{Sid}.json`: a parameter, then fixed text

try:  # libyaml is much faster on large documents; the pure-Python loader reads the same YAML
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _YamlLoader = yaml.SafeLoader


def read_document(path: Path) -> Any:
    """A JSON or YAML file, parsed; SchemaError naming the file when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"cannot read: {exc.strerror}", str(path)) from exc
    except UnicodeDecodeError as exc:
        raise SchemaError("not UTF-8 text", str(path)) from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            if path.suffix.lower() == ".json":
                raise SchemaError(f"not valid JSON: {exc}", str(path)) from exc
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SchemaError(f"not valid JSON or YAML{where}", str(path)) from exc


class _Files:
    """`retrieve` for the registry: local files only, each read once (stable objects for memoizing)."""

    def __init__(self, openapi30: bool) -> None:
        self.openapi30 = openapi30
        self.cache: dict[str, Resource[Any]] = {}

    def __call__(self, uri: str) -> Resource[Any]:
        parts = urlsplit(uri)
        if parts.scheme not in ("", "file"):
            raise NoSuchResource(ref=uri) from SchemaError(  # type: ignore[call-arg]
                f"{uri}: only local files are read; download it and refer to the file")
        hit = self.cache.get(uri)
        if hit is None:
            hit = self.cache[uri] = resource(read_document(Path(unquote(parts.path))), self.openapi30)
        return hit


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


@dataclass
class Operation:
    method: str  # upper case
    path: str  # as in the document, e.g. /customers/{customerId}
    operation_id: str | None
    summary: str | None
    parameters: tuple[tuple[str, str], ...]  # (in, name)
    responses: list[tuple[str, str, Any, Any]]  # (status, media type, schema, its resolver): JSON 2xx bodies
    pointer: str

    @property
    def route_path(self) -> str:
        """The path a request for this operation has: `path` less a `?query` or `#fragment` written into it."""
        return request_path(self.path)

    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Api:
    file: str
    version: str  # "3.0.3", "3.1.0", "2.0"
    title: str
    doc: dict[str, Any]
    operations: list[Operation]
    prefixes: tuple[str, ...]  # server URL paths, "" first
    builder: Builder = field(repr=False, default=None)  # type: ignore[assignment]
    base_uri: str = ""
    problems: list[str] = field(default_factory=list)  # parts that could not be read (skipped)
    files: Any = field(default=None, repr=False)  # the files read for it (a _Files)

    def read_files(self) -> set[Path]:
        """Every local file read so far for this document (itself, and what its $refs reached)."""
        cache = self.files.cache if self.files is not None else {}
        return {Path(unquote(urlsplit(uri).path)).resolve() for uri in cache}
    _shapes: dict[int, list[Shape]] = field(default_factory=dict, repr=False)

    @property
    def openapi30(self) -> bool:
        return not self.version.startswith("3.1")

    def operations_for(self, method: str, template: str) -> list[Operation]:
        """The operations a policy route `method template` serves (HEAD is served by GET)."""
        want = "GET" if method == "HEAD" else method
        segs = _segments(template)
        exact: list[Operation] = []
        loose: list[Operation] = []
        for op in self.operations:
            if op.method != want:
                continue
            for prefix in self.prefixes:
                other = _segments(prefix + op.route_path)
                if len(other) != len(segs):
                    continue
                fit = _fit(segs, other)
                if fit == 2:
                    exact.append(op)
                    break
                if fit == 1:
                    loose.append(op)
                    break
        return exact + [op for op in loose if op not in exact]

    def shapes(self, op: Operation) -> list[Shape]:
        """The response body shapes of an operation (built once)."""
        hit = self._shapes.get(id(op))
        if hit is None:
            hit = [self.builder.build(schema, resolver, f"{self.file}#{op.pointer}/responses/{status}")
                   for status, _media, schema, resolver in op.responses]
            self._shapes[id(op)] = hit
        return hit


def request_path(path: str) -> str:
    """A document's path key without the `?query` or `#fragment` some documents write into it."""
    cut = min((i for i in (path.find("?"), path.find("#")) if i >= 0), default=len(path))
    return path[:cut]


def _segments(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s] if path.strip("/") else []


def _fit(ours: list[str], theirs: list[str]) -> int:
    """2: same structure (parameters where parameters are), 1: overlapping, 0: disjoint."""
    score = 2
    for a, b in zip(ours, theirs, strict=True):
        pa, pb = bool(_PARAM.match(a)), bool(_PARAM.match(b))
        if pa and (pb or _SUFFIXED.match(b)):
            continue
        if pa or pb:
            score = 1
        elif a != b:
            return 0
    return score


def _json_media(media: str) -> bool:
    m = media.split(";", 1)[0].strip().lower()
    return m in ("application/json", "*/*", "application/*") or (m.startswith("application/") and m.endswith("+json"))


def _success(status: Any) -> bool:
    s = str(status).upper()
    return s == "2XX" or (len(s) == 3 and s.startswith("2") and s.isdigit())


def load_api(path: str | Path) -> Api:
    """An OpenAPI 3.x (or Swagger 2.0) document with its operations indexed. SchemaError when the
    file is not one, naming the key path of the problem. Path items, operations and responses may be
    `$ref`s (also into other files); schemas inside are resolved against the file they are in."""
    p = Path(path)
    doc = read_document(p)
    name = str(p)
    if not isinstance(doc, dict):
        raise SchemaError("an OpenAPI document is a mapping at the top", name)
    if "openapi" in doc:
        version = str(doc["openapi"])
        if not version.startswith("3."):
            raise SchemaError(f"openapi: version {version!r} is not supported (3.0 or 3.1)", name)
    elif str(doc.get("swagger", "")) == "2.0":
        version = "2.0"
    else:
        raise SchemaError("not an OpenAPI document (no `openapi: 3.x` key); a route's JSON Schema is named "
                          "by `schema` inside the route", name)
    openapi30 = not version.startswith("3.1")
    paths = doc.get("paths") or {}
    if not isinstance(paths, dict):
        raise SchemaError("paths: must be a mapping", name)
    base_uri = _uri(p)
    files = _Files(openapi30)
    files.cache[base_uri] = resource(doc, openapi30)
    registry: Registry[Any] = Registry(retrieve=files).with_resource(base_uri, files.cache[base_uri])  # type: ignore[call-arg]
    root = registry.resolver(base_uri=base_uri)
    ops: list[Operation] = []
    problems: list[str] = []  # parts of the document that cannot be read: skipped, reported as warnings
    for tpl, item in paths.items():
        ptr = f"/paths/{_esc(str(tpl))}"
        try:
            item, item_res = _follow(item, root, ptr)
        except SchemaError as exc:
            problems.append(exc.message)
            continue
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            if method not in item:
                continue
            try:
                op, op_res = _follow(item[method], item_res, f"{ptr}/{method}")
                if not isinstance(op, dict):
                    continue
                responses = _responses(op, op_res, f"{ptr}/{method}", version, doc)
            except SchemaError as exc:
                problems.append(exc.message)
                continue
            params = []
            for prm in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
                if isinstance(prm, dict) and isinstance(prm.get("name"), str):
                    params.append((str(prm.get("in", "")), prm["name"]))
            ops.append(Operation(method.upper(), str(tpl), op.get("operationId"), op.get("summary"),
                                 tuple(params), responses, ptr))
    title = str((doc.get("info") or {}).get("title") or p.stem)
    api = Api(name, version, title, doc, ops, _prefixes(doc, version), Builder(registry, openapi30), base_uri)
    api.problems = problems
    api.files = files
    return api


def _follow(obj: Any, resolver: Any, where: str) -> tuple[Any, Any]:
    """An object that may be a `$ref` (chains followed), with the resolver for what is inside it."""
    for _ in range(32):
        if not (isinstance(obj, dict) and isinstance(obj.get("$ref"), str)):
            return obj, resolver
        try:
            resolved = resolver.lookup(obj["$ref"])
        except Unresolvable as exc:
            raise SchemaError(f"$ref {obj['$ref']!r} cannot be resolved", where) from exc
        obj, resolver = resolved.contents, resolved.resolver
    raise SchemaError("a chain of more than 32 $refs", where)


def _responses(op: dict[str, Any], resolver: Any, ptr: str, version: str, doc: dict[str, Any]
               ) -> list[tuple[str, str, Any, Any]]:
    out: list[tuple[str, str, Any, Any]] = []
    responses = op.get("responses") or {}
    if not isinstance(responses, dict):
        return out
    for status, resp in responses.items():
        if not _success(status):
            continue
        resp, res = _follow(resp, resolver, f"{ptr}/responses/{status}")
        if not isinstance(resp, dict):
            continue
        if version == "2.0":
            if "schema" in resp:
                produces = op.get("produces") or doc.get("produces") or ["application/json"]
                if any(_json_media(m) for m in produces if isinstance(m, str)):
                    out.append((str(status), "application/json", resp["schema"], res))
            continue
        content = resp.get("content") or {}
        if not isinstance(content, dict):
            continue
        for media, body in content.items():
            body, body_res = _follow(body, res, f"{ptr}/responses/{status}/content")
            if _json_media(str(media)) and isinstance(body, dict) and "schema" in body:
                out.append((str(status), str(media), body["schema"], body_res))
    return out


def _pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for part in pointer.strip("/").split("/"):
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _prefixes(doc: dict[str, Any], version: str) -> tuple[str, ...]:
    found = [""]
    if version == "2.0":
        base = doc.get("basePath")
        if isinstance(base, str) and base.strip("/"):
            found.append("/" + base.strip("/"))
        return tuple(found)
    for server in doc.get("servers") or []:
        url = server.get("url") if isinstance(server, dict) else None
        if not isinstance(url, str):
            continue
        path = urlsplit(urljoin("http://h/", url)).path.rstrip("/")
        if path and path not in found and "{" not in path:
            found.append(path)
    return tuple(found)


def _esc(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def load_json_schema(ref: str, relative_to: Path) -> Shape:
    """A plain JSON Schema for one route: `file.json`, `file.yaml`, or `file.yaml#/json/pointer`
    (relative to `relative_to`, the directory of the policy file that names it)."""
    file, _, fragment = ref.partition("#")
    p = Path(file) if Path(file).is_absolute() else relative_to / file
    doc = read_document(p)
    openapi30 = isinstance(doc, dict) and str(doc.get("openapi", "")).startswith("3.0")
    files = _Files(openapi30)
    uri = _uri(p)
    files.cache[uri] = resource(doc, openapi30)
    registry: Registry[Any] = Registry(retrieve=files).with_resource(uri, files.cache[uri])  # type: ignore[call-arg]
    resolver = registry.resolver(base_uri=uri)
    builder = Builder(registry, openapi30)
    if fragment:
        target = _pointer(doc, fragment)
        if target is None:
            raise SchemaError(f"#{fragment} names nothing in the file", str(p))
        return builder.build(target, resolver, f"{p}#{fragment}")
    return builder.build(doc, resolver, str(p))


__all__ = ["Api", "Operation", "load_api", "load_json_schema", "read_document", "request_path"]
