"""Static checks in named stages (verb + object), each collecting Diagnostics; none raises.

Order matters where noted: paths are parsed before the minimization check reads them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from veil.errors import Diagnostic, PathError, Severity
from veil.location import Location
from veil.policy import ast
from veil.policy import notice as spec
from veil.policy.ast import StmtKind
from veil.redact.paths import AnyKey, Deep, FieldPath, Key, ends_with, parse_path

BASES = ("consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests")
PROCESSING = ("sale", "sharing", "targeted_advertising", "profiling", "analytics", "service")
GPC_COVERED = ("sale", "sharing", "targeted_advertising")
UNITS = ("day", "days", "week", "weeks", "month", "months", "year", "years")
SOURCES = ("store", "tcf")
MODES = ("enforce", "report-only")
BODY_SUBJECTS = ("body", "request_body")  # subjects read from a JSON body (a field path of keys)
GENERALIZE = {"prefix": "int", "bucket": "int", "round": "int", "month": None, "year": None, "ip": None}
MASK_ARGS = ("first", "last")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRETISH = re.compile(r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY")


@dataclass
class Context:
    modules: list[ast.Module]
    diags: list[Diagnostic] = field(default_factory=list)
    purposes: dict[str, ast.Purpose] = field(default_factory=dict)
    categories: dict[str, ast.Category] = field(default_factory=dict)
    callers: dict[str, ast.Caller] = field(default_factory=dict)
    paths: dict[int, FieldPath] = field(default_factory=dict)  # id(PathRef/Target) → parsed

    def modules_notice_loc(self) -> Location | None:
        """The first `notice` block of the set (where its warnings point)."""
        return next((n.loc for m in self.modules for n in m.notices), None)

    def error(self, code: str, msg: str, loc: Location | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, msg, loc, hint))

    def warn(self, code: str, msg: str, loc: Location | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, msg, loc, hint, Severity.WARNING))

    def routes(self) -> Iterator[ast.Route]:
        for m in self.modules:
            yield from m.routes

    def rules(self) -> Iterator[tuple[ast.Route, ast.Rule]]:
        for r in self.routes():
            for rule in r.rules:
                yield r, rule


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


# ---------------------------------------------------------------- stages
def collect_definitions(ctx: Context) -> None:
    """Duplicate purposes, categories and callers across the whole set."""
    for m in ctx.modules:
        for kind, items, table in (
            ("purpose", m.purposes, ctx.purposes),
            ("category", m.categories, ctx.categories),
            ("caller", m.callers, ctx.callers),
        ):
            for item in items:
                prev = table.get(item.name)
                if prev is not None:
                    ctx.error(f"duplicate_{kind}", f"{kind} {item.name!r} is defined twice", item.loc,
                              f"first defined at {prev.loc}")
                else:
                    table[item.name] = item  # type: ignore[assignment]


def parse_paths(ctx: Context) -> None:
    """Every field path parses (categories, targets, list and count paths)."""

    def one(text: str, loc: Location, key: int) -> None:
        try:
            ctx.paths[key] = parse_path(text)
        except PathError as exc:
            at = Location(loc.file, loc.line, loc.col + exc.offset)
            ctx.error("path_invalid", f"invalid field path {text!r}: {exc.message}", at,
                      "paths look like a.b, items[*].email, \"odd key\".x, *.phone or **.ssn")

    for cat in ctx.categories.values():
        for p in cat.paths:
            one(p.text, p.loc, id(p))
    for _route, rule in ctx.rules():
        for st in rule.body:
            for t in st.targets:
                if not t.is_category:
                    one(t.text, t.loc, id(t))
    for route in ctx.routes():
        if route.each:
            for p in route.each:
                one(p.text, p.loc, id(p))
        if route.subject and route.subject[0] in BODY_SUBJECTS:
            source, text = route.subject
            at = route.subject_loc
            one(text, Location(at.file, at.line, at.col + len(source) + 1), id(route))


def check_purposes(ctx: Context) -> None:
    for p in ctx.purposes.values():
        attrs: dict[str, ast.Attr] = {}
        for a in p.attrs:
            if a.name in attrs:
                ctx.error("duplicate_attribute", f"{a.name} is given twice in purpose {p.name!r}", a.loc)
            attrs[a.name] = a
        basis = attrs.get("basis")
        if basis is None:
            ctx.error("basis_missing", f"purpose {p.name!r} has no lawful basis", p.loc,
                      "add: basis " + " | ".join(BASES))
        elif basis.values[0] not in BASES:
            ctx.error("basis_unknown", f"unknown lawful basis {basis.values[0]!r}", basis.loc,
                      did_you_mean(basis.values[0], BASES) or "one of: " + ", ".join(BASES))
        is_consent = basis is not None and basis.values[0] == "consent"
        sources = attrs.get("consent_from")
        if is_consent and "consent" not in attrs and not (sources and sources.values == ("tcf",)):
            ctx.error("consent_key_missing", f"purpose {p.name!r} is consent-based but names no consent key",
                      basis.loc if basis else p.loc, 'add: consent "<key>"')
        for name in ("retention", "consent_max_age"):
            dur = attrs.get(name)
            if dur and dur.values[0].unit not in UNITS:
                ctx.error("unit_unknown", f"unknown time unit {dur.values[0].unit!r}", dur.loc,
                          did_you_mean(dur.values[0].unit, UNITS) or "days, weeks, months or years")
        if sources:
            for s in sources.values:
                if s not in SOURCES:
                    ctx.error("consent_source_unknown", f"unknown consent source {s!r}", sources.loc,
                              "consent_from store | tcf | store, tcf")
        if "tcf" in attrs:
            for kind, nums in attrs["tcf"].values:
                hi = 11 if kind == "purposes" else 2
                for n in nums:
                    if not 1 <= n <= hi:
                        ctx.error("tcf_out_of_range", f"TCF {kind.replace('_', ' ')} {n} does not exist (1-{hi})",
                                  attrs["tcf"].loc)
            if not sources or "tcf" not in sources.values:
                ctx.warn("tcf_unused", f"purpose {p.name!r} maps TCF purposes but does not read TCF consent",
                         attrs["tcf"].loc, "add: consent_from store, tcf")
        elif sources and "tcf" in sources.values:
            ctx.error("tcf_mapping_missing", f"purpose {p.name!r} reads TCF consent but maps no TCF purpose",
                      sources.loc, "add: tcf purposes 1, 3, 4")
        processing = attrs.get("processing")
        covered = [x for x in (processing.values if processing else ()) if x in GPC_COVERED]
        if processing:
            for x in processing.values:
                if x not in PROCESSING:
                    ctx.error("processing_unknown", f"unknown processing kind {x!r}", processing.loc,
                              did_you_mean(x, PROCESSING) or "one of: " + ", ".join(PROCESSING))
        gpc = attrs.get("gpc")
        if gpc and gpc.values[0] not in ("honor", "ignore"):
            ctx.error("gpc_value", f"gpc must be honor or ignore, not {gpc.values[0]!r}", gpc.loc)
        if covered and not (gpc and gpc.values[0] == "honor"):
            ctx.error("gpc_not_honored",
                      f"purpose {p.name!r} is {', '.join(covered)} but does not honour Global Privacy Control",
                      (gpc or processing or p).loc, "add: gpc honor  (CCPA: GPC is an opt-out of sale/sharing)")
        if "retention" not in attrs:
            ctx.warn("retention_missing", f"purpose {p.name!r} states no retention", p.loc,
                     "add: retention 13 months")
        if "recipients" not in attrs:
            ctx.warn("recipients_missing", f"purpose {p.name!r} names no recipients", p.loc,
                     'add: recipients "Storefront team"')
        if "description" not in attrs:
            ctx.warn("description_missing", f"purpose {p.name!r} has no description", p.loc)
        for a in attrs.values():
            base, _, lang = a.name.partition(".")
            if lang and base in spec.PURPOSE_TEXTS and not spec.LANG_TAG.fullmatch(lang):
                ctx.error("language_invalid", f"{lang!r} is not a language tag", a.loc,
                          f'write the language as a tag like de or pt-BR: {base} de "..."')
        check_profiling(ctx, p, attrs)


def check_profiling(ctx: Context, p: ast.Purpose, attrs: dict[str, ast.Attr]) -> None:
    """A purpose's profiling and automated-decision statements (GDPR Art. 13(2)(f), 22): the values are
    right, and they belong to a purpose that profiles or decides. What a jurisdiction requires of them
    is check_notice's."""
    decisions = attrs.get("automated_decisions")
    if decisions is not None and isinstance(decisions.values[0], ast.Ident) \
            and decisions.values != (ast.Ident("none"),):
        ctx.error("automated_decisions_invalid",
                  f"automated_decisions takes none or a string, not {str(decisions.values[0])!r}", decisions.loc,
                  'automated_decisions none  (no decision solely by automated means), or '
                  'automated_decisions "what is decided, and how to contest it"')
    processing = attrs.get("processing")
    facts = spec.Facts.of_purpose(map(str, processing.values) if processing else (),
                                  decisions.values if decisions else None)
    stray = next((attrs[n] for n in ("profiling_logic", "profiling_effects") if n in attrs), None)
    if stray is not None and not facts.profiling:
        ctx.warn("profiling_undeclared", f"purpose {p.name!r} describes profiling but its processing does not "
                 "include profiling (nor does it make automated decisions)", stray.loc, "add: processing profiling")


