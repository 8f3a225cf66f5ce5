"""A strict decoder of IAB TCF v2.2/v2.3 TC strings, and the consent rule veil applies to them.

A TC string is base64url (no padding) segments joined by '.': the core segment first, then at most
one disclosed-vendors segment (type 1) and one publisher TC segment (type 3), in any order.

`decode(tc)` never raises. It returns a `TCFResult` whose `reason` is None when the string is
valid, else `"tcf_invalid:<detail>"` with one stable detail code:

    empty, too_long, empty_segment, bad_base64, truncated     the text cannot be read
    version                                                  not TCF version 2 (nothing decoded)
    language, country_code                                   a letter past 'Z'
    range_order, range_bounds                                a range with start > end, or an id of 0
                                                             or past the section's max vendor id
    restriction_type                                         publisher restriction type 3 (undefined)
    segment_type, segment_duplicate                          a segment other than 1 or 3, or repeated
    policy_version                                           TCF policy version < 4 (pre-v2.2 rules)
    not_service_specific                                     IsServiceSpecific = 0 (global scope is gone)
    internal                                                 a bug in this module; fails closed

The first problem found wins, structural ones before policy ones. `string` holds whatever was
decoded: the whole core segment (and every readable later segment) even when invalid, None only
when the core segment itself could not be read. Bad range entries are left out, never clipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from veil.consent._tcf_bits import BitReader, IdSet, Malformed

__all__ = [
    "REASON_PREFIX", "PublisherRestriction", "PublisherTC", "TCFResult", "TCString", "allows", "decode",
]

REASON_PREFIX = "tcf_invalid"
MAX_LENGTH = 32_768  # characters; real strings are a few hundred, cookies at most 4 KiB
MIN_POLICY_VERSION = 4  # TCF v2.2
CONSENT_ONLY_PURPOSES = frozenset({1, 3, 4, 5, 6})  # TCF v2.2: legitimate interest never suffices

_SEGMENT_FIELDS = {1: "disclosed_vendors", 3: "publisher_tc"}  # type 2 (allowed vendors) left in v2.2


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """Restriction type 0 = not allowed, 1 = require consent, 2 = require legitimate interest."""

    purpose_id: int
    restriction_type: int
    vendors: IdSet


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The publisher TC segment (type 3): the publisher's own purposes and its custom purposes."""

    consents: frozenset[int]
    legitimate_interests: frozenset[int]
    num_custom_purposes: int
    custom_consents: frozenset[int]
    custom_legitimate_interests: frozenset[int]


@dataclass(frozen=True, slots=True)
class TCString:
    tc_string: str
    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str  # "" when not two letters A-Z
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_stacks: bool
    special_features_opt_in: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_country_code: str  # "" when not two letters A-Z
    vendor_consents: IdSet
    vendor_legitimate_interests: IdSet
    publisher_restrictions: tuple[PublisherRestriction, ...]
    disclosed_vendors: IdSet | None = None
    publisher_tc: PublisherTC | None = None

    def to_json(self) -> dict[str, Any]:
        """The decoded fields as JSON-ready data; id sets become {"id": true} maps in id order."""
        vendor: dict[str, Any] = {
            "consents": _id_map(self.vendor_consents),
            "legitimate_interests": _id_map(self.vendor_legitimate_interests),
        }
        if self.disclosed_vendors is not None:
            vendor["disclosed"] = _id_map(self.disclosed_vendors)
        publisher: dict[str, Any] = {"restrictions": _restrictions_json(self.publisher_restrictions)}
        if self.publisher_tc is not None:
            pub = self.publisher_tc
            publisher["consents"] = _id_map(pub.consents)
            publisher["legitimate_interests"] = _id_map(pub.legitimate_interests)
            publisher["custom_purposes"] = {
                "consents": _id_map(pub.custom_consents),
                "legitimate_interests": _id_map(pub.custom_legitimate_interests),
            }
        return {
            "tc_string": self.tc_string,
            "version": self.version,
            "created": _iso(self.created),
            "last_updated": _iso(self.last_updated),
            "cmp_id": self.cmp_id,
            "cmp_version": self.cmp_version,
            "consent_screen": self.consent_screen,
            "consent_language": self.consent_language,
            "vendor_list_version": self.vendor_list_version,
            "policy_version": self.policy_version,
            "is_service_specific": self.is_service_specific,
            "use_non_standard_stacks": self.use_non_standard_stacks,
            "purpose_one_treatment": self.purpose_one_treatment,
            "publisher_country_code": self.publisher_country_code,
            "special_features_opt_in": _id_map(self.special_features_opt_in),
            "purpose": {
                "consents": _id_map(self.purpose_consents),
                "legitimate_interests": _id_map(self.purpose_legitimate_interests),
            },
            "vendor": vendor,
            "publisher": publisher,
        }


