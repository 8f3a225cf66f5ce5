"""Detectors: does one JSON value look like a kind of personal data? Values are read in memory and
never kept: a detector returns a name (`email`, `phone`, ...) or None.

    detect(value) → str | None       the first detector that matches, in the order below

Each detector is a cheap anchored pattern (most strings fail it in well under a microsecond) and,
for the candidates that pass, a validation by a maintained library where one exists:

- email: a dot-atom local part @ a dotted domain with a 2-63 letter top level (the HTML standard's
  pattern), at most 254 characters;
- ipv4 / ipv6: a dotted quad / hex groups with `:`, validated by `ipaddress` (stdlib);
- birth_date: YYYY-MM-DD, DD.MM.YYYY, DD/MM/YYYY or MM/DD/YYYY (a date, no time) that is a real
  date 13 to 120 years ago;
- iban: two letters, two digits and 10-30 letters or digits (spaces allowed) with valid ISO 13616
  check digits (mod 97);
- card: 13-19 digits (groups separated by spaces or dashes, or a JSON integer) with a card network's
  prefix and a valid Luhn digit (python-stdnum `luhn`);
- national_id: the written form of a US SSN, FR NIR, ES DNI/NIE, IT codice fiscale, DE Steuer-IdNr,
  BR CPF, SE personnummer, BE national number, FI HETU, CA SIN, IN Aadhaar or CN resident id,
  validated by python-stdnum's module for it (check digits, and the date where the number has one;
  the SSN has no check digit: its area/group/serial rules);
- phone: `+` and 7-15 digits (E.164, separators allowed) of a possible length for its country
  calling code; national formats (7-15 digits with separators, or a leading trunk 0) that are valid
  numbers in one of `regions` — both by Google's libphonenumber data (`phonenumbers`);
- postal_code: US ZIP(+4), 5-digit European codes, UK, CA, NL, PL, PT, JP, BR and MT formats
  (strings only; no checksum exists).

Bare digit strings are never phone numbers here (order and customer ids look the same); a 4-digit
string is never a postal code (years, card endings). Hit rates per field, not single hits, are what
the report reads: a field of random 9-digit ids passes some checksum now and then, a field of real
identifiers nearly always.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from datetime import date
from typing import Any

DETECTORS = ("email", "ipv4", "ipv6", "birth_date", "iban", "card", "national_id", "phone", "postal_code")

_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_EU_DATE = re.compile(r"(\d{2})([./])(\d{2})\2(\d{4})")
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}")
_CARD = re.compile(r"\d{4}(?:[ -]?\d{1,4}){2,4}(?:[ -]?\d{1,3})?")
_E164 = re.compile(r"\+\d[\d ()./-]{5,22}")
_NATIONAL_PHONE = re.compile(r"\(?\d[\d ()./-]{5,20}\d")
_POSTAL = re.compile(
    r"\d{5}(?:-\d{4})?"  # US ZIP(+4); DE, FR, ES, IT, FI, ... 5 digits
    r"|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"  # UK
    r"|[A-Z]\d[A-Z] ?\d[A-Z]\d"  # CA
    r"|\d{4} ?[A-Z]{2}"  # NL
    r"|\d{2}-\d{3}|\d{4}-\d{3}|\d{3}-\d{4}|\d{5}-\d{3}"  # PL, PT, JP, BR
    r"|[A-Z]{3} ?\d{4}")  # MT
_DIGITS = re.compile(r"\d")
_SEPARATORS = re.compile(r"[ ()./-]")
_B36 = {c: str(int(c, 36)) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}

# card network prefixes (IIN ranges): Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9])|35|3(?:0[0-5]|[689])"
                          r"|62|5[06-9]|6\d")

# national identifiers: written form → python-stdnum module; one alternation, matched once
_NATIONAL_FORMS: tuple[tuple[str, str], ...] = (
    (r"\d{3}-\d{2}-\d{4}", "stdnum.us.ssn"),
    (r"[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}", "stdnum.fr.nir"),
    (r"\d{8}-?[A-Z]", "stdnum.es.dni"),
    (r"[XYZ]-?\d{7}-?[A-Z]", "stdnum.es.nie"),
    (r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]", "stdnum.it.codicefiscale"),
    (r"[1-9]\d{10}|[1-9]\d \d{3} \d{3} \d{3}", "stdnum.de.idnr"),
    (r"\d{3}\.\d{3}\.\d{3}-\d{2}", "stdnum.br.cpf"),
    (r"(?:\d{2})?\d{6}[-+]\d{4}", "stdnum.se.personnummer"),
    (r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}", "stdnum.be.nn"),
    (r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", "stdnum.fi.hetu"),
    (r"\d{3}[ -]\d{3}[ -]\d{3}", "stdnum.ca.sin"),
    (r"[2-9]\d{3} \d{4} \d{4}", "stdnum.in_.aadhaar"),
    (r"\d{17}[\dX]", "stdnum.cn.ric"),
)
_NATIONAL = re.compile("|".join(f"(?P<n{i}>{form})" for i, (form, _) in enumerate(_NATIONAL_FORMS)))


@functools.cache
def _validator(module: str) -> Callable[[str], bool]:
    import importlib

    mod: Any = importlib.import_module(module)
    fn: Callable[[str], bool] = mod.is_valid
    return fn


def _email(s: str) -> bool:
    return len(s) <= 254 and _EMAIL.fullmatch(s) is not None


def _ipv4(s: str) -> bool:
    if _IPV4.fullmatch(s) is None:
        return False
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def _ipv6(s: str) -> bool:
    if s.count(":") < 2 or _IPV6.fullmatch(s) is None:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _birth_date(s: str, today: date) -> bool:
    m = _ISO_DATE.fullmatch(s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    else:
        m = _EU_DATE.fullmatch(s)
        if m is None:
            return False
        a, b, y = int(m.group(1)), int(m.group(3)), int(m.group(4))
        d, mo = (b, a) if m.group(2) == "/" and a <= 12 < b else (a, b)  # 12/31/1990: US order
    try:
        when = date(y, mo, d)
    except ValueError:
        return False
    age = today.year - when.year - ((today.month, today.day) < (when.month, when.day))
    return 13 <= age <= 120


def _iban(s: str) -> bool:
    if _IBAN.fullmatch(s) is None:
        return False
    # ISO 13616: the country code and check digits moved to the end, letters as numbers, ISO 7064
    # mod 97-10. Not each country's BBAN layout: python-stdnum's `iban` insists on it, and data from
    # systems that generate or mask account numbers often does not follow it.
    # (ISO 7064 mod 97-10 is one line; python-stdnum's `iso7064.mod_97_10` took 3x as long here)
    compact = s.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    return int("".join(_B36[c] for c in compact[4:] + compact[:4])) % 97 == 1


def _card(s: str) -> bool:
    if _CARD.fullmatch(s) is None:
        return False
    digits = s.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or _CARD_PREFIX.match(digits) is None:
        return False
    return _validator("stdnum.luhn")(digits)


def _national(s: str) -> bool | None:
    """True: a valid national identifier; False: written like one but invalid; None: not like one."""
    m = _NATIONAL.fullmatch(s)
    if m is None or m.lastgroup is None:
        return None
    # several forms may fit (11 digits: DE Steuer-IdNr only; 9 with separators: CA SIN or, with dashes, ...)
    for i, (form, module) in enumerate(_NATIONAL_FORMS):
        if (i == int(m.lastgroup[1:]) or re.fullmatch(form, s)) and _validator(module)(s):
            return True
    return False


@functools.cache
def _phonenumbers() -> Any:
    import phonenumbers

    return phonenumbers


@functools.cache
def _possible_lengths(cc: int) -> frozenset[int] | None:
    """libphonenumber's possible national number lengths for a calling code (None: no such code)."""
    pn = _phonenumbers()
    regions = pn.COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not regions:
        return None
    meta = pn.PhoneMetadata.metadata_for_region_or_calling_code(cc, regions[0])
    if meta is None:
        return None
    return frozenset(meta.general_desc.possible_length)


