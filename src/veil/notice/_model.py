"""The notice model: what a privacy notice says, derived from the compiled policy (one source of truth).

Which data categories a purpose uses is read from the compiled field plans, with the engine's own
precedence: a category is used when a keep or transform rule of some route reaches one of its fields
and no drop (nor, for keeps, a transform) covers that field. A field a rule only nulls or replaces
discloses nothing and is not counted. Shapes the policy cannot know (a wildcard drop against a
concrete keep) are resolved towards reporting the use: a notice may over-state, never under-state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from veil.policy import ast
from veil.policy.compile import CompiledPolicy, CompiledPurpose, CompiledRule
from veil.policy.notice import SALE_OR_SHARE, Facts, NoticeSection, missing_in_purpose, required
from veil.redact.engine import Action, FieldRule
from veil.redact.paths import AnyKey, Deep, FieldPath, ends_with, format_path

# GDPR Art. 6(1): the point of each lawful basis. Titles and plain words are in the catalogs (lang/).
BASIS_POINTS: dict[str, str] = {
    "consent": "a", "contract": "b", "legal_obligation": "c", "vital_interests": "d", "public_task": "e",
    "legitimate_interests": "f",
}

# How a field leaves veil, by transform name; the order is the display order.
MANNERS: dict[str, str] = {
    "keep": "in clear", "hash": "pseudonymized", "mask": "masked", "prefix": "generalized",
    "bucket": "generalized", "date": "generalized", "round": "generalized", "ip": "generalized",
}
MANNER_ORDER = ("in clear", "pseudonymized", "masked", "generalized")
_SILENT = ("null", "replace")  # transforms that disclose nothing

# IAB TCF v2.2 purposes and special features (short names of the Global Vendor List).
TCF_PURPOSES: dict[int, str] = {
    1: "Store and/or access information on a device",
    2: "Use limited data to select advertising",
    3: "Create profiles for personalised advertising",
    4: "Use profiles to select personalised advertising",
    5: "Create profiles to personalise content",
    6: "Use profiles to select personalised content",
    7: "Measure advertising performance",
    8: "Measure content performance",
    9: "Understand audiences through statistics or combinations of data from different sources",
    10: "Develop and improve services",
    11: "Use limited data to select content",
}
TCF_FEATURES: dict[int, str] = {
    1: "Use precise geolocation data",
    2: "Actively scan device characteristics for identification",
}

@dataclass(frozen=True, slots=True)
class Basis:
    code: str
    article: str  # "GDPR Art. 6(1)(a)" (English; renderers take the reader's language from the catalog)
    point: str  # "a"


@dataclass(frozen=True, slots=True)
class CategoryUse:
    name: str
    sensitive: bool
    manners: tuple[str, ...]  # subset of MANNER_ORDER, in that order


@dataclass(frozen=True, slots=True)
class Consent:
    key: str | None
    sources: tuple[str, ...]  # "store", "tcf"
    max_age: str | None  # "13 months"
    notice_version: int | None  # minimum notice version a consent must have been given to
    # For operators (JSON output only; never on the customer's page): how a withdrawal is recorded.
    withdraw_api: str
    withdraw_cli: str


@dataclass(frozen=True, slots=True)
class Tcf:
    purposes: tuple[tuple[int, str], ...]
    special_features: tuple[tuple[int, str], ...]
    legitimate_interest: bool


Texts = tuple[tuple[str, str], ...]  # (language, text); language "" is the policy's own


def text_in(texts: Texts, lang: str) -> tuple[str, str]:
    """(text, its language): the text written for `lang` (or its primary tag), else the policy's own
    with language "" (empty text when there is none)."""
    found = dict(texts)
    text = found.get(lang) or found.get(lang.split("-")[0])
    return (text, lang) if text else (found.get("", ""), "")


@dataclass(frozen=True, slots=True)
class Automated:
    """GDPR Art. 13(2)(f), 14(2)(g), 22: a purpose's profiling and automated decisions, as its policy
    states them (`profiling_logic`, `profiling_effects`, `automated_decisions`)."""

    logic: Texts
    effects: Texts
    decisions: Texts  # what is decided solely by automated means; empty when none or not stated
    decides: bool | None  # None: not stated; False: `automated_decisions none`; True: decisions described
    missing: tuple[str, ...]  # items the notice's jurisdictions require that the policy does not state


@dataclass(frozen=True, slots=True)
class PurposeNotice:
    name: str
    description: str
    basis: Basis
    processing: tuple[str, ...]  # codes: sale, sharing, profiling, ... (words in the catalogs)
    categories: tuple[CategoryUse, ...]
    recipients: tuple[str, ...]
    retention: str | None
    consent: Consent | None  # None: no consent needed
    gpc_honored: bool  # for every route (purpose `gpc honor`)
    gpc_routes: tuple[str, ...]  # routes honouring GPC by `respect gpc` alone
    tcf: Tcf | None
    routes: tuple[str, ...]  # "GET /customers/{id}"
    retention_parts: tuple[int, str] | None = None  # (13, "months"), for the catalogs' plural forms
    descriptions: tuple[tuple[str, str], ...] = ()  # (language, text): `description de "..."`
    automated: Automated | None = None  # None: neither profiling nor automated decisions stated or required

    @property
    def sensitive(self) -> bool:
        return any(c.sensitive for c in self.categories)

    @property
    def sells_or_shares(self) -> bool:
        return any(k in SALE_OR_SHARE for k in self.processing)

    def description_in(self, lang: str) -> tuple[str, str]:
        """(text, its language): the description written for `lang`, else the policy's own."""
        return text_in((("", self.description), *self.descriptions), lang)


