"""Consent signals on the request, over real sockets: Global Privacy Control (`Sec-GPC`) and IAB TCF
strings in the `euconsent-v2` cookie, with and against the consent store."""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import KEYS, Veil
from tests.e2e.test_reasons import assert_problem
from veil.consent.tcf import decode

REC = "personalize.recommendations"
ADS = "advertising.targeted"
CORPUS = Path("/work/shared/reference/tcf/golden.jsonl.gz")

# A real TC string from the golden corpus (CMP 1196, policy version 5, service-specific): consent for
# TCF purposes 1-11 and for vendor 755, no publisher restriction on 755. It admits advertising.targeted
# (`tcf purposes 1, 3, 4`, caller ad_partner = vendor 755).
TC_GRANTS = ("CQa7ZkAQa7ZkAEsACBFRCFFoAP_gAELAACiQIrwFwAFAANAAqABwAEAANAAdABFACZAFAAUQAtgBfADCAIMARwAygB4gJ0A"
             "XmAxkCFwENAIrghpAWAAUAA0ACoAHAAQAA0AB0AEUAJkAUABRAC2AF8AMIAgwBHADKAHiAnQBeYDGQIXAQ0AA.cYAAADgAAAA")
PURPOSE_CONSENTS_BIT = 152  # offset of the 24 PurposesConsent bits in the core segment (TCF v2 spec)