@dataclass(frozen=True, slots=True)
class TCFResult:
    string: TCString | None
    valid: bool
    reason: str | None  # None when valid

    @property
    def detail(self) -> str | None:
        """The detail code alone (`truncated`), or None when valid."""
        return self.reason.partition(":")[2] if self.reason else None


def decode(tc: str) -> TCFResult:
    """Decode and validate a TC string. Never raises; see the module docstring for reasons."""
    try:
        return _decode(tc)
    except Exception:  # the contract is "never raises": a bug here must fail closed, not 500
        return _invalid(None, "internal")


def allows(
    tc: TCString,
    *,
    purposes: Sequence[int],
    special_features: Sequence[int] = (),
    vendor_id: int | None = None,
    legitimate_interest: bool = False,
) -> bool:
    """Whether `tc` permits processing for every listed TCF purpose and special feature.

    The rule (all must hold; it does not look at `TCFResult.valid`, so check that first):
    - each purpose in `purposes` has consent, or, with `legitimate_interest=True`, has its legitimate
      interest established; legitimate interest never counts for purposes 1, 3, 4, 5 and 6, which
      TCF v2.2 allows on consent only;
    - each special feature in `special_features` is opted in;
    - when `vendor_id` is given: that vendor has consent (or, with `legitimate_interest=True`,
      legitimate interest), and for none of the listed purposes does a publisher restriction name
      the vendor with type 0 (not allowed), nor with a type that excludes the basis asked for:
      type 1 (require consent) when `legitimate_interest=True`, type 2 (require legitimate
      interest) when it is False.
    An empty `purposes` with no special features and no vendor allows trivially.
    """
    wanted = set(purposes)
    if legitimate_interest:
        if wanted & CONSENT_ONLY_PURPOSES or not wanted <= tc.purpose_legitimate_interests:
            return False
    elif not wanted <= tc.purpose_consents:
        return False
    if not set(special_features) <= tc.special_features_opt_in:
        return False
    if vendor_id is None:
        return True
    vendors = tc.vendor_legitimate_interests if legitimate_interest else tc.vendor_consents
    if vendor_id not in vendors:
        return False
    excluded = {0, 1} if legitimate_interest else {0, 2}
    return not any(
        r.purpose_id in wanted and r.restriction_type in excluded and vendor_id in r.vendors
        for r in tc.publisher_restrictions
    )


# -- decoding ---------------------------------------------------------------------------------


def _invalid(string: TCString | None, detail: str) -> TCFResult:
    return TCFResult(string=string, valid=False, reason=f"{REASON_PREFIX}:{detail}")


def _decode(tc: str) -> TCFResult:
    if not isinstance(tc, str) or not tc:
        return _invalid(None, "empty")
    if len(tc) > MAX_LENGTH:
        return _invalid(None, "too_long")
    segments = tc.split(".")
    if any(not s for s in segments):
        return _invalid(None, "empty_segment")
    problems: list[str] = []
    try:
        core = _read_core(tc, BitReader(segments[0]), problems)
    except Malformed as exc:
        return _invalid(None, exc.detail)
    if core is None:
        return _invalid(None, "version")
    extra = _read_segments(segments[1:], problems)
    string = TCString(**core, **extra)
    if string.policy_version < MIN_POLICY_VERSION:
        problems.append("policy_version")
    if not string.is_service_specific:
        problems.append("not_service_specific")
    if problems:
        return _invalid(string, problems[0])
    return TCFResult(string=string, valid=True, reason=None)


