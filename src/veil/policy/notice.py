"""The `notice` section of a policy set: who publishes the privacy notice, how customers reach them,
and which laws the notice must satisfy.

    notice {
      controller "Acme Retail GmbH"
      address "Hauptstraße 1, 10115 Berlin, Germany"
      contact "privacy@acme.example"
      dpo "Dr. Jana Richter, dpo@acme.example"
      authority "Berlin Commissioner for Data Protection and Freedom of Information"
      withdraw "https://acme.example/privacy/choices"
      jurisdictions gdpr, ccpa
    }

It lives in the policy, not in veil.yaml: the notice is published about the policy, is versioned and
hashed with it, and `veil notice policies/` (and `veil check`) need no deployment config to read it.

Some items belong to a purpose, not to the section: what its profiling does and whether it decides
about people by automated means (GDPR Art. 13(2)(f), 14(2)(g), 22):

    purpose personalize.recommendations {
      processing profiling
      profiling_logic "We rank products by what customers with similar purchases bought."
      profiling_effects "Which products you see first; prices and offers do not depend on it."
      automated_decisions none
      …
    }

This module is the one place that says which attributes exist (ATTRS, PURPOSE_TEXTS) and which items
each jurisdiction requires (REQUIREMENTS): `veil check` warns from the table (checks.check_notice) and
the notice renders from it (an item required but absent is shown as not stated). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date

from veil.location import Location
from veil.policy import ast

JURISDICTIONS: dict[str, str] = {
    "gdpr": "EU/EEA General Data Protection Regulation (and the UK GDPR)",
    "ccpa": "California Consumer Privacy Act, as amended by the CPRA",
}

# Attribute → kind. text: one string; link: one https/http URL or mailto:/tel: URI; contact: a URL or
# an e-mail address; date: YYYY-MM-DD; names: bare names; lang: one language tag.
# A kind ending in "?" also accepts the bare word `none` ("we have none"), which silences the warning.
ATTRS: dict[str, str] = {
    "controller": "text",  # the legal name of the business responsible
    "address": "text",  # its postal address
    "contact": "contact",  # privacy contact: e-mail address or URL of a contact form
    "phone": "text?",  # a (toll-free) number for requests
    "dpo": "text?",  # the data protection officer: name and e-mail
    "representative": "text?",  # EU/UK representative (GDPR Art. 27)
    "authority": "text",  # the supervisory authority people may complain to
    "transfers": "text?",  # transfers outside the EEA and their safeguards
    "privacy_center": "link",  # the customer's privacy center
    "requests": "link",  # where customers ask for access, deletion, correction, portability
    "withdraw": "link",  # where customers withdraw consent / change their choices
    "opt_out": "link",  # CCPA "Do Not Sell or Share My Personal Information"
    "limit_sensitive": "link?",  # CCPA "Limit the Use of My Sensitive Personal Information"
    "source": "text?",  # where data not obtained from the customer comes from (none: all from the customer)
    "public_sources": "text?",  # which of those sources are publicly accessible (none: no public source)
    "obligation": "text",  # whether customers must provide data (law, contract) and what happens if not
    "updated": "date",  # the date the notice was last updated
    "jurisdictions": "names",  # gdpr, ccpa
    "language": "lang",  # the language the policy's own strings are written in (default en)
}

LANG_TAG = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_EMAIL = re.compile(r"[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+")
_URL = re.compile(r"(https?://[^\s<>\"']+|mailto:[^\s<>\"']+|tel:\+?[0-9 ()./-]+)")

# Which purposes trigger a conditional requirement; one definition, used by checks and the notice.
SALE_OR_SHARE = ("sale", "sharing", "targeted_advertising")
# Processing that is profiling (GDPR Art. 4(4)) whether or not the purpose also says `profiling`:
# advertising targeted on a person's interests evaluates their preferences.
PROFILING = ("profiling", "targeted_advertising")

# Purpose attributes that are texts for the notice; each may be given again per language
# (`profiling_logic de "…"`, like `description de "…"`). `automated_decisions` also takes `none`.
PURPOSE_TEXTS = ("description", "profiling_logic", "profiling_effects", "automated_decisions")


@dataclass(frozen=True, slots=True)
class Facts:
    """What the policy does that makes an item required."""

    consent: bool = False  # some purpose is based on consent
    sale_or_share: bool = False  # some purpose sells, shares, or targets advertising
    sensitive: bool = False  # the policy declares sensitive categories
    other_sources: bool = False  # the section names sources other than the customer (`source "…"`)
    profiling: bool = False  # (a purpose's facts) it profiles, or states automated decisions

    @classmethod
    def of(cls, purposes: Iterable[tuple[str, Iterable[str]]], sensitive: bool) -> Facts:
        """From (basis, processing kinds) per purpose and whether any category is sensitive."""
        consent = sale = False
        for basis, processing in purposes:
            consent |= basis == "consent"
            sale |= any(k in SALE_OR_SHARE for k in processing)
        return cls(consent, sale, sensitive)

    @classmethod
    def of_purpose(cls, processing: Iterable[str], decisions: tuple[object, ...] | None) -> Facts:
        """One purpose's facts: its processing kinds and its `automated_decisions` values (None: absent)."""
        decides = decisions is not None and decisions != (ast.Ident("none"),)
        return cls(profiling=any(k in PROFILING for k in processing) or decides)

    def holds(self, when: str) -> bool:
        return when == "always" or bool(getattr(self, when))