def without_purpose(tc: str, purpose: int) -> str:
    """The same TC string with the consent bit of one TCF purpose cleared (still a valid string)."""
    core, dot, rest = tc.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(core + "=" * (-len(core) % 4)))
    bit = PURPOSE_CONSENTS_BIT + purpose - 1
    raw[bit // 8] &= ~(0x80 >> (bit % 8)) & 0xFF
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=") + dot + rest


TC_NO_PURPOSE_3 = without_purpose(TC_GRANTS, 3)
TC_TRUNCATED = TC_GRANTS[:40]


def cookie(tc: str) -> dict[str, str]:
    return {"Cookie": f"theme=dark; euconsent-v2={tc}; other=1"}


def ads(v: Veil, subject: str, headers: dict[str, str] | list[tuple[str, str]] | None = None
        ) -> httpx.Response:
    return v.client.get(f"{v.url}/customers/{subject}",
                        headers=[("Veil-Key", KEYS["ad_partner"]), ("Veil-Purpose", ADS),
                                 *(headers.items() if isinstance(headers, dict) else headers or [])])


def raw_get(v: Veil, subject: str, extra: bytes) -> tuple[int, bytes]:
    """A request with header bytes httpx would refuse to send (leading/trailing whitespace)."""
    host, port = v.url.removeprefix("http://").split(":")
    req = (f"GET /customers/{subject} HTTP/1.1\r\nHost: x\r\nVeil-Key: {KEYS['ad_partner']}\r\n"
           f"Veil-Purpose: {ADS}\r\nConnection: close\r\n").encode() + extra + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ------------------------------------------------------------------ GPC
@pytest.mark.parametrize("value,opted_out", [
    ("1", True), ("0", False), ("true", False), ("1, 1", False), ("", False), ("01", False), ("yes", False),
])
def test_gpc_only_exactly_one_opts_out(sv: Veil, value: str, opted_out: bool) -> None:
    sv.consent("c-000200", "advertising")
    r = ads(sv, "c-000200", {"Sec-GPC": value})
    if opted_out:
        assert_problem(r, 403, "gpc_opt_out", "c-000200")
    else:
        assert r.status_code == 200, (value, r.text)


@pytest.mark.parametrize("raw", [b"Sec-GPC:  1 \r\n", b"Sec-GPC:\t1\t\r\n", b"sec-gpc: 1\r\n"])
def test_gpc_optional_whitespace_and_case(sv: Veil, raw: bytes) -> None:
    """RFC 9110 optional whitespace around the value is not part of it: ` 1 ` is `1`."""
    sv.consent("c-000201", "advertising")
    status, body = raw_get(sv, "c-000201", raw)
    assert status == 403 and orjson.loads(body)["reason"] == "gpc_opt_out"
    assert raw_get(sv, "c-000201", b"Sec-GPC: 0 \r\n")[0] == 200


def test_several_gpc_headers_count_if_any_is_one(sv: Veil) -> None:
    sv.consent("c-000202", "advertising")
    r = ads(sv, "c-000202", [("Sec-GPC", "0"), ("Sec-GPC", "1")])
    assert_problem(r, 403, "gpc_opt_out")
    assert ads(sv, "c-000202", [("Sec-GPC", "0"), ("Sec-GPC", "true")]).status_code == 200


def test_gpc_ignored_by_a_purpose_that_ignores_it(sv: Veil) -> None:
    sv.consent("c-000203", "personalization", notice_version=3)
    r = sv.get("/customers/c-000203", purpose=REC, headers={"Sec-GPC": "1"})
    assert r.status_code == 200 and r.json()["id"] == "c-000203"


def test_respect_gpc_rule_overrides_purpose_ignore(rv: Veil) -> None:
    rv.consent("c-000204", "personalization", notice_version=3)
    rv.consent("c-000204", "advertising", notice_version=3)
    assert rv.get("/customers/c-000204", purpose=REC).status_code == 200
    assert_problem(rv.get("/customers/c-000204", purpose=REC, headers={"Sec-GPC": "1"}), 403, "gpc_opt_out")


def test_gpc_applies_per_item_on_lists_for_purposes_that_honour_it(rv: Veil) -> None:
    for i in range(3):
        rv.consent(f"c-00000{i}", "advertising")
        rv.consent(f"c-00000{i}", "personalization", notice_version=3)

    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200, r.text
        assert r.headers["veil-decision"] == "filter"
        return [it["id"] for it in r.json()["items"]]

    plain = rv.client.get(f"{rv.url}/customers?limit=10", headers={"Veil-Key": KEYS["ad_partner"],
                                                                     "Veil-Purpose": ADS})
    assert ids(plain) == ["c-000000", "c-000001", "c-000002"]
    gpc = rv.client.get(f"{rv.url}/customers?limit=10", headers={"Veil-Key": KEYS["ad_partner"],
                                                                   "Veil-Purpose": ADS, "Sec-GPC": "1"})
    assert ids(gpc) == [] and gpc.json()["total"] == plain.json()["total"]
    rec = rv.get("/customers?limit=10", purpose=REC, headers={"Sec-GPC": "1"})  # gpc ignore: unaffected
    assert ids(rec) == ["c-000000", "c-000001", "c-000002"]
    log = (rv.dir / "audit" / "decisions.log").read_text()
    line = next(x for x in log.splitlines() if gpc.headers["veil-decision-id"] in x)
    rec_line = orjson.loads(line)
    assert rec_line["decision"] == "filter" and rec_line["filtered"] == 10 and rec_line["consent"]["gpc"] == "1"


def test_gpc_json_well_known(sv: Veil) -> None:
    r = sv.client.get(f"{sv.url}/.well-known/gpc.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"gpc", "lastUpdate"} and doc["gpc"] is True
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["lastUpdate"])
    head = sv.client.head(f"{sv.url}/.well-known/gpc.json")
    assert head.status_code == 200 and head.content == b""


# ------------------------------------------------------------------ TCF
def test_tcf_strings_decode_as_the_tests_assume() -> None:
    grants, no3, cut = decode(TC_GRANTS), decode(TC_NO_PURPOSE_3), decode(TC_TRUNCATED)
    assert grants.valid and grants.string is not None
    assert {1, 3, 4} <= grants.string.purpose_consents and 755 in grants.string.vendor_consents
    assert no3.valid and no3.string is not None
    assert no3.string.purpose_consents == grants.string.purpose_consents - {3}
    assert no3.string.vendor_consents == grants.string.vendor_consents
    assert not cut.valid and cut.reason == "tcf_invalid:truncated"
    if CORPUS.exists():  # the independent decoding the string was picked by
        with gzip.open(CORPUS, "rt") as fh:
            row = next(json.loads(x) for x in fh if TC_GRANTS in x)
        want = row["tests"]["to_json"]
        assert all(want["purpose"]["consents"].get(str(p)) for p in (1, 3, 4))
        assert want["vendor"]["consents"].get("755") is True
        assert not any("755" in want["publisher"]["restrictions"].get(str(p), {}) for p in (1, 3, 4))


def test_tcf_string_that_grants_admits_without_store_consent(sv: Veil) -> None:
    assert_problem(ads(sv, "c-000210"), 403, "consent_missing")
    r = ads(sv, "c-000210", cookie(TC_GRANTS))
    assert r.status_code == 200, r.text
    assert set(r.json()) <= {"id", "preferences", "segment", "birth_date", "location"}
    log = (sv.dir / "audit" / "decisions.log").read_text()
    rec = orjson.loads(next(x for x in log.splitlines() if r.headers["veil-decision-id"] in x))
    assert rec["consent"] == {"advertising": "missing", "tcf": "valid"} and TC_GRANTS not in log


def test_tcf_string_without_a_purpose_is_consent_missing(sv: Veil) -> None:
    assert_problem(ads(sv, "c-000211", cookie(TC_NO_PURPOSE_3)), 403, "consent_missing", TC_NO_PURPOSE_3)


@pytest.mark.parametrize("tc", [TC_TRUNCATED, "not-a-tc-string!", TC_GRANTS.replace("C", "@", 1)])
def test_tcf_malformed_string_is_tcf_invalid(sv: Veil, tc: str) -> None:
    assert_problem(ads(sv, "c-000212", cookie(tc)), 403, "tcf_invalid")


def test_store_withdrawal_beats_a_granting_tcf_string(sv: Veil) -> None:
    sv.consent("c-000213", "advertising", action="withdrawn")
    assert_problem(ads(sv, "c-000213", cookie(TC_GRANTS)), 403, "consent_withdrawn")


def test_store_consent_suffices_whatever_the_tcf_string(sv: Veil) -> None:
    sv.consent("c-000214", "advertising")
    assert ads(sv, "c-000214", cookie(TC_TRUNCATED)).status_code == 200
    assert ads(sv, "c-000214", cookie(TC_NO_PURPOSE_3)).status_code == 200


def test_gpc_beats_a_granting_tcf_string(sv: Veil) -> None:
    assert_problem(ads(sv, "c-000215", {**cookie(TC_GRANTS), "Sec-GPC": "1"}), 403, "gpc_opt_out")


def test_tcf_does_not_stand_in_for_a_store_only_purpose(sv: Veil) -> None:
    """personalize.recommendations reads consent from the store only: a TC string changes nothing."""
    r = sv.get("/customers/c-000216", purpose=REC, headers=cookie(TC_GRANTS))
    assert_problem(r, 403, "consent_missing")