@dataclass(frozen=True, slots=True)
class CategoryNotice:
    name: str
    sensitive: bool
    fields: tuple[str, ...]
    purposes: tuple[str, ...]  # purposes that disclose it


@dataclass(frozen=True, slots=True)
class Disclosure:
    """CCPA: one category and how the policy lets it leave (derived from the policy, not counted)."""

    category: str
    sensitive: bool
    sold_or_shared: tuple[str, ...]  # purposes that sell or share it
    business: tuple[str, ...]  # purposes that disclose it for a business purpose
    sold_or_shared_to: tuple[str, ...]  # their recipients (categories of third parties)
    business_to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    controller: str
    version: str | None  # the policy header's version, e.g. "2026.11"
    policy_hash: str
    purposes: tuple[PurposeNotice, ...]
    categories: tuple[CategoryNotice, ...]
    section: NoticeSection = NoticeSection()
    jurisdictions: tuple[str, ...] = ("gdpr",)  # declared ones; GDPR's items when none is declared
    disclosures: tuple[Disclosure, ...] = ()
    facts: Facts = Facts()  # what makes a conditional item required (veil.policy.notice.REQUIREMENTS)

    @property
    def honors_gpc(self) -> bool:
        return any(p.gpc_honored or p.gpc_routes for p in self.purposes)

    @property
    def sells_or_shares(self) -> bool:
        return any(p.sells_or_shares for p in self.purposes)

    @property
    def uses_sensitive(self) -> bool:
        return any(p.sensitive for p in self.purposes)

    @property
    def needs_consent(self) -> bool:
        return any(p.consent is not None for p in self.purposes)

    def shows(self, item: str) -> bool:
        """Is notice attribute `item` on the page: stated, or required by one of the notice's
        jurisdictions (then it says it is not stated)?"""
        return item in self.section.values or required(item, self.section, self.facts, self.jurisdictions)

    @property
    def profiles(self) -> bool:
        """Some purpose profiles or decides by automated means (or says it does not)."""
        return any(p.automated is not None for p in self.purposes)


# ---------------------------------------------------------------- category use
def _all_wild(path: FieldPath) -> bool:
    return all(isinstance(s, AnyKey | Deep) for s in path)


def _reach(rule_path: FieldPath, cat_path: FieldPath) -> FieldPath | None:
    """The node of category path `cat_path` that `rule_path` reaches (itself or by holding an
    ancestor), or None."""
    for i in range(len(rule_path), 0, -1):
        if ends_with(rule_path[:i], cat_path):
            return rule_path  # at or below a category field
    for j in range(len(cat_path) - 1, 0, -1):
        if ends_with(rule_path, cat_path[:j]):
            return rule_path + cat_path[j:]  # an ancestor: keep `health` reaches `health.allergies`
    if _all_wild(rule_path):
        return (Deep(), *cat_path)  # keep `**` or `*`
    return None


def _covers(outer: FieldPath, node: FieldPath) -> bool:
    """Does rule path `outer` hold `node` (itself or an ancestor) wherever `node` occurs?"""
    if outer[:1] == (Deep(),):
        tail = outer[1:]
        return not tail or any(ends_with(node[:i], tail) for i in range(1, len(node) + 1))
    return len(node) >= len(outer) and node[: len(outer)] == outer


def _manner(rule: FieldRule) -> str | None:
    if rule.action is Action.KEEP:
        return MANNERS["keep"]
    name = rule.transform.name if rule.transform is not None else ""
    return None if name in _SILENT else MANNERS.get(name, "generalized")