def check_notice(ctx: Context) -> None:
    """The `notice` section: known attributes with values of the right kind, each set once across the
    set; then, per declared jurisdiction, a warning for each item the law requires that it lacks."""
    seen: dict[str, ast.Attr] = {}
    attrs = spec.attributes(ctx.modules)
    for a in attrs:
        kind = spec.ATTRS.get(a.name)
        if kind is None:
            ctx.error("notice_attribute_unknown", f"unknown notice attribute {a.name!r}", a.loc,
                      did_you_mean(a.name, spec.ATTRS) or "one of: " + ", ".join(spec.ATTRS))
            continue
        if a.name in seen:
            ctx.error("notice_attribute_duplicate", f"notice attribute {a.name} is set twice", a.loc,
                      f"the other one is at {seen[a.name].loc}")
            continue
        seen[a.name] = a
        problem = spec.valid(kind, a.values)
        if problem is not None:
            ctx.error("notice_value_invalid", f"notice attribute {a.name} {problem}", a.loc,
                      next((f"for example: {r.example}" for r in spec.REQUIREMENTS if r.item == a.name), None))
        elif a.name == "jurisdictions":
            for v in a.values:
                if str(v) not in spec.JURISDICTIONS:
                    ctx.error("jurisdiction_unknown", f"unknown jurisdiction {str(v)!r}", a.loc,
                              did_you_mean(str(v), spec.JURISDICTIONS) or "one of: " + ", ".join(spec.JURISDICTIONS))
    if not attrs:
        return
    section = spec.section_of(ctx.modules)
    where = ctx.modules_notice_loc()
    if "jurisdictions" not in seen:
        ctx.warn("notice_jurisdictions_missing", "the notice declares no jurisdiction, so veil cannot check it "
                 "for the items the law requires", where, "add: jurisdictions gdpr, ccpa")
        return
    facts = spec.Facts.of(_uses(ctx), any(c.sensitive for c in ctx.categories.values()))
    for req, j in spec.missing(section, facts):
        ctx.warn(req.code, f"the notice lacks {req.what} ({req.laws[j]}, declared jurisdiction {j})", where,
                 f"add to the notice section: {req.example}")
    for p in ctx.purposes.values():
        processing, decisions = p.get("processing"), p.get("automated_decisions")
        facts = spec.Facts.of_purpose(map(str, processing.values) if processing else (),
                                      decisions.values if decisions else None)
        for req, j in spec.missing_in_purpose((a.name for a in p.attrs), facts, section.jurisdictions):
            ctx.warn(req.code, f"purpose {p.name!r} lacks {req.what} ({req.laws[j]}, declared "
                     f"jurisdiction {j})", p.loc, f"add to purpose {p.name}: {req.example}")


