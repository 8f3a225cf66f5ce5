"""Deterministic synthetic customers for the demo upstream and the benchmarks.

No real person is described: names are drawn from short lists, e-mail domains are the reserved
`example.*` ones, IP addresses come from the documentation ranges (RFC 5737) and IBANs, although they
carry a valid mod-97 check, use made-up bank codes. The same `(n, seed)` always yields the same data.

A profile serialises (orjson, compact) to about 1 KB: `median_profile_bytes(generate_customers())`.
"""

from __future__ import annotations

import random
import statistics
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

Profile = dict[str, Any]

DEFAULT_SEED = 20240611


@dataclass(frozen=True)
class _Country:
    code: str
    weight: float
    language: str
    phone: str  # international prefix
    zip_digits: int
    cities: tuple[tuple[str, float, float], ...]  # name, lat, lon


# Weighted so that the rare countries make small (segment, country) groups (< 10 members) that the
# aggregate guards of a policy have to suppress.
COUNTRIES: tuple[_Country, ...] = (
    _Country("DE", 30, "de", "+49", 5, (("Berlin", 52.52, 13.405), ("Hamburg", 53.551, 9.993),
                                         ("München", 48.137, 11.575), ("Köln", 50.938, 6.96))),
    _Country("FR", 20, "fr", "+33", 5, (("Paris", 48.857, 2.352), ("Lyon", 45.764, 4.836),
                                         ("Marseille", 43.296, 5.37))),
    _Country("GB", 14, "en", "+44", 0, (("London", 51.507, -0.128), ("Manchester", 53.481, -2.243),
                                         ("Leeds", 53.8, -1.549))),
    _Country("ES", 11, "es", "+34", 5, (("Madrid", 40.417, -3.704), ("Barcelona", 41.385, 2.173))),
    _Country("IT", 10, "it", "+39", 5, (("Roma", 41.903, 12.496), ("Milano", 45.464, 9.19))),
    _Country("NL", 9, "nl", "+31", 4, (("Amsterdam", 52.368, 4.904), ("Utrecht", 52.091, 5.122))),
    _Country("LU", 0.8, "fr", "+352", 4, (("Luxembourg", 49.612, 6.13),)),
    _Country("MT", 0.6, "en", "+356", 0, (("Valletta", 35.899, 14.514),)),
    _Country("IS", 0.5, "is", "+354", 3, (("Reykjavík", 64.147, -21.943),)),
    _Country("LI", 0.3, "de", "+423", 4, (("Vaduz", 47.141, 9.521),)),
)

FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karla", "Leon",
    "Mia", "Noah", "Olivia", "Paul", "Rosa", "Samir", "Tara", "Umberto", "Vera", "Wim", "Yara", "Zoe",
    "Amélie", "Björn", "Chloé", "Diego", "Émile", "Farah", "Giulia", "Hannah", "Iker", "Julia", "Kai",
)
LAST_NAMES = (
    "Müller", "Schmidt", "Dubois", "Martin", "Smith", "Jones", "García", "López", "Rossi", "Bianchi",
    "de Vries", "Jansen", "Schneider", "Bernard", "Taylor", "Fernández", "Romano", "Bakker", "Weber",
    "Lefèvre", "Brown", "Moreno", "Ricci", "Visser", "Wagner", "Petit", "Wilson", "Navarro", "Conti",
)
STREETS = (
    "Hauptstraße", "Rue de la Paix", "High Street", "Calle Mayor", "Via Roma", "Kerkstraat",
    "Bahnhofstraße", "Avenue Victor Hugo", "Station Road", "Gran Vía", "Corso Italia", "Dorpsstraat",
)
CATEGORIES = (
    "shoes", "outdoor", "electronics", "books", "kitchen", "toys", "beauty", "garden", "sports",
    "fashion", "baby", "grocery", "music", "pets",
)
SEGMENTS = ("new", "regular", "loyal", "vip", "dormant")
SEGMENT_WEIGHTS = (20, 40, 22, 6, 12)
TIERS = ("none", "bronze", "silver", "gold", "platinum")
ALLERGIES = ("peanuts", "gluten", "lactose", "shellfish", "soy", "eggs", "tree nuts", "sesame")
CARD_BRANDS = ("visa", "mastercard", "amex", "maestro")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
IP_PREFIXES = ("192.0.2", "198.51.100", "203.0.113")  # RFC 5737 documentation ranges

_EPOCH = date(2015, 1, 1)
_TODAY = date(2024, 6, 1)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
    return "".join(c for c in folded if (c.isascii() and c.isalnum()) or c == ".")