def _uses(rule: CompiledRule, name: str, cat_paths: tuple[FieldPath, ...]) -> set[str]:
    rules = rule.plan.rules
    drops = [r.path for r in rules if r.action is Action.DROP]
    transforms = [r.path for r in rules if r.action is Action.TRANSFORM]
    out: set[str] = set()
    for r in rules:
        if r.action is Action.DROP:
            continue
        manner = _manner(r)
        if manner is None:
            continue
        nodes = [r.path] if r.category == name else [n for cp in cat_paths if (n := _reach(r.path, cp))]
        for node in nodes:
            if any(_covers(d, node) for d in drops):
                continue
            if r.action is Action.KEEP and any(_covers(t, node) for t in transforms):
                continue
            out.add(manner)
    return out


def _rules_of(policy: CompiledPolicy, purpose: str) -> Iterator[tuple[str, CompiledRule]]:
    for route in policy.routes:
        rule = route.rules.get(purpose)
        if rule is not None and rule.block is None:
            yield f"{route.method} {route.template}", rule


def _categories(policy: CompiledPolicy, purpose: str) -> tuple[CategoryUse, ...]:
    found: dict[str, set[str]] = {}
    for _, rule in _rules_of(policy, purpose):
        for name, (_, paths) in policy.categories.items():
            used = _uses(rule, name, paths)
            if used:
                found.setdefault(name, set()).update(used)
    return tuple(
        CategoryUse(name, sensitive, tuple(m for m in MANNER_ORDER if m in found[name]))
        for name, (sensitive, _) in policy.categories.items() if name in found
    )


# ---------------------------------------------------------------- purposes
def basis_of(code: str) -> Basis:
    point = BASIS_POINTS.get(code, "?")
    return Basis(code, f"GDPR Art. 6(1)({point})", point)


def _attr_text(policy: CompiledPolicy, purpose: str, attr: str) -> str | None:
    """An attribute as written (durations keep their unit: "13 months")."""
    for m in policy.modules:
        for p in m.purposes:
            if p.name == purpose and (a := p.get(attr)) is not None:
                return str(a.values[0])
    return None


def _consent(policy: CompiledPolicy, p: CompiledPurpose) -> Consent | None:
    if not p.needs_consent:
        return None
    key = p.consent_key
    shown = key or "<key>"
    return Consent(
        key=key,
        sources=tuple(s for s in ("store", "tcf") if s in p.sources),
        max_age=_attr_text(policy, p.name, "consent_max_age"),
        notice_version=p.min_notice,
        withdraw_api=f'POST /consent/{{subject}} {{"key": "{shown}", "action": "withdrawn"}}',
        withdraw_cli=f"veil consent withdraw --subject ID --key {shown}",
    )


def _tcf(p: CompiledPurpose) -> Tcf | None:
    if not (p.tcf_purposes or p.tcf_features):
        return None
    return Tcf(
        purposes=tuple((n, TCF_PURPOSES.get(n, "unknown")) for n in p.tcf_purposes),
        special_features=tuple((n, TCF_FEATURES.get(n, "unknown")) for n in p.tcf_features),
        legitimate_interest=p.tcf_li,
    )


def _ast_purpose(policy: CompiledPolicy, name: str) -> ast.Purpose | None:
    return next((p for m in policy.modules for p in m.purposes if p.name == name), None)


def _texts(purpose: ast.Purpose, base: str) -> Texts:
    """A text attribute and its translations: ("", text) first when written without a language."""
    out = [("", a.values[0]) if a.name == base else (a.name.partition(".")[2], a.values[0])
           for a in purpose.attrs
           if (a.name == base or a.name.startswith(base + ".")) and isinstance(a.values[0], str)]
    return tuple(sorted(out, key=lambda t: t[0] != ""))


def _automated(policy: CompiledPolicy, p: CompiledPurpose, jurisdictions: tuple[str, ...]) -> Automated | None:
    node = _ast_purpose(policy, p.name)
    if node is None:
        return None
    decisions = node.get("automated_decisions")
    facts = Facts.of_purpose(p.processing, decisions.values if decisions else None)
    names = {a.name for a in node.attrs}
    missing = tuple(r.item for r, _ in missing_in_purpose(names, facts, jurisdictions))
    logic, effects = _texts(node, "profiling_logic"), _texts(node, "profiling_effects")
    if not (facts.profiling or logic or effects or decisions):
        return None
    return Automated(logic, effects, _texts(node, "automated_decisions"),
                     None if decisions is None else decisions.values != (ast.Ident("none"),), missing)


def _purpose(policy: CompiledPolicy, p: CompiledPurpose, jurisdictions: tuple[str, ...]) -> PurposeNotice:
    rules = list(_rules_of(policy, p.name))
    return PurposeNotice(
        name=p.name,
        description=p.description,
        basis=basis_of(p.basis),
        processing=p.processing,
        categories=_categories(policy, p.name),
        recipients=p.recipients,
        retention=p.retention,
        consent=_consent(policy, p),
        gpc_honored=p.gpc_honor,
        gpc_routes=() if p.gpc_honor else tuple(r for r, rule in rules if rule.respect_gpc),
        tcf=_tcf(p),
        routes=tuple(r for r, _ in rules),
        retention_parts=_retention(policy, p.name),
        descriptions=p.descriptions,
        automated=_automated(policy, p, jurisdictions),
    )


