"""What looks like personal data, by field name, schema format or detector: one table for every tool.

    classify_name(path_names)       → Finding | None   `customer.email`, `dob`, `ssn`, `billing.name`
    classify_format(format)         → Finding | None   `format: email`, `ipv4`, ...
    DETECTOR_FINDINGS[detector]     → Finding          what a discovery detector's hit suggests

`veil check` (schema warnings), `veil coverage`, `veil init` and `veil discover` all read it, so a field
is "personal" for the same reasons everywhere. A Finding names a suggested category (a valid category
name of the policy language), whether that category is sensitive (GDPR Art. 9 / CCPA sensitive
personal information) and the statement to suggest when it would otherwise leave in clear.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    category: str  # suggested category name, e.g. "contact.email"
    sensitive: bool
    reason: str  # "name `email`", "format email", "x-veil-category", "detector email"
    suggest: str  # statement template: "hash {path}", "mask {path} last 4", "drop {path}", ...


# category → (sensitive, suggested statement)
CATEGORIES: dict[str, tuple[bool, str]] = {
    "contact.email": (False, "hash {path}"),
    "contact.phone": (False, "mask {path} last 4"),
    "contact.address": (False, "drop {path}"),
    "identity.name": (False, "drop {path}"),
    "identity.government_id": (True, "drop {path}"),
    "demographics.birth_date": (False, "generalize {path} year"),
    "demographics.gender": (False, "drop {path}"),
    "location.precise": (False, "drop {path}"),
    "online.ip": (False, "generalize {path} ip"),
    "online.identifier": (False, "hash {path}"),
    # a card or account number alone is neither a GDPR Art. 9 category nor CCPA sensitive personal
    # information (that needs the code or password that opens the account): mask it, do not auto-drop it
    "payment.card": (False, "mask {path} last 4"),
    "payment.bank_account": (False, "mask {path} last 4"),
    "health": (True, "drop {path}"),
    "special": (True, "drop {path}"),
    "credentials": (True, "drop {path}"),
}

# name tokens (lower case; camelCase and snake_case are split) → category. Multi-token entries match
# consecutive tokens (`date of birth`, `first name`).
_NAME_TOKENS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("email",), "contact.email"), (("e", "mail"), "contact.email"), (("mail",), "contact.email"),
    (("phone",), "contact.phone"), (("mobile",), "contact.phone"), (("msisdn",), "contact.phone"),
    (("telephone",), "contact.phone"), (("tel",), "contact.phone"), (("fax",), "contact.phone"),
    (("street",), "contact.address"), (("address",), "contact.address"), (("postcode",), "contact.address"),
    (("postal", "code"), "contact.address"), (("zip",), "contact.address"), (("zipcode",), "contact.address"),
    (("first", "name"), "identity.name"), (("last", "name"), "identity.name"),
    (("full", "name"), "identity.name"), (("given", "name"), "identity.name"),
    (("family", "name"), "identity.name"), (("surname",), "identity.name"), (("firstname",), "identity.name"),
    (("lastname",), "identity.name"), (("middle", "name"), "identity.name"), (("maiden", "name"), "identity.name"),
    (("ssn",), "identity.government_id"), (("passport",), "identity.government_id"),
    (("national", "id"), "identity.government_id"), (("tax", "id"), "identity.government_id"),
    (("nin",), "identity.government_id"), (("nino",), "identity.government_id"),
    (("driver", "license"), "identity.government_id"), (("drivers", "license"), "identity.government_id"),
    (("social", "security"), "identity.government_id"), (("tin",), "identity.government_id"),
    (("dob",), "demographics.birth_date"), (("birth",), "demographics.birth_date"),
    (("birthday",), "demographics.birth_date"), (("birthdate",), "demographics.birth_date"),
    (("gender",), "demographics.gender"), (("sex",), "demographics.gender"),
    (("latitude",), "location.precise"), (("longitude",), "location.precise"), (("lat",), "location.precise"),
    (("lng",), "location.precise"), (("lon",), "location.precise"), (("geo",), "location.precise"),
    (("geolocation",), "location.precise"), (("coordinates",), "location.precise"),
    (("ip",), "online.ip"), (("ipv4",), "online.ip"), (("ipv6",), "online.ip"),
    (("username",), "online.identifier"),
    (("device", "id"), "online.identifier"), (("idfa",), "online.identifier"), (("gaid",), "online.identifier"),
    (("iban",), "payment.bank_account"), (("bic",), "payment.bank_account"),
    (("account", "number"), "payment.bank_account"), (("routing", "number"), "payment.bank_account"),
    (("card", "number"), "payment.card"), (("pan",), "payment.card"), (("cvv",), "payment.card"),
    (("cvc",), "payment.card"), (("credit", "card"), "payment.card"),
    (("health", "data"), "health"), (("health", "conditions"), "health"), (("health", "record"), "health"),
    (("diagnosis",), "health"), (("diagnoses",), "health"), (("medical",), "health"), (("allergies",), "health"),
    (("medication",), "health"), (("disability",), "health"),
    (("religion",), "special"), (("ethnicity",), "special"), (("race",), "special"),
    (("sexual", "orientation"), "special"), (("biometric",), "special"), (("genetic",), "special"),
    (("political",), "special"), (("union", "membership"), "special"),
    (("password",), "credentials"), (("secret",), "credentials"), (("pin",), "credentials"),
)
# `name` alone is personal only inside something about a person (`customer.name`, not `product.name`)
PERSON_WORDS = frozenset({
    "customer", "customers", "user", "users", "person", "people", "owner", "contact", "holder", "recipient",
    "shipping", "billing", "employee", "member", "patient", "subscriber", "profile", "buyer",
    "payer", "sender", "cardholder", "applicant", "guardian", "author", "assignee", "reviewer",
})
_FORMATS: dict[str, str] = {
    "email": "contact.email", "idn-email": "contact.email", "phone": "contact.phone", "tel": "contact.phone",
    "iban": "payment.bank_account", "credit-card": "payment.card",
    "ssn": "identity.government_id",
}
DETECTOR_FINDINGS: dict[str, str] = {
    "email": "contact.email", "phone": "contact.phone", "iban": "payment.bank_account", "card": "payment.card",
    "ipv4": "online.ip", "ipv6": "online.ip", "birth_date": "demographics.birth_date",
    "postal_code": "contact.address", "national_id": "identity.government_id",
}

# a last word that makes a name about something else: `phone_number_sid`, `email_verified`, `ip_count`
_NOT_THE_VALUE = frozenset({
    "sid", "id", "ids", "uuid", "url", "urls", "uri", "href", "link", "count", "status", "type", "types", "kind",
    "enabled", "verified", "required", "requirements", "mappings", "lists", "list", "format", "formats", "mode",
    "method", "methods", "policy", "settings", "config", "visibility", "validation", "provider", "source",
    "consent", "opt", "in", "out", "preference", "preferences", "template", "templates", "capabilities",
    "limit", "limits", "range", "ranges", "check", "checks", "metrics", "max", "min", "allowed",
    # seen in published API descriptions: the text of a message (`email_subject`, `email_footer_text`), a
    # setting (`strong_password_requirement`), an event about a thing (`ip_allowlist.created`), a domain
    # (`email_domain`)
    "requirement", "subject", "message", "text", "body", "footer", "created", "updated", "deleted", "activated",
    "deactivated", "domain",
})

_SPLIT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_BY_FIRST: dict[str, list[tuple[tuple[str, ...], str]]] = {}
for _pattern, _category in _NAME_TOKENS:
    _BY_FIRST.setdefault(_pattern[0], []).append((_pattern, _category))


def tokens(name: str) -> list[str]:
    """`dateOfBirth` → date, of, birth; `billing_address_line1` → billing, address, line, 1."""
    return [t.lower() for t in _SPLIT.findall(name)]


def finding(category: str, reason: str) -> Finding:
    sensitive, suggest = CATEGORIES.get(category, (False, "drop {path}"))
    return Finding(category, sensitive, reason, suggest)


def classify_name(names: Sequence[str], context: Sequence[str] = ()) -> Finding | None:
    """A field whose own name (the last of `names`, the keys from the root) looks personal. `context`:
    more words about where it is (a route's path segments: `/customers/{id}` makes a top-level `name`
    a person's)."""
    if not names:
        return None
    hit = _by_own_name(names[-1])
    if hit is not None:
        return hit
    last = tokens(names[-1])
    if last and last[-1] == "name" and len(last) <= 2:
        around = {t for n in names[:-1] for t in tokens(n)} | set(last[:-1])
        if len(names) == 1:
            around |= {t for n in context for t in tokens(n)}
        if around & PERSON_WORDS:
            return finding("identity.name", f"name `{names[-1]}` of a person")
    return None


@functools.lru_cache(maxsize=4096)
def _by_own_name(name: str) -> Finding | None:
    last = tokens(name)
    if not last or (len(last) > 1 and (last[-1] in _NOT_THE_VALUE or "per" in last)):
        return None
    best: tuple[int, int, str] | None = None  # (position, -length, category): the earliest match wins
    for i, tok in enumerate(last):
        for pattern, category in _BY_FIRST.get(tok, ()):
            n = len(pattern)
            if tuple(last[i:i + n]) == pattern and (best is None or (i, -n) < best[:2]):
                best = (i, -n, category)
    return finding(best[2], f"name `{name}`") if best is not None else None


def classify_format(fmt: str | None) -> Finding | None:
    if not fmt:
        return None
    category = _FORMATS.get(fmt.lower())
    return finding(category, f"format {fmt}") if category else None


def classify_detector(name: str) -> Finding:
    return finding(DETECTOR_FINDINGS[name], f"detector {name}")


def valid_category(name: str) -> bool:
    return re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", name) is not None


__all__ = ["CATEGORIES", "DETECTOR_FINDINGS", "PERSON_WORDS", "Finding", "classify_detector", "classify_format",
           "classify_name", "finding", "tokens", "valid_category"]