@dataclass(frozen=True, slots=True)
class Requirement:
    item: str  # the notice attribute that provides it
    code: str  # stable warning code of `veil check`
    what: str  # what is missing, in words
    laws: Mapping[str, str]  # jurisdiction → legal reference
    when: str = "always"  # always | consent | sale_or_share | sensitive | other_sources | profiling
    example: str = ""
    scope: str = "notice"  # notice: an attribute of the notice section; purpose: of each purpose


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("controller", "notice_controller_missing", "the name of the business responsible (controller)",
                {"gdpr": "GDPR Art. 13(1)(a)", "ccpa": "Cal. Civ. Code § 1798.100(a)"},
                example='controller "Acme Retail GmbH"'),
    Requirement("address", "notice_address_missing", "the controller's postal address",
                {"gdpr": "GDPR Art. 13(1)(a)"}, example='address "Hauptstraße 1, 10115 Berlin, Germany"'),
    Requirement("contact", "notice_contact_missing", "how customers contact the controller about privacy",
                {"gdpr": "GDPR Art. 13(1)(a)", "ccpa": "CCPA Regulations § 7011(e)(6)"},
                example='contact "privacy@acme.example"'),
    Requirement("dpo", "notice_dpo_missing", "the data protection officer's contact details",
                {"gdpr": "GDPR Art. 13(1)(b)"}, example='dpo "Dr. Jana Richter, dpo@acme.example"  (or: dpo none)'),
    Requirement("authority", "notice_authority_missing", "the supervisory authority customers may complain to",
                {"gdpr": "GDPR Art. 13(2)(d)"}, example='authority "Berlin Commissioner for Data Protection"'),
    Requirement("transfers", "notice_transfers_missing", "transfers outside the EEA and their safeguards",
                {"gdpr": "GDPR Art. 13(1)(f)"},
                example='transfers "To the USA under the EU-US Data Privacy Framework"  (or: transfers none)'),
    Requirement("withdraw", "notice_withdraw_missing", "where customers withdraw their consent",
                {"gdpr": "GDPR Art. 7(3), 13(2)(c)"}, when="consent",
                example='withdraw "https://acme.example/privacy/choices"'),
    Requirement("requests", "notice_requests_missing",
                "where customers submit requests to know, delete or correct their information",
                {"ccpa": "Cal. Civ. Code § 1798.130(a)(1)"}, example='requests "https://acme.example/privacy/request"'),
    Requirement("phone", "notice_phone_missing", "a toll-free number for requests",
                {"ccpa": "Cal. Civ. Code § 1798.130(a)(1)(A)"},
                example='phone "+1 800 555 0100"  (or, for a business that operates only online: phone none)'),
    Requirement("opt_out", "notice_opt_out_missing", 'the "Do Not Sell or Share My Personal Information" link',
                {"ccpa": "Cal. Civ. Code § 1798.135(a)(1)"}, when="sale_or_share",
                example='opt_out "https://acme.example/privacy/do-not-sell-or-share"'),
    Requirement("limit_sensitive", "notice_limit_missing",
                'the "Limit the Use of My Sensitive Personal Information" link',
                {"ccpa": "Cal. Civ. Code § 1798.135(a)(2)"}, when="sensitive",
                example='limit_sensitive "https://acme.example/privacy/limit"  (or, when sensitive information '
                        "is used only as CCPA Regulations § 7027(m) permits: limit_sensitive none)"),
    Requirement("updated", "notice_updated_missing", "the date the notice was last updated",
                {"ccpa": "CCPA Regulations § 7011(e)(4)"}, example='updated "2026-11-01"'),
    Requirement("source", "notice_source_missing",
                "where personal data not obtained from the customer comes from",
                {"gdpr": "GDPR Art. 14(2)(f)", "ccpa": "Cal. Civ. Code § 1798.110(c)(2)"},
                example='source "Partner shops, for orders you place through them"  (or, when all data '
                        "comes from the customer: source none)"),
    Requirement("public_sources", "notice_public_sources_missing",
                "whether data comes from publicly accessible sources", {"gdpr": "GDPR Art. 14(2)(f)"},
                when="other_sources", example='public_sources none  (or: public_sources "The commercial register")'),
    Requirement("obligation", "notice_obligation_missing",
                "whether customers must provide their data (a statutory or contractual requirement) and what "
                "happens if they do not", {"gdpr": "GDPR Art. 13(2)(e)"},
                example='obligation "To place an order you must give us your name, address and payment details; '
                        'without them we cannot accept it. Everything else is optional."'),
    Requirement("automated_decisions", "notice_automated_decisions_missing",
                "whether it makes decisions about customers solely by automated means (including profiling)",
                {"gdpr": "GDPR Art. 13(2)(f), 14(2)(g), 22"}, when="profiling", scope="purpose",
                example='automated_decisions none  (or: automated_decisions "The decision, and how to contest it")'),
    Requirement("profiling_logic", "notice_profiling_logic_missing",
                "meaningful information about the logic of its profiling or automated decisions",
                {"gdpr": "GDPR Art. 13(2)(f), 14(2)(g)"}, when="profiling", scope="purpose",
                example='profiling_logic "We rank products by what customers with similar purchases bought."'),
    Requirement("profiling_effects", "notice_profiling_effects_missing",
                "the significance and envisaged consequences of its profiling or automated decisions for the customer",
                {"gdpr": "GDPR Art. 13(2)(f), 14(2)(g)"}, when="profiling", scope="purpose",
                example='profiling_effects "Which products you see first; prices do not depend on it."'),
)