def _retention(policy: CompiledPolicy, purpose: str) -> tuple[int, str] | None:
    for m in policy.modules:
        for p in m.purposes:
            if p.name == purpose and (a := p.get("retention")) is not None:
                return (a.values[0].amount, a.values[0].unit)
    return None


def _header_version(policy: CompiledPolicy) -> str | None:
    return next((m.header.version for m in policy.modules if m.header), None)


def build_notice(policy: CompiledPolicy) -> Notice:
    """The notice for a compiled policy; equal policies give equal notices."""
    section = policy.notice
    jurisdictions = section.jurisdictions or ("gdpr",)
    purposes = tuple(_purpose(policy, p, jurisdictions) for p in policy.purposes.values())
    categories = tuple(
        CategoryNotice(
            name, sensitive, tuple(format_path(p) for p in paths),
            tuple(p.name for p in purposes if any(c.name == name for c in p.categories)),
        )
        for name, (sensitive, paths) in policy.categories.items()
    )
    facts = Facts.of(((p.basis, p.processing) for p in policy.purposes.values()),
                     any(sensitive for sensitive, _ in policy.categories.values()))
    return Notice(
        section.get("controller") or policy.name, _header_version(policy), policy.version, purposes, categories,
        section, jurisdictions, _disclosures(purposes, categories), facts,
    )


def _disclosures(purposes: tuple[PurposeNotice, ...], categories: tuple[CategoryNotice, ...]
                 ) -> tuple[Disclosure, ...]:
    by_name = {p.name: p for p in purposes}
    out = []
    for c in categories:
        users = [by_name[n] for n in c.purposes]
        if not users:
            continue
        sold = [p for p in users if p.sells_or_shares]
        business = [p for p in users if not p.sells_or_shares]
        out.append(Disclosure(
            c.name, c.sensitive, tuple(p.name for p in sold), tuple(p.name for p in business),
            tuple(dict.fromkeys(r for p in sold for r in p.recipients)),
            tuple(dict.fromkeys(r for p in business for r in p.recipients)),
        ))
    return tuple(out)


# ---------------------------------------------------------------- items both renderers show
# A shown item: (catalog key, policy text or None, its language). The catalog text takes the policy
# text as {text} (a label's text follows it); "" as the language is the policy's own.
Shown = tuple[str, str | None, str]


def automated_rows(a: Automated, lang: str) -> list[tuple[str, Shown]]:
    """(label key, what follows it) for a purpose's profiling and automated decisions, in `lang`; an item
    the notice's jurisdictions require and the policy lacks is shown as not stated."""
    rows: list[tuple[str, Shown]] = []
    unknown: Shown = ("automated.unknown", None, "")
    for key, texts in (("logic", a.logic), ("effects", a.effects)):
        text, tag = text_in(texts, lang)
        if text:
            rows.append((f"automated.{key}", ("", text, tag)))
        elif f"profiling_{key}" in a.missing:
            rows.append((f"automated.{key}", unknown))
    text, tag = text_in(a.decisions, lang)
    if a.decides is False:
        rows.append(("automated.decisions", ("automated.no_decisions", None, "")))
    elif a.decides and text:
        rows.append(("automated.decisions", ("automated.decided", text, tag)))
    elif a.decides or "automated_decisions" in a.missing:
        rows.append(("automated.decisions", unknown))
    return rows


def source_lines(notice: Notice) -> list[Shown]:
    """GDPR Art. 14(2)(f) (CCPA: categories of sources): where data not collected from the reader comes
    from, and whether any of it is publicly accessible."""
    values = notice.section.values
    out: list[Shown] = []
    if "source" not in values:
        out.append(("source.unknown", None, ""))
    else:
        out.append(("source.text", values["source"], "") if values["source"] else ("source.none", None, ""))
    if values.get("public_sources"):
        out.append(("source.public", values["public_sources"], ""))
    elif "public_sources" in values:
        out.append(("source.public_none", None, ""))
    elif notice.shows("public_sources"):
        out.append(("source.public_unknown", None, ""))
    return out


def obligation_line(notice: Notice) -> Shown:
    """GDPR Art. 13(2)(e): whether the reader must provide their data, and what happens if they do not."""
    text = notice.section.get("obligation")
    return ("", text, "") if text else ("obligation.unknown", None, "")


def join(items: Iterable[str], empty: str = "none") -> str:
    items = list(items)
    return ", ".join(items) if items else empty
