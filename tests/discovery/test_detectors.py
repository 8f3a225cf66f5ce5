"""Each detector's positives and its near misses (values that look alike and are not)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from veil.discovery.detectors import DETECTORS, Detect

detect = Detect(("US", "GB", "DE", "FR"), today=date(2026, 12, 1))

POSITIVES: dict[str, list[Any]] = {
    "email": ["anna.lefevre41@example.net", "x+tag@sub.example.co.uk", "O'Brien@example.ie"],
    "ipv4": ["203.0.113.227", "10.0.0.1", "255.255.255.255"],
    "ipv6": ["2001:db8::1", "fe80::1ff:fe23:4567:890a", "::ffff:192.0.2.1"],
    "birth_date": ["1988-01-03", "03.01.1988", "12/31/1990", "31/12/1990", "1907-06-01"],
    "iban": ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "FR1420041010050500013M02606",
             "NL91ABNA0417164300"],
    "card": ["4111111111111111", "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005",
             "6011111111111117", 4111111111111111],
    "national_id": [
        "536-90-4399",  # US SSN
        "295109912611193",  # FR NIR
        "12345678Z", "X2482300W",  # ES DNI, NIE
        "RCCMNL83S18D969H",  # IT codice fiscale
        "36574261809",  # DE Steuer-IdNr
        "390.533.447-05",  # BR CPF
        "880320-0016",  # SE personnummer
        "85.07.30-033.28",  # BE national number
        "131052-308T",  # FI HETU
        "130 692 544",  # CA SIN
        "2345 6789 0124",  # IN Aadhaar
        "360426199101010071",  # CN resident id
    ],
    "phone": ["+14155552671", "+44 20 7946 0958", "+49 30 1234567", "+33 6 12 34 56 78", "(415) 555-2671",
              "030 12345678", "06 12 34 56 78", "020 7946 0958"],
    "postal_code": ["27962", "94105-1234", "SW1A 1AA", "K1A 0B1", "1012 AB", "00-950", "1000-001", "VLT 1234"],
}

NEAR_MISSES: dict[str, list[Any]] = {
    "email": ["anna@", "@example.com", "a b@x.com", "user@localhost", "user@@example.com", "user@example.c",
              "mailto:user"],
    "ipv4": ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4x"],
    "ipv6": ["12:30:00", "fe80:::1", "hello:world:x"],
    "birth_date": ["2024-01-05", "2020-06-30", "1988-13-01", "1988-02-30", "1988-01-03T10:00:00Z", "1850-01-01",
                   "2026-12-01"],
    "iban": ["DE89370400440532013001", "DE89 3704", "XX00123"],
    "card": ["4111111111111112", "1234567812345678", "411111111111", "9111111111111111", 4111111111111112,
             "4111-1111-1111-1112"],
    "national_id": ["536-00-4399", "000-12-3456", "12345678A", "X1234567A", "RCCMNL83S18D969X", "36574261808",
                    "390.533.447-06", "880320-0017", "130 692 545"],
    "phone": ["+1234", "+999 1234567890", "4155552671", "1234567", "0000000000", "12345678901234567890",
              "call me"],
    "postal_code": ["1234", "123456", "ABCDE", "2026", 12345, "SW1A", "9783"],
}


@pytest.mark.parametrize("kind, value", [(k, v) for k, vs in POSITIVES.items() for v in vs])
def test_positives(kind: str, value: Any) -> None:
    assert detect(value) == kind


@pytest.mark.parametrize("kind, value", [(k, v) for k, vs in NEAR_MISSES.items() for v in vs])
def test_near_misses(kind: str, value: Any) -> None:
    assert detect(value) != kind


@pytest.mark.parametrize("value", [
    None, True, 3.14, 42, "", "visa", "c-000123", "o-000001-02", "MUS-35319", "hello world", "Via Roma 57",
    "2023-03-23T02:56:19Z", "personalize.recommendations", "ord_000001", "TRK6545220609", "EUR", "v1.2.3",
    {"a": 1}, [1, 2],
])
def test_ordinary_values_match_nothing(value: Any) -> None:
    assert detect(value) is None


def test_every_detector_is_tested() -> None:
    assert set(POSITIVES) == set(NEAR_MISSES) == set(DETECTORS)


def test_national_phone_formats_follow_the_regions() -> None:
    assert Detect(("US",))("030 12345678") is None  # a German number is not a valid US one
    assert Detect(("DE",))("030 12345678") == "phone"
    assert Detect(("US",))("+49 30 1234567") == "phone"  # international numbers need no region