def _missing(scope: str, present: Iterable[str], facts: Facts, jurisdictions: Iterable[str]
             ) -> list[tuple[Requirement, str]]:
    stated = set(present)
    declared = tuple(jurisdictions)
    out: list[tuple[Requirement, str]] = []
    for req in REQUIREMENTS:
        if req.scope != scope or req.item in stated or not facts.holds(req.when):
            continue
        for j in declared:
            if j in req.laws:
                out.append((req, j))
                break
    return out


def missing(section: NoticeSection, facts: Facts) -> list[tuple[Requirement, str]]:
    """(requirement, jurisdiction) for every required item the section does not state."""
    facts = replace(facts, other_sources=bool(section.get("source")))
    return _missing("notice", section.values, facts, section.jurisdictions)


def missing_in_purpose(present: Iterable[str], facts: Facts, jurisdictions: Iterable[str]
                       ) -> list[tuple[Requirement, str]]:
    """(requirement, jurisdiction) for every item a purpose with `facts` (Facts.of_purpose) must state
    and does not: `present` are its attribute names."""
    return _missing("purpose", present, facts, jurisdictions)


def required(item: str, section: NoticeSection, facts: Facts, jurisdictions: Iterable[str]) -> bool:
    """Does one of `jurisdictions` require notice attribute `item` (whether the section states it or not)?"""
    facts = replace(facts, other_sources=bool(section.get("source")))
    declared = tuple(jurisdictions)
    return any(r.item == item and r.scope == "notice" and facts.holds(r.when)
               and any(j in r.laws for j in declared) for r in REQUIREMENTS)


