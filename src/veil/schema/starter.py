"""`veil init --openapi`: a starter policy set written from an OpenAPI document.

    starter(api, spec_ref) → {file name: text}

- `purposes.veil`: the policy header, `schema "<spec>"`, one purpose to rename and describe;
- `categories.veil`: categories suggested from field names and formats of every GET response
  (veil.personal: the same table `veil check` and `veil discover` use), sensitive where the category is;
- `routes.veil`: a route for each GET operation with a subject guessed from its path parameters
  (the parameter after a segment about people: `/customers/{customerId}` → `subject path.customerId`),
  else from a query parameter naming one person (`/users.info?user=` → `subject query.user`),
  `each <list>[*] subject id` for a list of people, and one empty rule: deny by default holds (every
  field is removed by minimization until a `keep` names it);
- `callers.veil`: a commented template (a caller needs a key; none is invented).

A document segment of a parameter and a fixed suffix (`/calls/{Sid}.json`) becomes a whole-segment
parameter (`/calls/{Sid}`: a route cannot split a segment, so its value is `CA1….json`); no subject is
guessed from such a parameter (the value is not the id) and the route says so in a comment.
Operations veil cannot route (fixed text before a parameter or two parameters in one segment,
characters a route template does not allow, two paths of the same shape) are listed in a comment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from veil.personal import PERSON_WORDS, Finding, tokens
from veil.policy.fmt import _str, format_text
from veil.schema.coverage import personal_of
from veil.schema.openapi import Api, Operation
from veil.schema.reach import OTHER_KEY, locations, merged, template_of
from veil.schema.shape import SchemaError, Shape, child, element, flatten

# whose data a path parameter names: people, and the accounts people hold
SUBJECT_WORDS = PERSON_WORDS | {"account", "accounts", "users", "customers", "members", "patients"}
_ROUTE_CHARS = re.compile(r"^[A-Za-z0-9._~!$&'()*+,=:@%-]*$")
_PARAM = re.compile(r"^\{([^{}]+)\}$")
_QUERY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")  # what `subject query.NAME` can name
_SUFFIXED = re.compile(r"^\{([^{}]+)\}[^{}]+$")  # `{Sid}.json`


def _ident(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if re.match(r"[A-Za-z_]", out) else f"p_{out}"


def _slug(text: str) -> str:
    words = [t for t in tokens(text) if t]
    return "_".join(words)[:40].strip("_") or "api"


def route_template(op: Operation, prefix: str, partial: list[str] | None = None
                   ) -> tuple[str | None, list[str], str | None]:
    """(veil route template, parameter names, why not) for an operation path. The names of parameters
    that stand for a segment of a parameter and a fixed suffix (`{Sid}.json`) are added to `partial`."""
    segs = [s for s in (prefix + op.route_path).strip("/").split("/") if s]
    out: list[str] = []
    params: list[str] = []
    for seg in segs:
        m = _PARAM.match(seg) or _SUFFIXED.match(seg)
        if m:
            name = _ident(m.group(1))
            while name in params:
                name += "_"
            params.append(name)
            out.append("{" + name + "}")
            if partial is not None and m.re is _SUFFIXED:
                partial.append(name)
        elif "{" in seg or "}" in seg:
            return None, [], f"a parameter fills only part of the segment {seg!r}"
        elif not _ROUTE_CHARS.match(seg) or seg in (".", ".."):
            return None, [], f"the segment {seg!r} has characters a route template does not allow"
        else:
            out.append(seg)
    return "/" + "/".join(out), params, None


def guess_subject(template: str, not_ids: Iterable[str] = ()) -> str | None:
    """The path parameter that names a person: the one after a segment about people, or one whose name
    is about people (`customerId`, `{user}`); never one of `not_ids` (a value with fixed text in it)."""
    segs = template.strip("/").split("/")
    for i, seg in enumerate(segs):
        m = _PARAM.match(seg)
        if not m or m.group(1) in not_ids:
            continue
        name = m.group(1)
        if set(tokens(name)) & SUBJECT_WORDS:
            return name
        if i > 0 and not _PARAM.match(segs[i - 1]) and set(tokens(segs[i - 1])) & SUBJECT_WORDS:
            return name
    return None


def guess_query_subject(op: Operation) -> str | None:
    """A query parameter that names one person (`?user=U123`, `?customer_id=…`: RPC-style APIs that put
    no id in the path); not a plural (`?users=` filters a list)."""
    for where, name in op.parameters:
        words = tokens(name)
        if where == "query" and _QUERY_NAME.match(name) and words and words[0] in SUBJECT_WORDS \
                and not words[0].endswith("s") and words[1:] in ([], ["id"]):
            return name
    return None


def guess_each(template: str, shapes: list[Shape]) -> str | None:
    """`items[*]` for a response listing people (the last segment is about people): the root array,
    or the one array property of the root whose objects have an `id`."""
    last = template.strip("/").split("/")[-1]
    if _PARAM.match(last) or not set(tokens(last)) & PERSON_WORDS:
        return None
    for sh in shapes:
        for elem in element(sh):
            if child(elem, "id"):
                return "[*]"
        arrays = [(name, e) for s in flatten(sh) for name, p in s.props.items() for e in element(p)]
        with_id = [name for name, e in arrays if child(e, "id")]
        if len(set(with_id)) == 1:
            return template_of((with_id[0], 0))
    return None


def _category_path(steps: tuple[str | int, ...], found: Finding) -> str:
    """What a category line names: the field's own key, or `parent.name` for names that are personal
    only because of where they are (so `product.name` stays out of identity.name)."""
    keys = [i for i, s in enumerate(steps) if isinstance(s, str) and s != OTHER_KEY]
    if not keys:
        return template_of(steps)
    start = keys[-1]
    if "of a person" in found.reason and len(keys) > 1:
        start = keys[-2]
    return template_of(steps[start:])


def suggested_categories(api: Api, ops: Iterable[Operation]) -> dict[str, tuple[bool, list[str]]]:
    cats: dict[str, tuple[bool, list[str]]] = {}
    for op in ops:
        try:
            shapes = api.shapes(op)
        except SchemaError:
            continue
        context = [s for s in op.route_path.strip("/").split("/") if not s.startswith("{")]
        found, _ = locations(shapes, limit=2000)
        named: dict[tuple[str | int, ...], str] = {}  # locations already in a category, by category
        for steps, at in merged(found):
            if not steps or not isinstance(steps[-1], str) or steps[-1] == OTHER_KEY:
                continue  # array elements and unnamed keys: their container is what a category names
            if any(named.get(steps[:i]) for i in range(len(steps))):
                continue  # inside a field already named (an address object's street)
            names = [s for s in steps if isinstance(s, str) and s != OTHER_KEY]
            hit = personal_of(at, names, context)
            if hit is None:
                continue
            named[steps] = hit.category
            _sensitive, paths = cats.setdefault(hit.category, (hit.sensitive, []))
            path = _category_path(steps, hit)
            if not any(path in ps for _, ps in cats.values()):  # a path belongs to one category
                paths.append(path)
    return cats


def starter(api: Api, spec_ref: str) -> dict[str, str]:
    slug = _slug(api.title)
    purpose = f"service.{slug}"
    prefix = api.prefixes[1] if len(api.prefixes) > 1 else ""
    gets = [op for op in api.operations if op.method == "GET"]
    routes: list[str] = []
    skipped: list[str] = []
    shapes_seen: set[tuple[str | None, ...]] = set()
    for op in gets:
        partial: list[str] = []
        tpl, _params, why = route_template(op, prefix, partial)
        if tpl is None:
            skipped.append(f"# GET {prefix}{op.path}: {why}")
            continue
        shape = tuple(None if _PARAM.match(s) else s for s in tpl.strip("/").split("/"))
        if shape in shapes_seen:
            also = " (the document writes a query or fragment into its path)" if op.route_path != op.path else ""
            skipped.append(f"# GET {prefix}{op.path}: another path of the same shape has a route{also}")
            continue
        shapes_seen.add(shape)
        lines = [f"route GET {tpl} {{"]
        if op.summary:
            lines.insert(0, f"# {' '.join(str(op.summary).split())[:100]}")
        if partial:
            lines.insert(len(lines) - 1, f"# the document's path is {prefix}{op.route_path}: "
                         f"{', '.join('{' + p + '}' for p in partial)} here holds the whole segment")
        subject = guess_subject(tpl, partial)
        query = None if subject else guess_query_subject(op)
        if subject:
            lines.append(f"  subject path.{subject}")
        elif query:
            lines.append(f"  subject query.{query}")
        else:
            try:
                each = guess_each(tpl, api.shapes(op))
            except SchemaError:
                each = None
            if each:
                lines.append(f"  each {each} subject id")
        lines.append(f"  for {purpose} {{")
        lines.append("    # keep the fields this purpose needs; everything else is removed (see: veil coverage)")
        lines.append("  }")
        lines.append("}")
        routes.append("\n".join(lines))
    cats = suggested_categories(api, gets)
    files: dict[str, str] = {}
    files["purposes.veil"] = "\n".join([
        f"# Starter policy for {api.title}, written by `veil init` from {Path(spec_ref).name}.",
        "# Rename the purpose, say why callers need the data, and add retention and recipients.",
        f"policy {_str(api.title)} version \"draft\"",
        "",
        f"schema {_str(spec_ref)}",
        "",
        f"purpose {purpose} {{",
        f"  description {_str('TODO: what callers use the ' + api.title + ' for')}",
        "  basis contract  # or consent (with: consent \"<key>\"), legitimate_interests, ...",
        "}",
        "",
    ])
    cat_lines = ["# Categories suggested from field names and formats of the API's responses; review them."]
    for name in sorted(cats):
        sensitive, paths = cats[name]
        if not paths:
            continue
        cat_lines.append(f"category {name}{' sensitive' if sensitive else ''} = {', '.join(paths)}")
    files["categories.veil"] = "\n".join(cat_lines) + "\n"
    head = "# One route per GET operation; every rule starts empty: deny and minimize by default."
    if skipped:
        head += "\n# Not routed:\n" + "\n".join(skipped)
    files["routes.veil"] = "\n\n".join([head, *routes]) + "\n"
    files["callers.veil"] = "\n".join([
        "# Callers: each needs a key (stored as a hash) and the purposes it may claim. For example:",
        "#",
        "# caller storefront {",
        '#   description "The web storefront"',
        "#   key env VEIL_KEY_STOREFRONT",
        f"#   may {purpose}",
        "# }",
        "",
    ])
    return {name: format_text(text, name) for name, text in files.items()}


__all__ = ["guess_each", "guess_query_subject", "guess_subject", "route_template", "starter", "suggested_categories"]
