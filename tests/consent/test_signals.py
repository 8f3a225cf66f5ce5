"""Request consent signals: Sec-GPC and where the TC string comes from."""

from __future__ import annotations

import pytest

from veil.consent.signals import TCF_COOKIE, gpc_from_headers, tcf_from_request


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], False),
        (["1"], True),
        ([" 1\t"], True),
        (["0"], False),
        (["true"], False),
        (["1, 1"], False),
        (["01"], False),
        ([""], False),
        (["\u00a01"], False),  # only SP and HTAB are optional whitespace
        (["0", "1"], True),
        (["bogus", "0"], False),
    ],
)
def test_gpc_from_headers(values: list[str], expected: bool) -> None:
    assert gpc_from_headers(values) is expected


def test_tcf_from_cookie_by_default() -> None:
    cookie = "a=1; euconsent-v2=CPabc.Ydef ; other=x"
    assert TCF_COOKIE == "euconsent-v2"
    assert tcf_from_request({}, cookie) == "CPabc.Ydef"
    assert tcf_from_request([], cookie, cookie_name=None) is None
    assert tcf_from_request({}, None) is None
    assert tcf_from_request({}, "euconsent-v2x=nope; xeuconsent-v2=nope") is None


def test_tcf_cookie_quotes_empty_and_repeats() -> None:
    assert tcf_from_request({}, 'euconsent-v2="CPq"') == "CPq"
    assert tcf_from_request({}, "euconsent-v2=") is None
    assert tcf_from_request({}, "euconsent-v2=CPfirst; euconsent-v2=CPsecond") == "CPfirst"
    assert tcf_from_request({}, "gdpr=1; my-tc=CPmine", cookie_name="my-tc") == "CPmine"


def test_tcf_header_wins_over_cookie_and_is_case_insensitive() -> None:
    headers = {"X-TC-String": " CPheader "}
    assert tcf_from_request(headers, "euconsent-v2=CPcookie", header_name="x-tc-string") == "CPheader"
    pairs = [("x-tc-string", "CPheader"), ("accept", "*/*")]
    assert tcf_from_request(pairs, None, header_name="X-TC-String") == "CPheader"
    assert tcf_from_request([], "euconsent-v2=CPcookie", header_name="x-tc-string") == "CPcookie"
    assert tcf_from_request([("x-tc-string", "")], None, header_name="x-tc-string") is None


def test_tcf_header_repeated() -> None:
    same = [("x-tc", "CPa"), ("X-TC", "CPa")]
    assert tcf_from_request(same, None, header_name="x-tc") == "CPa"
    differing = [("x-tc", "CPa"), ("x-tc", "CPb")]
    assert tcf_from_request(differing, "euconsent-v2=CPcookie", header_name="x-tc") is None