# ---------------------------------------------------------------- values
def valid(kind: str, values: tuple[object, ...]) -> str | None:
    """None when `values` fit attribute kind `kind`, else what is wrong (for an error message)."""
    if kind.endswith("?") and values == (ast.Ident("none"),):
        return None
    kind = kind.rstrip("?")
    if kind == "names":
        if not values or not all(isinstance(v, ast.Ident) for v in values):
            return "takes bare names separated by commas"
        return None
    if len(values) != 1:
        return "takes one value"
    v = values[0]
    if kind == "lang":
        return None if isinstance(v, ast.Ident) and LANG_TAG.fullmatch(v.text) else "takes a language tag like en or de"
    if not isinstance(v, str) or not v.strip():
        return 'takes a non-empty string in double quotes' + (" (or none)" if kind.endswith("?") else "")
    if kind == "link" and not _URL.fullmatch(v):
        return "takes an https:// URL (or mailto:, tel:)"
    if kind == "contact" and not (_URL.fullmatch(v) or _EMAIL.fullmatch(v)):
        return "takes an e-mail address or an https:// URL"
    if kind == "date":
        try:
            date.fromisoformat(v)
        except ValueError:
            return "takes a date written YYYY-MM-DD"
    return None


def href(value: str) -> str | None:
    """The link target for a contact or link value (an e-mail address becomes mailto:), or None."""
    if _URL.fullmatch(value):
        return value
    if _EMAIL.fullmatch(value):
        return "mailto:" + value
    return None


# ---------------------------------------------------------------- the section
@dataclass(frozen=True)
class NoticeSection:
    """The merged, checked notice attributes of a policy set. `values` maps an attribute to its text;
    an attribute set to `none` maps to "" (stated: there is none). Absent attributes are not keys."""

    values: Mapping[str, str] = field(default_factory=dict)
    jurisdictions: tuple[str, ...] = ()
    language: str = "en"
    locations: Mapping[str, Location] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        """The value, or None when absent or `none`."""
        return self.values.get(name) or None

    @property
    def declared(self) -> bool:
        return bool(self.values or self.jurisdictions)


def attributes(modules: Iterable[ast.Module]) -> list[ast.Attr]:
    """Every notice attribute of the set, in file order."""
    return [a for m in modules for n in m.notices for a in n.attrs]


def section_of(modules: Iterable[ast.Module]) -> NoticeSection:
    """The section of a checked policy set (the first setting of an attribute wins; checks report more)."""
    values: dict[str, str] = {}
    locations: dict[str, Location] = {}
    jurisdictions: tuple[str, ...] = ()
    language = "en"
    for a in attributes(modules):
        if a.name in locations or a.name not in ATTRS:
            continue
        locations[a.name] = a.loc
        if a.name == "jurisdictions":
            jurisdictions = tuple(dict.fromkeys(str(v) for v in a.values if str(v) in JURISDICTIONS))
        elif a.name == "language":
            language = str(a.values[0])
        elif a.values == (ast.Ident("none"),):
            values[a.name] = ""
        elif a.values and isinstance(a.values[0], str):
            values[a.name] = a.values[0]
    return NoticeSection(values, jurisdictions, language, locations)


__all__ = [
    "ATTRS",
    "JURISDICTIONS",
    "PURPOSE_TEXTS",
    "REQUIREMENTS",
    "SALE_OR_SHARE",
    "Facts",
    "NoticeSection",
    "Requirement",
    "attributes",
    "href",
    "missing",
    "missing_in_purpose",
    "required",
    "section_of",
    "valid",
]
