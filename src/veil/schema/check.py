"""A policy checked against the API's schema: the stage `veil check`, `veil test`, `veil coverage` and
`veil notice` run after the policy itself has been checked and compiled.

    load_checked(paths, extra_schemas=…) → (CompiledPolicy, Schemas)    raises Diagnostics on errors
    check_schemas(policy, schemas)       → [Diagnostic]

Schemas come from the policy (`schema "openapi.yaml"` at the top of a file, `schema "x.json"` in a
route) and from `--schema FILE` (OpenAPI documents). Diagnostics:

- error `schema_invalid` (at the `schema` line): a document that cannot be read or resolved;
- error `path_not_in_schema`: a field path (keep, drop, transform, `each`, `suppress`) that no response
  schema of the route's operation can produce, with "did you mean";
- warning `path_not_named`: a field path the schema allows only because an object that names its
  properties also lets other keys through (`additionalProperties: true`), when a named path is close
  to it (`sttus` beside `status`): a typo the open object would otherwise hide;
- warning `route_not_in_schema`: a route no operation of the documents matches;
- warning `response_schema_missing`: the operation declares no JSON body for its 2xx responses;
- warning `schema_unusable`: the operation's response schema cannot be resolved (the route goes unchecked);
- warning `personal_in_clear`: a field the schema marks as personal (`format: email`, a name such as
  `ssn`, `x-veil-category`) that a purpose keeps in clear while no category of the policy names it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from veil.errors import Diagnostic, Diagnostics, PathError, Severity
from veil.location import Location
from veil.policy import ast
from veil.policy.compile import CompiledPolicy, CompiledRoute, CompiledRule
from veil.policy.load import load_policy
from veil.redact.engine import Action, FieldRule
from veil.redact.paths import FieldPath, parse_path
from veil.schema.coverage import RuleCoverage, cover_rule
from veil.schema.openapi import Api, load_api, load_json_schema
from veil.schema.reach import producible, suggest
from veil.schema.shape import SchemaError, Shape


@dataclass
class RouteSchema:
    shapes: list[Shape]
    source: str  # "api.yaml: GET /customers/{customerId}" or "customer.json"


@dataclass
class Schemas:
    apis: list[Api] = field(default_factory=list)
    routes: dict[tuple[str, str], RouteSchema | None] = field(default_factory=dict)  # None: no operation
    missing_body: set[tuple[str, str]] = field(default_factory=set)
    files: set[Path] = field(default_factory=set)  # every schema document named (resolved paths)
    covered: dict[tuple[str, str, str], RuleCoverage] = field(default_factory=dict)  # computed once

    def cover(self, policy: CompiledPolicy, route: CompiledRoute, rule: CompiledRule, rs: RouteSchema
              ) -> RuleCoverage:
        """The coverage of one rule (cached: `veil check` and `veil coverage` share it)."""
        key = (route.method, route.template, rule.purpose.name)
        hit = self.covered.get(key)
        if hit is None:
            hit = self.covered[key] = cover_rule(policy, route.method, route.template, rule, rs.shapes, rs.source,
                                                 _context(route.template))
        return hit

    def __bool__(self) -> bool:
        return bool(self.apis) or any(v is not None for v in self.routes.values())

    def of(self, method: str, template: str) -> RouteSchema | None:
        return self.routes.get((method, template))


def _context(template: str) -> list[str]:
    return [s for s in template.strip("/").split("/") if s and not s.startswith("{")]


def load_schemas(modules: Sequence[ast.Module], extra: Sequence[str | Path] = ()) -> tuple[Schemas, list[Diagnostic]]:
    """Read every schema the policy names (and `extra` OpenAPI documents); match routes to operations."""
    out = Schemas()
    diags: list[Diagnostic] = []
    seen: set[Path] = set()

    def api(path: Path, loc: Location | None) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        out.files.add(key)
        try:
            a = load_api(path)
        except SchemaError as exc:
            diags.append(Diagnostic("schema_invalid", f"schema {path}: {exc.message}", loc,
                                    "an OpenAPI 3.0 or 3.1 document (JSON or YAML)"))
            return
        out.apis.append(a)
        for problem in a.problems[:20]:
            diags.append(Diagnostic("schema_unusable", f"schema {path}: {problem}; that part is skipped", loc,
                                    severity=Severity.WARNING))

    for p in extra:
        api(Path(p), None)
    for m in modules:
        for ref in m.schemas:
            api(Path(m.file).parent / ref.target, ref.loc)
    for m in modules:
        for r in m.routes:
            key = (r.method, r.template)
            if r.schema is not None:
                out.files.add((Path(m.file).parent / r.schema.target.partition("#")[0]).resolve())
                try:
                    shape = load_json_schema(r.schema.target, Path(m.file).parent)
                except SchemaError as exc:
                    diags.append(Diagnostic("schema_invalid", f"schema {r.schema.target}: {exc.message}",
                                            r.schema.loc, "a JSON Schema file, or file#/json/pointer"))
                    continue
                out.routes[key] = RouteSchema([shape], r.schema.target)
                continue
            found = None
            for a in out.apis:
                ops = a.operations_for(r.method, r.template)
                if not ops:
                    continue
                try:
                    shapes = [s for op in ops for s in a.shapes(op)]
                except SchemaError as exc:  # the document's fault, not the policy's: this route goes unchecked
                    diags.append(Diagnostic("schema_unusable", f"{a.file}: {exc.message}; the fields of "
                                            f"{r.method} {r.template} are not checked", r.loc,
                                            severity=Severity.WARNING))
                    found = None
                    break
                label = ", ".join(op.label() for op in ops)
                if not shapes:
                    out.missing_body.add(key)
                found = RouteSchema(shapes, f"{Path(a.file).name}: {label}")
                break
            if out.apis and not any(d.code == "schema_unusable" and d.location == r.loc for d in diags):
                out.routes[key] = found
    return out, diags


def check_schemas(policy: CompiledPolicy, schemas: Schemas) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    compiled = {(r.method, r.template): r for r in policy.routes}
    for m in policy.modules:
        for r in m.routes:
            key = (r.method, r.template)
            if key not in schemas.routes:
                continue
            rs = schemas.routes[key]
            if rs is None:
                diags.append(Diagnostic(
                    "route_not_in_schema", f"no operation of {_names(schemas.apis)} matches {r.method} {r.template}",
                    r.loc, _route_hint(schemas.apis, r.method, r.template), Severity.WARNING))
                continue
            if key in schemas.missing_body:
                diags.append(Diagnostic(
                    "response_schema_missing", f"{rs.source} declares no JSON body for its 2xx responses: "
                    "its field paths are not checked", r.loc, severity=Severity.WARNING))
                continue
            diags.extend(_check_paths(r, rs))
            route = compiled.get(key)
            if route is not None:
                diags.extend(_check_personal(policy, route, rs, schemas))
    return diags


def _names(apis: Iterable[Api]) -> str:
    return ", ".join(Path(a.file).name for a in apis) or "the schema"


def _route_hint(apis: Sequence[Api], method: str, template: str) -> str:
    want = "GET" if method == "HEAD" else method
    paths = sorted({prefix + op.route_path for a in apis for op in a.operations if op.method == want
                    for prefix in a.prefixes})
    close = difflib.get_close_matches(template, paths, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? (the document's path for this operation)"
    return "routes match operations by method and path; parameters may differ in name"


def _targets(r: ast.Route) -> Iterable[tuple[str, Location, str]]:
    """(path text, location, what) for every field path of the route."""
    if r.each:
        yield r.each[0].text, r.each[0].loc, "each"
    for rule in r.rules:
        for st in rule.body:
            if st.kind == "suppress":
                yield st.targets[0].text, st.targets[0].loc, "suppress"
                continue
            for t in st.targets:
                if not t.is_category:
                    yield t.text, t.loc, st.kind


def _check_paths(r: ast.Route, rs: RouteSchema) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    cache: dict[str, bool] = {}
    for text, loc, _what in _targets(r):
        try:
            path: FieldPath = parse_path(text)
        except PathError:  # reported by the policy checks already
            continue
        ok = cache.get(text)
        if ok is None:
            ok = cache[text] = producible(rs.shapes, path)
        if not ok:
            close = suggest(rs.shapes, path)
            out.append(Diagnostic(
                "path_not_in_schema", f"no response of {r.method} {r.template} has {text} ({rs.source})",
                loc, f"did you mean {close!r}?" if close else "the paths a response can have: veil coverage"))
        elif not producible(rs.shapes, path, named_only=True):
            close = suggest(rs.shapes, path)
            if close and close != text:
                out.append(Diagnostic(
                    "path_not_named", f"no response schema of {r.method} {r.template} names {text}; it passes "
                    f"only because an object there allows other keys ({rs.source})", loc,
                    f"did you mean {close!r}?", Severity.WARNING))
    if r.each is not None:  # the subject path is read inside each item
        try:
            lst, subj = parse_path(r.each[0].text), parse_path(r.each[1].text)
        except PathError:
            return out
        if not producible(rs.shapes, lst + subj) and producible(rs.shapes, lst):
            out.append(Diagnostic(
                "path_not_in_schema", f"the items of {r.each[0].text} have no {r.each[1].text} ({rs.source})",
                r.each[1].loc, None))
    return out


def _check_personal(policy: CompiledPolicy, route: CompiledRoute, rs: RouteSchema, schemas: Schemas
                    ) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for rule in route.rules.values():
        if rule.block is not None or not any(r.action is Action.KEEP for r in rule.plan.rules):
            continue  # nothing leaves in clear
        cov = schemas.cover(policy, route, rule, rs)
        for row in cov.findings:
            assert row.personal is not None
            out.append(Diagnostic(
                "personal_in_clear",
                f"{row.template} looks personal ({row.personal.reason}) and purpose {rule.purpose.name!r} keeps it "
                "in clear, but no category names it",
                _target_loc(policy, rule.plan.rules, row.rule_id, row.location),
                f"name it: category {row.personal.category} = {row.template}  (or: "
                f"{row.personal.suggest.format(path=row.template)})",
                Severity.WARNING))
    return out


def _target_loc(policy: CompiledPolicy, rules: Sequence[FieldRule], rule_id: int, at: Location | None
                ) -> Location | None:
    """The target of the statement at `at` that compiled into field rule `rule_id` (the caret goes
    under `email` in `keep id, email`), else the statement."""
    path = next((r.path for r in rules if r.rule_id == rule_id), None)
    if at is None or path is None:
        return at
    for m in policy.modules:
        if m.file != at.file:
            continue
        for r in m.routes:
            for rule in r.rules:
                for st in rule.body:
                    if st.loc != at:
                        continue
                    for t in st.targets:
                        try:
                            if not t.is_category and parse_path(t.text) == path:
                                return t.loc
                        except PathError:
                            continue
    return at


def coverage(policy: CompiledPolicy, schemas: Schemas) -> list[RuleCoverage]:
    """Every route with a schema, every purpose with a rule: the fate of each schema field."""
    out: list[RuleCoverage] = []
    for route in policy.routes:
        rs = schemas.of(route.method, route.template)
        if rs is None or not rs.shapes:
            continue
        for rule in route.rules.values():
            out.append(schemas.cover(policy, route, rule, rs))
    return out


def load_checked(paths: Sequence[str | Path], *, extra_schemas: Sequence[str | Path] = (),
                 strict_warnings: bool = False) -> tuple[CompiledPolicy, Schemas]:
    """`load_policy`, then the schema stage; raises Diagnostics (policy and schema findings together)
    when anything is an error (or, with `strict_warnings`, a warning)."""
    policy = load_policy(paths, strict_warnings=strict_warnings)
    schemas, diags = load_schemas(policy.modules, extra_schemas)
    if not any(d.severity is Severity.ERROR for d in diags):
        diags += check_schemas(policy, schemas)
    sources = dict(policy.sources)
    if any(d.severity is Severity.ERROR or strict_warnings for d in diags):
        raise Diagnostics([*policy.warnings, *diags], sources)
    policy.warnings = [*policy.warnings, *diags]
    return policy, schemas


__all__ = ["RouteSchema", "Schemas", "check_schemas", "coverage", "load_checked", "load_schemas"]