def _international(s: str) -> bool:
    """`+` and a number of a possible length for its country calling code (libphonenumber's metadata;
    its full parser costs about 50 times as much and adds nothing for this question)."""
    if _E164.fullmatch(s) is None:
        return False
    digits = _SEPARATORS.sub("", s[1:])
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        return False
    for n in (1, 2, 3):  # calling codes are prefix-free
        lengths = _possible_lengths(int(digits[:n]))
        if lengths is not None:
            return len(digits) - n in lengths
    return False


def _phone(s: str, regions: tuple[str, ...]) -> bool:
    if s.startswith("+"):
        return _international(s)
    if _NATIONAL_PHONE.fullmatch(s) is None:
        return False
    digits = len(_DIGITS.findall(s))
    separated = any(c in s for c in " ()./-")
    if not 7 <= digits <= 15 or not (separated or s.startswith("0")):
        return False
    pn = _phonenumbers()
    for region in regions:  # a national format needs a number valid in one of the regions
        try:
            number = pn.parse(s, region)
        except pn.NumberParseException:
            continue
        if pn.is_valid_number(number):
            return True
    return False


def _postal(s: str) -> bool:
    return _POSTAL.fullmatch(s) is not None


class Detect:
    """`detect(value)` with the phone regions and today's date fixed (birth dates are relative)."""

    def __init__(self, regions: tuple[str, ...] = ("US", "GB", "DE", "FR"), today: date | None = None) -> None:
        self.regions = tuple(r.upper() for r in regions)
        self.today = today or date.today()

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, str):
            return self.string(value)
        if type(value) is int and 10**12 <= value < 10**19:
            return "card" if _card(str(value)) else None
        return None

    def string(self, s: str) -> str | None:
        n = len(s)
        if n < 5 or n > 254:
            return None
        if "@" in s:
            return "email" if _email(s) else None
        first = s[0]
        if first.isdigit() or first in "+(":
            return self._numeric(s, first)
        if first.isupper():
            if s[1].isupper() and s[2].isdigit() and _iban(s):
                return "iban"
            national = _national(s) if n in (9, 10, 11, 16) else None
            if national is not None:
                return "national_id" if national else None
            return "postal_code" if n <= 8 and _postal(s) else None
        if ":" in s and _ipv6(s):
            return "ipv6"
        return None

    def _numeric(self, s: str, first: str) -> str | None:
        if ":" in s:
            return "ipv6" if _ipv6(s) else None
        if first.isdigit():
            if _ipv4(s):
                return "ipv4"
            if _ISO_DATE.fullmatch(s) or _EU_DATE.fullmatch(s):  # a date is a birth date or nothing
                return "birth_date" if _birth_date(s, self.today) else None
            if _card(s):
                return "card"
            national = _national(s)
            if national is not None:
                return "national_id" if national else None
            if _postal(s):
                return "postal_code"
        return "phone" if _phone(s, self.regions) else None


__all__ = ["DETECTORS", "Detect"]