def customer_id(index: int) -> str:
    """`customer_id(123) == "c-000123"`."""
    return f"c-{index:06d}"


def _iban(rng: random.Random, country: str) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    # ISO 13616 check digits: move country + "00" to the end, letters as numbers, 98 - (n mod 97).
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


def _zip(rng: random.Random, country: _Country) -> str:
    if country.code == "GB":
        return f"{rng.choice('EMNLSW')}{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice('ABDEFGH')}" \
               f"{rng.choice('JLNPQRS')}"
    if country.code == "MT":
        return f"VLT {rng.randint(1000, 1999)}"
    return "".join(rng.choice("0123456789") for _ in range(country.zip_digits))


def _purchases(rng: random.Random, index: int, prefs: list[str], created: date) -> list[Profile]:
    items = []
    span = max(1, (_TODAY - created).days)
    for k in range(rng.randint(3, 8)):
        category = rng.choice(prefs) if rng.random() < 0.7 else rng.choice(CATEGORIES)
        items.append({
            "order_id": f"o-{index:06d}-{k:02d}",
            "sku": f"{category[:3].upper()}-{rng.randint(10000, 99999)}",
            "price": round(rng.uniform(4.0, 400.0), 2),
            "date": (created + timedelta(days=rng.randrange(span))).isoformat(),
            "category": category,
        })
    items.sort(key=lambda item: str(item["date"]))
    return items


def make_customer(rng: random.Random, index: int) -> Profile:
    country = rng.choices(COUNTRIES, weights=[c.weight for c in COUNTRIES])[0]
    city, lat, lon = rng.choice(country.cities)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    local = _ascii(f"{first}.{last}".lower())
    created = _EPOCH + timedelta(days=rng.randrange((_TODAY - _EPOCH).days))
    prefs = rng.sample(CATEGORIES, rng.randint(1, 4))
    segment = rng.choices(SEGMENTS, weights=SEGMENT_WEIGHTS)[0]
    points = rng.randint(0, 20000) if segment != "new" else rng.randint(0, 500)
    return {
        "id": customer_id(index),
        "name": {"first": first, "last": last},
        "email": f"{local}{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}",
        "phone": f"{country.phone} {rng.randint(10, 999)} {rng.randint(100000, 9999999)}",
        "birth_date": date(rng.randint(1940, 2006), rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
        "address": {
            "street": f"{rng.choice(STREETS)} {rng.randint(1, 180)}",
            "city": city,
            "zip": _zip(rng, country),
            "country": country.code,
        },
        "location": {
            "lat": round(lat + rng.uniform(-0.08, 0.08), 6),
            "lon": round(lon + rng.uniform(-0.08, 0.08), 6),
        },
        "last_ip": f"{rng.choice(IP_PREFIXES)}.{rng.randint(1, 254)}",
        "preferences": {
            "categories": prefs,
            "newsletter": rng.random() < 0.45,
            "language": country.language,
        },
        "purchase_history": _purchases(rng, index, prefs, created),
        "loyalty": {"tier": TIERS[min(4, points // 4000)], "points": points},
        "health": {
            "allergies": rng.sample(ALLERGIES, rng.choices((0, 1, 2), weights=(60, 30, 10))[0]),
            "pregnancy": rng.random() < 0.03,
        },
        "payment": {
            "card_last4": f"{rng.randint(0, 9999):04d}",
            "card_brand": rng.choice(CARD_BRANDS),
            "iban": _iban(rng, country.code),
        },
        "segment": segment,
        "created_at": datetime.combine(created, datetime.min.time(), UTC)
        .replace(hour=rng.randint(0, 23), minute=rng.randint(0, 59), second=rng.randint(0, 59))
        .isoformat().replace("+00:00", "Z"),
    }


def generate_customers(n: int = 1000, seed: int = DEFAULT_SEED) -> list[Profile]:
    """`n` customers with ids `c-000000` … in order; deterministic for a given `(n, seed)`."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    return [make_customer(rng, i) for i in range(n)]


def serialize(profile: Profile) -> bytes:
    return orjson.dumps(profile)


def median_profile_bytes(customers: list[Profile]) -> float:
    return float(statistics.median(len(serialize(c)) for c in customers))


def segment_sizes(customers: list[Profile]) -> list[dict[str, Any]]:
    """Counts per (segment, country), sorted; the input of the aggregate endpoint."""
    counts: dict[tuple[str, str], int] = {}
    for c in customers:
        key = (str(c["segment"]), str(c["address"]["country"]))
        counts[key] = counts.get(key, 0) + 1
    return [{"segment": s, "country": k, "count": n} for (s, k), n in sorted(counts.items())]