def _uses(ctx: Context) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(basis, processing kinds) of every purpose."""
    for p in ctx.purposes.values():
        basis, processing = p.get("basis"), p.get("processing")
        yield (str(basis.values[0]) if basis else "", tuple(map(str, processing.values)) if processing else ())


def check_callers(ctx: Context) -> None:
    for c in ctx.callers.values():
        if not c.keys and not c.certs:
            ctx.error("caller_key_missing", f"caller {c.name!r} has no key or certificate", c.loc,
                      "add: key sha256:<hex>  |  key env NAME  |  key file \"/path\"")
        for k in c.keys:
            if k.kind == "plain":
                ctx.error("plaintext_secret", f"caller {c.name!r} has a plaintext key in the policy", k.loc,
                          "store only its hash: key sha256:<sha256 of the key>  (or key env NAME)")
            elif k.kind == "sha256" and not re.fullmatch(r"[0-9a-f]{64}", k.value):
                ctx.error("key_hash_invalid", "a sha256 key hash has 64 hex digits", k.loc)
        for name, loc in c.may:
            if name not in ctx.purposes and not any(q.startswith(name + ".") for q in ctx.purposes):
                ctx.error("unknown_purpose", f"unknown purpose {name!r}", loc,
                          did_you_mean(name, ctx.purposes))


def resolve_references(ctx: Context) -> None:
    for _route, rule in ctx.rules():
        for name, loc in rule.purposes:
            if name not in ctx.purposes:
                ctx.error("unknown_purpose", f"unknown purpose {name!r}", loc, did_you_mean(name, ctx.purposes))
        for st in rule.body:
            for t in st.targets:
                if t.is_category and t.text not in ctx.categories:
                    ctx.error("unknown_category", f"unknown category @{t.text}", t.loc,
                              did_you_mean(t.text, ctx.categories))
            if st.kind is StmtKind.REQUIRE_CALLER:
                for name in st.args:
                    if name not in ctx.callers:
                        ctx.error("unknown_caller", f"unknown caller {name!r}", st.loc,
                                  did_you_mean(name, ctx.callers))


def check_statements(ctx: Context) -> None:
    """Transform arguments and one-off statements."""
    for _route, rule in ctx.rules():
        for st in rule.body:
            if st.kind is StmtKind.MASK:
                names = [a[0] for a in st.args]
                for n, v in st.args:
                    if n not in MASK_ARGS:
                        ctx.error("transform_args", f"mask takes first N and/or last N, not {n!r}", st.loc,
                                  did_you_mean(n, MASK_ARGS))
                    elif v > 64:
                        ctx.error("transform_args", f"mask {n} {v} is too large (at most 64)", st.loc)
                if len(set(names)) != len(names):
                    ctx.error("transform_args", "mask repeats an argument", st.loc)
            elif st.kind is StmtKind.GENERALIZE:
                method = st.args[0]
                if method not in GENERALIZE:
                    ctx.error("transform_args", f"unknown generalization {method!r}", st.loc,
                              did_you_mean(method, GENERALIZE) or "prefix N, bucket N, round N, month, year, ip")
                    continue
                needs = GENERALIZE[method]
                arg = st.args[1] if len(st.args) > 1 else None
                if needs == "int" and not isinstance(arg, int):
                    ctx.error("transform_args", f"generalize ... {method} needs a number", st.loc,
                              f"for example: generalize address.zip {method} 3")
                elif needs is None and arg is not None:
                    ctx.error("transform_args", f"generalize ... {method} takes no argument", st.loc)
                elif method == "bucket" and arg == 0:
                    ctx.error("transform_args", "bucket width must be at least 1", st.loc)
                elif method == "round" and isinstance(arg, int) and arg > 10:
                    ctx.error("transform_args", "round keeps at most 10 decimals", st.loc)
            elif st.kind is StmtKind.SUPPRESS and st.args[0] < 2:
                ctx.error("transform_args", "a k-threshold below 2 suppresses nothing", st.loc)
        kinds = [s.kind for s in rule.body]
        if kinds.count(StmtKind.BLOCK) > 1:
            ctx.error("duplicate_block", "a rule blocks at most once", rule.loc)


def _segments(template: str) -> list[str | None]:
    out: list[str | None] = []
    for seg in template.strip("/").split("/") if template != "/" else []:
        out.append(None if _PARAM.fullmatch(seg) else seg)
    return out


def check_routes(ctx: Context) -> None:
    """Templates, subjects, modes, duplicate rules; then ambiguous route pairs."""
    seen: dict[tuple[str, tuple[str | None, ...]], ast.Route] = {}
    for route in ctx.routes():
        params = _PARAM.findall(route.template)
        segs = route.template.strip("/").split("/")
        for seg in segs:
            if ("{" in seg and not _PARAM.fullmatch(seg)) or ("}" in seg and "{" not in seg):
                ctx.error("route_template", f"a parameter must fill a whole segment: {seg!r}", route.loc,
                          "write /customers/{id}, not /customers/id-{id}")
        if len(set(params)) != len(params):
            ctx.error("route_template", "a parameter name is used twice", route.loc)
        if "//" in route.template or "/./" in route.template or "/../" in route.template:
            ctx.error("route_template", "the template is not a normalized path", route.loc)
        if route.subject:
            source, name = route.subject
            if source == "path" and name not in params:
                ctx.error("subject_unknown", f"the template has no parameter {{{name}}}", route.subject_loc,
                          did_you_mean(name, params) or f"parameters: {', '.join(params) or 'none'}")
        if route.mode and route.mode not in MODES:
            ctx.error("mode_unknown", f"unknown mode {route.mode!r}", route.mode_loc, "enforce or report-only")
        if not route.rules:
            ctx.warn("route_without_rules", f"route {route.method} {route.template} has no rule: always blocked",
                     route.loc)
        purposes: dict[str, Location] = {}
        for rule in route.rules:
            for name, loc in rule.purposes:
                if name in purposes:
                    ctx.error("duplicate_rule", f"two rules for purpose {name!r} on this route", loc,
                              f"the other one is at {purposes[name]}")
                purposes[name] = loc
        shape = (route.method, tuple(_segments(route.template)))
        if shape in seen:
            other = seen[shape]
            ctx.error("route_conflict",
                      f"route {route.method} {route.template} matches the same requests as {other.template}",
                      route.loc, f"the other route is at {other.loc}; merge them or make one more specific")
        else:
            seen[shape] = route


def check_subjects(ctx: Context) -> None:
    """Where a rule needs consent from the store, its route names the subject of every response.

    A consent-based purpose whose consent is in the store (`consent_from store`, the default) and any
    rule with `require consent` need a subject: `subject path.…|query.…|header.…|request_body.…|body.…`
    or, for a list, `each LIST subject PATH`. Without one the store cannot be asked, and forgetting the
    line must not switch consent off. A purpose whose consent comes only from the request's TCF string
    says so (`consent_from tcf`) and needs no subject."""
    for route in ctx.routes():
        if route.subject and route.subject[0] in BODY_SUBJECTS:
            path = ctx.paths.get(id(route))
            if path is not None and not all(isinstance(s, Key) for s in path):
                ctx.error("subject_path_invalid", "a subject is one field: a path of keys, without * or [*]",
                          route.subject_loc, f"for example: subject {route.subject[0]}.customer.id")
            if route.subject[0] == "request_body" and route.method in ("GET", "HEAD"):
                ctx.error("subject_path_invalid", f"a {route.method} request has no body to read a subject from",
                          route.subject_loc, "use subject path.…, query.…, header.… or body.… (the response)")
        if route.subject or route.each:
            continue
        for rule in route.rules:
            for name, loc in rule.purposes:
                p = ctx.purposes.get(name)
                if p is None or _store_consent(p) is None:
                    continue
                ctx.error("consent_without_subject",
                          f"purpose {name!r} needs the subject's consent ({_store_consent(p)!r}), but route "
                          f"{route.method} {route.template} names no subject: consent could never be checked",
                          loc, "add `subject path.<param>` (or query./header./request_body./body.), or "
                          "`each items[*] subject id` for a list; a purpose whose consent comes only from "
                          "the TCF string says `consent_from tcf`")
            for st in rule.body:
                if st.kind is StmtKind.REQUIRE_CONSENT:
                    ctx.error("consent_without_subject",
                              f"require consent {', '.join(map(repr, st.args))} needs a subject, but route "
                              f"{route.method} {route.template} names none", st.loc,
                              "add `subject path.<param>` (or query./header./request_body./body.), or "
                              "`each items[*] subject id`")


def _store_consent(p: ast.Purpose) -> str | None:
    """The store consent key a purpose needs for each subject, or None (not consent-based, TCF only)."""
    basis = p.get("basis")
    if basis is None or basis.values[0] != "consent":
        return None
    sources = p.get("consent_from")
    if sources is not None and "store" not in sources.values:
        return None
    key = p.get("consent")
    return str(key.values[0]) if key else "?"


def check_minimization(ctx: Context) -> None:
    """Sensitive categories kept in clear under a basis other than consent; `keep *` under consent."""
    sensitive: list[tuple[ast.Category, list[FieldPath]]] = []
    for cat in ctx.categories.values():
        if cat.sensitive:
            sensitive.append((cat, [ctx.paths[id(p)] for p in cat.paths if id(p) in ctx.paths]))
    for _route, rule in ctx.rules():
        for pname, _ in rule.purposes:
            purpose = ctx.purposes.get(pname)
            basis_attr = purpose.get("basis") if purpose else None
            basis = basis_attr.values[0] if basis_attr else None
            for st in rule.body:
                if st.kind is not StmtKind.KEEP:
                    continue
                for t in st.targets:
                    if t.is_category:
                        ref = ctx.categories.get(t.text)
                        hits = [ref] if ref and ref.sensitive else []
                        keep_all = False
                    else:
                        path = ctx.paths.get(id(t))
                        if path is None:
                            continue
                        keep_all = all(isinstance(s, AnyKey | Deep) for s in path)
                        hits = [c for c, cps in sensitive if keep_all or any(_covers(path, cp) for cp in cps)]
                    if basis != "consent" and basis is not None:
                        for cat in hits:
                            ctx.error("sensitive_without_consent",
                                      f"sensitive category @{cat.name} is kept in clear under purpose {pname!r} "
                                      f"(basis {basis})", t.loc,
                                      "special categories need explicit consent (GDPR Art. 9): drop, hash or "
                                      "generalize it, or use a consent-based purpose")
                    if basis == "consent" and not t.is_category and keep_all:
                        ctx.warn("keep_everything", f"keep {t.text} under consent-based purpose {pname!r} "
                                 "keeps every field", t.loc, "list the fields the purpose needs (minimization)")


def _covers(keep: FieldPath, cat: FieldPath) -> bool:
    """Does keeping `keep` (and its subtree) keep what category path `cat` names (at any depth)?"""
    if ends_with(keep, cat):
        return True
    # keep ends in a prefix of the category path: `keep health` covers category `health.allergies`
    fixed = [s for s in cat if isinstance(s, Key)]
    keys = [s for s in keep if isinstance(s, Key)]
    return bool(keys) and bool(fixed) and len(fixed) > 1 and keys[-1] == fixed[0]


def check_strings(ctx: Context) -> None:
    """Secrets pasted into descriptions or other strings."""
    for m in ctx.modules:
        for a in [a for p in m.purposes for a in p.attrs] + [a for n in m.notices for a in n.attrs]:
            for v in a.values:
                if isinstance(v, str) and _SECRETISH.search(v):
                    ctx.error("plaintext_secret", "this string looks like a secret key", a.loc,
                              "secrets belong in env or files, never in a policy")


STAGES: tuple[Callable[[Context], None], ...] = (
    collect_definitions,
    parse_paths,  # before check_minimization, which reads parsed paths
    check_purposes,
    check_notice,  # after collect_definitions: reads purposes and categories
    check_callers,
    resolve_references,
    check_statements,
    check_routes,
    check_subjects,  # after parse_paths (body subjects) and collect_definitions (purposes)
    check_minimization,
    check_strings,
)


def run_checks(modules: list[ast.Module]) -> list[Diagnostic]:
    ctx = Context(modules)
    for stage in STAGES:
        stage(ctx)
    return ctx.diags


def parsed_paths(modules: list[ast.Module]) -> Context:
    """The checked context (used by the compiler to reuse parsed paths)."""
    ctx = Context(modules)
    collect_definitions(ctx)
    parse_paths(ctx)
    return ctx


__all__ = ["STAGES", "Context", "run_checks"]
