"""Checked AST → CompiledPolicy: route tables, caller key index, and one compiled field plan per
(route, purpose). Deciding a request afterwards walks no syntax tree and parses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from veil.errors import Diagnostic, Severity
from veil.location import Location
from veil.policy import ast
from veil.policy.ast import StmtKind
from veil.policy.checks import Context, parsed_paths
from veil.policy.notice import NoticeSection, section_of
from veil.redact import transforms as tf
from veil.redact.categories import CategoryIndex
from veil.redact.engine import Action, FieldPlan, FieldRule, Guard, compile_plan
from veil.redact.paths import Deep, Each, FieldPath

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEV_HASH_KEY = b"veil-development-hash-key-not-for-production"


@dataclass(frozen=True, slots=True)
class CompiledPurpose:
    name: str
    description: str
    basis: str
    consent_key: str | None
    gpc_honor: bool
    processing: tuple[str, ...]
    retention: str | None
    recipients: tuple[str, ...]
    max_age: timedelta | None
    min_notice: int | None
    sources: frozenset[str]
    tcf_purposes: tuple[int, ...]
    tcf_features: tuple[int, ...]
    tcf_li: bool
    loc: Location
    descriptions: tuple[tuple[str, str], ...] = ()  # (language tag, text): `description de "..."`

    def description_in(self, lang: str) -> str | None:
        """The description written for language `lang` (`de` also takes `de-AT`), or None."""
        found = dict(self.descriptions)
        return found.get(lang) or found.get(lang.split("-")[0])

    @property
    def needs_consent(self) -> bool:
        return self.basis == "consent"


@dataclass(frozen=True, slots=True)
class CompiledCaller:
    name: str
    may: frozenset[str]
    vendor: int | None
    loc: Location
    claimable: frozenset[str] = frozenset()  # the policy's purposes this caller may claim (precomputed)

    def may_claim(self, purpose: str) -> bool:
        """A caller allowed `personalize` may claim `personalize.recommendations` (hierarchy)."""
        if purpose in self.claimable or purpose in self.may:
            return True
        parts = purpose.split(".")
        return any(".".join(parts[:i]) in self.may for i in range(1, len(parts)))


@dataclass(frozen=True, slots=True)
class CompiledRule:
    route: str
    purpose: CompiledPurpose
    plan: FieldPlan
    consent_keys: tuple[str, ...]  # store consent keys every subject must have given
    callers: frozenset[str] | None  # `require caller`
    respect_gpc: bool
    block: str | None
    locations: tuple[Location, ...]  # by rule_id (statement locations; index -1 = the rule itself)
    loc: Location
    categories_by_rule: tuple[str | None, ...]
    # rule ids the compiler added: drops of sensitive categories for a purpose not based on consent
    implicit: frozenset[int] = frozenset()

    def location_of(self, rule_id: int) -> Location:
        return self.locations[rule_id] if 0 <= rule_id < len(self.locations) else self.loc


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    method: str
    template: str
    statics: tuple[tuple[int, str], ...]
    params: tuple[tuple[int, str], ...]
    nsegs: int
    subject: tuple[str, str] | None  # (source, name): path | query | header | request_body | body
    each: tuple[FieldPath, FieldPath] | None
    upstream: str | None
    mode: str | None
    rules: Mapping[str, CompiledRule]
    loc: Location
    subject_path: FieldPath | None = None  # the parsed field path of a request_body / body subject

    @property
    def reads_lazily(self) -> bool:
        """Whether a large body may be read lazily: not when the subject is read from it (the lazy
        reading of a duplicated key would differ from orjson's before the plan could notice)."""
        return self.subject is None or self.subject[0] != "body"

    @property
    def specificity(self) -> tuple[int, ...]:
        static_idx = {i for i, _ in self.statics}
        return tuple(1 if i in static_idx else 0 for i in range(self.nsegs))


@dataclass
class CompiledPolicy:
    name: str
    version: str
    purposes: dict[str, CompiledPurpose]
    callers: dict[str, CompiledCaller]
    categories: dict[str, tuple[bool, tuple[FieldPath, ...]]]
    routes: list[CompiledRoute]
    key_index: dict[str, CompiledCaller]  # sha256 hex of key → caller
    cert_index: dict[str, CompiledCaller]
    _static: dict[tuple[str, str], CompiledRoute] = field(default_factory=dict)
    _dynamic: dict[tuple[str, int], list[CompiledRoute]] = field(default_factory=dict)
    category_index: CategoryIndex = field(default_factory=lambda: CategoryIndex(()))
    _key_cache: dict[str, CompiledCaller] = field(default_factory=dict)  # keys that authenticated
    warnings: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    modules: list[ast.Module] = field(default_factory=list)
    notice: NoticeSection = field(default_factory=NoticeSection)  # the `notice` section (policy/notice.py)

    def __post_init__(self) -> None:
        for r in self.routes:
            if not r.params:
                self._static[(r.method, "/" + "/".join(s for _, s in r.statics))] = r
            else:
                self._dynamic.setdefault((r.method, r.nsegs), []).append(r)
        for lst in self._dynamic.values():
            lst.sort(key=lambda r: r.specificity, reverse=True)

    @property
    def honors_gpc(self) -> bool:
        return any(p.gpc_honor for p in self.purposes.values())

    def match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        """Route for a normalized path ('/a/b', no trailing slash); HEAD falls back to GET."""
        r = self._static.get((method, path))
        if r is not None:
            return r, {}
        found = self._match(method, path)
        if found is None and method == "HEAD":
            found = self._match("GET", path)
        return found

    def _match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        r = self._static.get((method, path))
        if r is not None:
            return r, {}
        segs = path[1:].split("/") if path != "/" else []
        for route in self._dynamic.get((method, len(segs)), ()):
            for i, s in route.statics:
                if segs[i] != s:
                    break
            else:
                params: dict[str, str] = {}
                for i, name in route.params:
                    value = segs[i]
                    if not value:
                        break
                    params[name] = value
                else:
                    return route, params
        return None

    def authenticate(self, key: str) -> CompiledCaller | None:
        hit = self._key_cache.get(key)
        if hit is not None:
            return hit
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        caller = self.key_index.get(digest)
        if caller is None:
            hmac.compare_digest(digest, digest)  # same work either way
            return None
        if len(self._key_cache) < 1024:  # only keys that authenticated: a flood of bad keys cannot fill it
            self._key_cache[key] = caller
        return caller

    def category_of(self, template: str) -> str:
        """Category of a field template (for metrics and records); 'uncategorized' if none. The rule
        is veil.redact.categories.CategoryIndex.of: the one used for disclosures too."""
        return self.category_index.of_template(template) or "uncategorized"


def _duration(d: ast.Duration | None) -> timedelta | None:
    return timedelta(days=d.days) if d is not None else None


def _purpose(p: ast.Purpose) -> CompiledPurpose:
    def one(name: str, default: Any = None) -> Any:
        a = p.get(name)
        return a.values[0] if a else default

    def many(name: str) -> tuple[Any, ...]:
        a = p.get(name)
        return a.values if a else ()

    tcf = dict(many("tcf"))
    retention = one("retention")
    return CompiledPurpose(
        name=p.name,
        description=one("description", ""),
        basis=one("basis", "consent"),
        consent_key=one("consent"),
        gpc_honor=one("gpc") == "honor",
        processing=many("processing"),
        retention=str(retention) if retention else None,
        recipients=many("recipients"),
        max_age=_duration(one("consent_max_age")),
        min_notice=one("notice_version"),
        sources=frozenset(many("consent_from") or ("store",)),
        tcf_purposes=tuple(tcf.get("purposes", ())),
        tcf_features=tuple(tcf.get("special_features", ())),
        tcf_li="legitimate_interest" in tcf,
        loc=p.loc,
        descriptions=tuple((a.name.partition(".")[2], a.values[0]) for a in p.attrs
                           if a.name.startswith("description.")),
    )


def _resolve_key(k: ast.CallerKey, diags: list[Diagnostic]) -> str | None:
    if k.kind == "sha256":
        return k.value
    raw: str | None = None
    if k.kind == "env":
        raw = os.environ.get(k.value)
    elif k.kind == "file":
        try:
            raw = Path(k.value).read_text(encoding="utf-8").strip()
        except OSError:
            raw = None
    if not raw:
        diags.append(Diagnostic("key_unresolved", f"caller key {k.kind} {k.value} is not available; "
                                "the caller cannot authenticate", k.loc, severity=Severity.WARNING))
        return None
    if raw.startswith("sha256:"):
        return raw[7:].lower()
    return hashlib.sha256(raw.encode()).hexdigest()


def purpose_hash_key(master: bytes, purpose: str) -> bytes:
    """Per-purpose key for the hash transform: pseudonyms from two purposes cannot be joined."""
    return hmac.new(master, b"veil-hash-transform\x00" + purpose.encode(), hashlib.sha256).digest()


def _transform(st: ast.Stmt, purpose: str, hash_key: bytes) -> tf.Transform:
    if st.kind is StmtKind.HASH:
        return tf.hash(purpose_hash_key(hash_key, purpose))
    if st.kind is StmtKind.MASK:
        args = dict(st.args)
        return tf.mask(first=args.get("first", 0), last=args.get("last", 0))
    if st.kind is StmtKind.NULL:
        return tf.null()
    if st.kind is StmtKind.REPLACE:
        return tf.replace(st.args[0])
    method = st.args[0]
    arg = int(st.args[1]) if len(st.args) > 1 and isinstance(st.args[1], int) else 0
    if method == "prefix":
        return tf.prefix(arg)
    if method == "bucket":
        return tf.bucket(arg)
    if method == "round":
        return tf.round_(arg)
    if method in ("month", "year"):
        return tf.date(method)
    return tf.ip()


def _compile_rule(
    route: ast.Route, rule: ast.Rule, purpose: CompiledPurpose, ctx: Context, hash_key: bytes
) -> CompiledRule:
    rules: list[FieldRule] = []
    guards: list[Guard] = []
    locations: list[Location] = []
    cats: list[str | None] = []
    consent_keys: list[str] = []
    if purpose.needs_consent and purpose.consent_key and "store" in purpose.sources:
        consent_keys.append(purpose.consent_key)
    callers: set[str] | None = None
    respect_gpc = False
    block: str | None = None
    transformed_cats: set[str] = set()

    def add(path: FieldPath, action: Action, transform: tf.Transform | None, loc: Location,
            cat: str | None) -> None:
        rules.append(FieldRule(path, action, transform, len(locations), cat))
        locations.append(loc)
        cats.append(cat)

    for st in rule.body:
        if st.kind is StmtKind.SUPPRESS:
            lst, cnt = (ctx.paths[id(t)] for t in st.targets)
            if len(lst) > 1 and isinstance(lst[-1], Each):
                lst = lst[:-1]  # `suppress groups[*] where ...` names the elements; the guard takes the array
            guards.append(Guard(lst, cnt, int(st.args[0]), len(locations)))
            locations.append(st.loc)
            cats.append(None)
        elif st.kind is StmtKind.REQUIRE_CONSENT:
            consent_keys.extend(k for k in st.args if k not in consent_keys)
        elif st.kind is StmtKind.REQUIRE_CALLER:
            callers = (callers or set()) | set(st.args)
        elif st.kind is StmtKind.RESPECT_GPC:
            respect_gpc = True
        elif st.kind is StmtKind.BLOCK:
            block = st.args[0]
        else:
            action = {StmtKind.KEEP: Action.KEEP, StmtKind.DROP: Action.DROP}.get(st.kind, Action.TRANSFORM)
            transform = _transform(st, purpose.name, hash_key) if action is Action.TRANSFORM else None
            for t in st.targets:
                if t.is_category:
                    if action is Action.TRANSFORM:
                        transformed_cats.add(t.text)
                    for cp in ctx.categories[t.text].paths:
                        p = ctx.paths[id(cp)]
                        add(p if p[:1] == (Deep(),) else (Deep(), *p), action, transform, st.loc, t.text)
                else:
                    add(ctx.paths[id(t)], action, transform, st.loc, None)
    implicit: set[int] = set()
    if not purpose.needs_consent:
        # Belt and braces for GDPR Art. 9: sensitive categories never leave in clear without consent.
        for cname, cat in ctx.categories.items():
            if cat.sensitive and cname not in transformed_cats:
                for cp in cat.paths:
                    p = ctx.paths[id(cp)]
                    implicit.add(len(locations))
                    add(p if p[:1] == (Deep(),) else (Deep(), *p), Action.DROP, None, cat.loc, cname)
    return CompiledRule(
        route=route.template,
        purpose=purpose,
        plan=compile_plan(rules, guards, f"{route.method} {route.template} for {purpose.name}"),
        consent_keys=tuple(consent_keys),
        callers=frozenset(callers) if callers is not None else None,
        respect_gpc=respect_gpc,
        block=block,
        locations=tuple(locations),
        loc=rule.loc,
        categories_by_rule=tuple(cats),
        implicit=frozenset(implicit),
    )


def compile_policy(
    modules: list[ast.Module], *, version: str, hash_key: bytes | None = None
) -> CompiledPolicy:
    ctx = parsed_paths(modules)
    key = hash_key or DEV_HASH_KEY
    purposes = {name: _purpose(p) for name, p in ctx.purposes.items()}
    diags: list[Diagnostic] = []
    callers: dict[str, CompiledCaller] = {}
    key_index: dict[str, CompiledCaller] = {}
    cert_index: dict[str, CompiledCaller] = {}
    for c in ctx.callers.values():
        may = frozenset(n for n, _ in c.may)
        cc = CompiledCaller(c.name, may, c.vendor, c.loc)
        cc = CompiledCaller(c.name, may, c.vendor, c.loc, frozenset(p for p in purposes if cc.may_claim(p)))
        callers[c.name] = cc
        for k in c.keys:
            digest = _resolve_key(k, diags)
            if digest:
                key_index[digest] = cc
        for cert in c.certs:
            cert_index[cert] = cc
    routes: list[CompiledRoute] = []
    for m in modules:
        for r in m.routes:
            segs = r.template.strip("/").split("/") if r.template != "/" else []
            statics = tuple((i, s) for i, s in enumerate(segs) if not _PARAM.fullmatch(s))
            params = tuple((i, _PARAM.fullmatch(s).group(1)) for i, s in enumerate(segs)  # type: ignore[union-attr]
                           if _PARAM.fullmatch(s))
            compiled: dict[str, CompiledRule] = {}
            for rule in r.rules:
                for pname, _ in rule.purposes:
                    compiled[pname] = _compile_rule(r, rule, purposes[pname], ctx, key)
            each = None
            if r.each:
                each = (ctx.paths[id(r.each[0])], ctx.paths[id(r.each[1])])
            subject_path = ctx.paths.get(id(r)) if r.subject and r.subject[0] in ("body", "request_body") else None
            routes.append(CompiledRoute(
                r.method, r.template, statics, params, len(segs), r.subject, each, r.upstream, r.mode,
                compiled, r.loc, subject_path,
            ))
    header = next((m.header for m in modules if m.header), None)
    categories = {
        name: (c.sensitive, tuple(ctx.paths[id(p)] for p in c.paths)) for name, c in ctx.categories.items()
    }
    policy = CompiledPolicy(
        name=header.name if header else "veil-policy",
        version=version,
        purposes=purposes,
        callers=callers,
        categories=categories,
        routes=routes,
        key_index=key_index,
        cert_index=cert_index,
        modules=modules,
        category_index=CategoryIndex([(name, paths) for name, (_, paths) in categories.items()]),
        notice=section_of(modules),
    )
    policy.warnings.extend(diags)
    return policy