def _read_core(tc: str, r: BitReader, problems: list[str]) -> dict[str, Any] | None:
    version = r.uint(6)
    if version != 2:
        return None
    core: dict[str, Any] = {"tc_string": tc, "version": version}
    core["created"] = _datetime(r.uint(36))
    core["last_updated"] = _datetime(r.uint(36))
    core["cmp_id"] = r.uint(12)
    core["cmp_version"] = r.uint(12)
    core["consent_screen"] = r.uint(6)
    core["consent_language"] = _letters(r, problems, "language")
    core["vendor_list_version"] = r.uint(12)
    core["policy_version"] = r.uint(6)
    core["is_service_specific"] = r.flag()
    core["use_non_standard_stacks"] = r.flag()
    core["special_features_opt_in"] = r.bitfield(12)
    core["purpose_consents"] = r.bitfield(24)
    core["purpose_legitimate_interests"] = r.bitfield(24)
    core["purpose_one_treatment"] = r.flag()
    core["publisher_country_code"] = _letters(r, problems, "country_code")
    core["vendor_consents"] = _vendor_section(r, problems)
    core["vendor_legitimate_interests"] = _vendor_section(r, problems)
    core["publisher_restrictions"] = _restrictions(r, problems)
    return core


def _read_segments(segments: Iterable[str], problems: list[str]) -> dict[str, Any]:
    """The optional segments; stops at the first one that cannot be read."""
    found: dict[str, Any] = {}
    for segment in segments:
        try:
            r = BitReader(segment)
            kind = r.uint(3)
            key = _SEGMENT_FIELDS.get(kind)
            if key is None:
                problems.append("segment_type")
                break
            if key in found:
                problems.append("segment_duplicate")
                break
            found[key] = _vendor_section(r, problems) if key == "disclosed_vendors" else _publisher_tc(r)
        except Malformed as exc:
            problems.append(exc.detail)
            break
    return found


def _vendor_section(r: BitReader, problems: list[str]) -> IdSet:
    max_id = r.uint(16)
    if not r.flag():
        return r.bitfield_ids(max_id)
    return IdSet(_range_entries(r, problems, max_id))


def _range_entries(r: BitReader, problems: list[str], max_id: int) -> list[tuple[int, int]]:
    entries: list[tuple[int, int]] = []
    for _ in range(r.uint(12)):
        is_range = r.flag()
        start = r.uint(16)
        end = r.uint(16) if is_range else start
        if start > end:
            problems.append("range_order")
        elif start < 1 or end > max_id:
            problems.append("range_bounds")
        else:
            entries.append((start, end))
    return entries


def _restrictions(r: BitReader, problems: list[str]) -> tuple[PublisherRestriction, ...]:
    found = []
    for _ in range(r.uint(12)):
        purpose_id = r.uint(6)
        restriction_type = r.uint(2)
        vendors = IdSet(_range_entries(r, problems, 0xFFFF))
        if restriction_type == 3:
            problems.append("restriction_type")
            continue
        found.append(PublisherRestriction(purpose_id, restriction_type, vendors))
    return tuple(found)


def _publisher_tc(r: BitReader) -> PublisherTC:
    consents = r.bitfield(24)
    legitimate_interests = r.bitfield(24)
    num_custom = r.uint(6)
    return PublisherTC(
        consents=consents,
        legitimate_interests=legitimate_interests,
        num_custom_purposes=num_custom,
        custom_consents=r.bitfield(num_custom),
        custom_legitimate_interests=r.bitfield(num_custom),
    )


def _letters(r: BitReader, problems: list[str], detail: str) -> str:
    letters = r.letters(2)
    if letters is None:
        problems.append(detail)
        return ""
    return letters


def _datetime(deciseconds: int) -> datetime:
    return datetime.fromtimestamp(deciseconds // 10, tz=UTC)


# -- JSON -------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _id_map(ids: Iterable[int]) -> dict[str, bool]:
    return dict.fromkeys(map(str, sorted(ids)), True)


def _restrictions_json(restrictions: Iterable[PublisherRestriction]) -> dict[str, dict[str, int]]:
    """{purpose: {vendor: type}}; should a vendor appear twice for one purpose, the later entry wins."""
    by_purpose: dict[int, dict[int, int]] = {}
    for restriction in restrictions:
        vendors = by_purpose.setdefault(restriction.purpose_id, {})
        vendors.update(dict.fromkeys(restriction.vendors, restriction.restriction_type))
    return {
        str(purpose): {str(v): vendors[v] for v in sorted(vendors)}
        for purpose, vendors in sorted(by_purpose.items())
    }
