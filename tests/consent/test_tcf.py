"""The TC string decoder: the 1,024-string golden corpus, hand-built edge cases, fuzzing, and the CLI."""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.cli import main
from veil.consent.tcf import TCFResult, TCString, allows, decode

CORPUS = Path(__file__).parents[2].parent / "shared/reference/tcf/golden.jsonl.gz"
GOLDEN_FIELDS = (
    "version", "cmp_id", "cmp_version", "consent_screen", "consent_language", "vendor_list_version",
    "policy_version", "is_service_specific", "use_non_standard_stacks", "purpose_one_treatment",
    "publisher_country_code", "created", "last_updated", "special_features_opt_in", "purpose", "vendor",
    "publisher",
)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# -- a tiny test-only encoder -------------------------------------------------------------------


def _bits(value: int, width: int) -> str:
    assert 0 <= value < (1 << width)
    return format(value, f"0{width}b")


def _bitfield(ids: Iterable[int], width: int) -> str:
    chosen = set(ids)
    return "".join("1" if i in chosen else "0" for i in range(1, width + 1))


def _b64(bits: str) -> str:
    bits += "0" * (-len(bits) % 8)  # whole bytes, as real encoders do
    bits += "0" * (-len(bits) % 6)
    return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


Entry = tuple[int, int]  # (start, end); start == end is a single id


def _ranges(entries: Sequence[Entry]) -> str:
    out = _bits(len(entries), 12)
    for start, end in entries:
        out += "1" + _bits(start, 16) + _bits(end, 16) if start != end else "0" + _bits(start, 16)
    return out


def _vendors(
    ids: Sequence[int] = (), *, ranges: Sequence[Entry] | None = None, max_id: int | None = None
) -> str:
    if ranges is not None:
        top = max_id if max_id is not None else max((e for _, e in ranges), default=0)
        return _bits(top, 16) + "1" + _ranges(ranges)
    top = max_id if max_id is not None else max(ids, default=0)
    return _bits(top, 16) + "0" + _bitfield(ids, top)


@dataclass
class Core:
    version: int = 2
    created_ds: int = 17_011_296_000  # 2023-11-28T00:00:00Z in deciseconds
    updated_ds: int = 17_349_120_005  # 2024-12-23T00:00:00.5Z
    cmp_id: int = 7
    cmp_version: int = 3
    consent_screen: int = 1
    language: tuple[int, int] = (4, 13)  # "EN"
    vendor_list_version: int = 82
    policy_version: int = 5
    service_specific: int = 1
    non_standard_stacks: int = 0
    special_features: Sequence[int] = (1,)
    purposes: Sequence[int] = (1, 2, 3, 4, 7)
    purposes_li: Sequence[int] = (2, 7, 8)
    purpose_one_treatment: int = 0
    country: tuple[int, int] = (3, 4)  # "DE"
    vendor_consents: str = field(default_factory=lambda: _vendors([2, 5, 6, 7, 10]))
    vendor_li: str = field(default_factory=lambda: _vendors(ranges=[(5, 5), (8, 12)]))
    restrictions: Sequence[tuple[int, int, Sequence[Entry]]] = ()

    def bits(self) -> str:
        out = _bits(self.version, 6) + _bits(self.created_ds, 36) + _bits(self.updated_ds, 36)
        out += _bits(self.cmp_id, 12) + _bits(self.cmp_version, 12) + _bits(self.consent_screen, 6)
        out += _bits(self.language[0], 6) + _bits(self.language[1], 6)
        out += _bits(self.vendor_list_version, 12) + _bits(self.policy_version, 6)
        out += str(self.service_specific) + str(self.non_standard_stacks)
        out += _bitfield(self.special_features, 12) + _bitfield(self.purposes, 24)
        out += _bitfield(self.purposes_li, 24) + str(self.purpose_one_treatment)
        out += _bits(self.country[0], 6) + _bits(self.country[1], 6)
        out += self.vendor_consents + self.vendor_li
        out += _bits(len(self.restrictions), 12)
        for purpose, kind, entries in self.restrictions:
            out += _bits(purpose, 6) + _bits(kind, 2) + _ranges(entries)
        return out

    def encode(self) -> str:
        return _b64(self.bits())


def _publisher_tc(consents: Sequence[int], li: Sequence[int], custom: Sequence[int], custom_li: Sequence[int],
                  num_custom: int) -> str:
    bits = _bits(3, 3) + _bitfield(consents, 24) + _bitfield(li, 24) + _bits(num_custom, 6)
    return _b64(bits + _bitfield(custom, num_custom) + _bitfield(custom_li, num_custom))


def _disclosed(ids: Sequence[int]) -> str:
    return _b64(_bits(1, 3) + _vendors(ids))


def _decoded(tc: str) -> TCString:
    result = decode(tc)
    assert result.string is not None, result.reason
    return result.string


def _assert_invalid(result: TCFResult, detail: str) -> None:
    assert (result.valid, result.reason, result.detail) == (False, f"tcf_invalid:{detail}", detail)


# -- the golden corpus --------------------------------------------------------------------------


def _corpus() -> list[dict[str, Any]]:
    if not CORPUS.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"TCF golden corpus missing at {CORPUS}")
        pytest.skip("TCF golden corpus (shared/reference/tcf) not present")
    return _load_corpus()


@functools.cache
def _load_corpus() -> list[dict[str, Any]]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_golden_corpus_decodes_field_for_field() -> None:
    rows = _corpus()
    assert len(rows) == 1024
    mismatches: list[str] = []
    for n, row in enumerate(rows):
        want = row["tests"]["to_json"]
        result = decode(row["tc_string"])
        assert result.string is not None, (n, result.reason)
        got = result.string.to_json()
        mismatches += [f"row {n}: {name}" for name in GOLDEN_FIELDS if got[name] != want[name]]
        policy_ok = want["policy_version"] >= 4 and want["is_service_specific"]
        assert result.valid is policy_ok, (n, result.reason)
        if not policy_ok:
            assert result.reason in ("tcf_invalid:policy_version", "tcf_invalid:not_service_specific")
    assert not mismatches, mismatches[:20]


def test_golden_corpus_policy_version_2_string_is_rejected_but_decoded() -> None:
    rows = [r for r in _corpus() if r["tests"]["to_json"]["policy_version"] == 2]
    assert len(rows) == 1
    result = decode(rows[0]["tc_string"])
    _assert_invalid(result, "policy_version")
    assert result.string is not None and result.string.policy_version == 2
    assert result.string.to_json()["vendor"] == rows[0]["tests"]["to_json"]["vendor"]


# -- hand-built strings -------------------------------------------------------------------------


def test_core_fields_decode() -> None:
    result = decode(Core().encode())
    assert (result.valid, result.reason) == (True, None)
    tc = result.string
    assert tc is not None
    assert tc.version == 2 and tc.cmp_id == 7 and tc.cmp_version == 3 and tc.consent_screen == 1
    assert tc.created == datetime(2023, 11, 28, tzinfo=UTC)
    assert tc.last_updated == datetime(2024, 12, 23, tzinfo=UTC)  # deciseconds floor to the second
    assert (tc.consent_language, tc.publisher_country_code) == ("EN", "DE")
    assert tc.vendor_list_version == 82 and tc.policy_version == 5
    assert tc.is_service_specific and not tc.use_non_standard_stacks and not tc.purpose_one_treatment
    assert tc.special_features_opt_in == {1}
    assert tc.purpose_consents == {1, 2, 3, 4, 7} and tc.purpose_legitimate_interests == {2, 7, 8}
    assert set(tc.vendor_consents) == {2, 5, 6, 7, 10}
    assert set(tc.vendor_legitimate_interests) == {5, 8, 9, 10, 11, 12}
    assert tc.publisher_restrictions == () and tc.publisher_tc is None and tc.disclosed_vendors is None


def test_to_json_shape() -> None:
    tc = Core(restrictions=[(2, 1, [(5, 6)]), (7, 0, [(10, 10)])]).encode()
    out = _decoded(tc).to_json()
    assert out["tc_string"] == tc
    assert out["created"] == "2023-11-28T00:00:00Z" and out["last_updated"] == "2024-12-23T00:00:00Z"
    assert out["special_features_opt_in"] == {"1": True}
    assert out["purpose"]["legitimate_interests"] == {"2": True, "7": True, "8": True}
    assert list(out["vendor"]["consents"]) == ["2", "5", "6", "7", "10"]
    assert out["publisher"] == {"restrictions": {"2": {"5": 1, "6": 1}, "7": {"10": 0}}}
    json.dumps(out)  # JSON-ready


def test_range_encoded_vendors_and_restrictions() -> None:
    core = Core(
        vendor_consents=_vendors(ranges=[(1, 3), (700, 700), (650, 652)], max_id=800),
        restrictions=[(1, 0, [(2, 2)]), (2, 2, [(3, 3), (10, 20)])],
    )
    tc = _decoded(core.encode())
    assert set(tc.vendor_consents) == {1, 2, 3, 650, 651, 652, 700}
    assert 651 in tc.vendor_consents and 653 not in tc.vendor_consents and 0 not in tc.vendor_consents
    assert [(r.purpose_id, r.restriction_type, set(r.vendors)) for r in tc.publisher_restrictions] == [
        (1, 0, {2}), (2, 2, {3, *range(10, 21)}),
    ]


def test_huge_ranges_stay_cheap() -> None:
    entries = [(1, 65535)] * 300  # 300 ranges over every vendor id, twice as restrictions too
    core = Core(vendor_consents=_vendors(ranges=entries, max_id=65535), restrictions=[(1, 1, entries)] * 2)
    tc = _decoded(core.encode())
    assert len(tc.vendor_consents) == 65535 and 65535 in tc.vendor_consents
    assert tc.publisher_restrictions[0].vendors.intervals == ((1, 65535),)


def test_publisher_tc_and_disclosed_vendors_segments() -> None:
    tc = Core().encode() + "." + _disclosed([3, 4, 9]) + "." + _publisher_tc([1, 2], [7], [2, 3], [1], 3)
    result = decode(tc)
    assert result.valid, result.reason
    assert result.string is not None
    out = result.string.to_json()
    assert out["vendor"]["disclosed"] == {"3": True, "4": True, "9": True}
    assert out["publisher"] == {
        "restrictions": {},
        "consents": {"1": True, "2": True},
        "legitimate_interests": {"7": True},
        "custom_purposes": {"consents": {"2": True, "3": True}, "legitimate_interests": {"1": True}},
    }
    assert result.string.publisher_tc is not None and result.string.publisher_tc.num_custom_purposes == 3
    reordered = decode(Core().encode() + "." + _publisher_tc([1], [], [], [], 0) + "." + _disclosed([1]))
    assert reordered.valid


@pytest.mark.parametrize(
    ("policy_version", "valid"), [(0, False), (2, False), (3, False), (4, True), (5, True), (63, True)]
)
def test_policy_version_floor(policy_version: int, valid: bool) -> None:
    result = decode(Core(policy_version=policy_version).encode())
    assert result.valid is valid
    if not valid:
        _assert_invalid(result, "policy_version")
        assert result.string is not None and result.string.policy_version == policy_version


def test_not_service_specific_is_decoded_but_invalid() -> None:
    result = decode(Core(service_specific=0).encode())
    _assert_invalid(result, "not_service_specific")
    assert result.string is not None and not result.string.is_service_specific


@pytest.mark.parametrize("version", [0, 1, 3, 63])
def test_other_versions_are_rejected(version: int) -> None:
    result = decode(Core(version=version).encode())
    _assert_invalid(result, "version")
    assert result.string is None


@pytest.mark.parametrize(
    ("tc", "detail"),
    [
        ("", "empty"),
        ("C" * 40_000, "too_long"),
        ("CPabc..Ydef", "empty_segment"),
        (Core().encode() + ".", "empty_segment"),
        ("CP188cAQ=", "bad_base64"),
        ("CP188c+Q", "bad_base64"),
        ("CP188c/Q", "bad_base64"),
        (" " + Core().encode(), "bad_base64"),
        ("CP\u00e9", "bad_base64"),
        ("C", "truncated"),
        (Core().encode()[:40], "truncated"),
    ],
)
def test_unreadable_core_gives_no_string(tc: str, detail: str) -> None:
    result = decode(tc)
    _assert_invalid(result, detail)
    assert result.string is None


def test_truncated_later_segment_keeps_the_core() -> None:
    result = decode(Core().encode() + "." + _publisher_tc([1], [1], [1], [1], 6)[:6])
    _assert_invalid(result, "truncated")
    assert result.string is not None and result.string.publisher_tc is None
    assert result.string.cmp_id == 7


def test_truncated_vendor_section() -> None:
    core = Core(vendor_consents=_vendors([1], max_id=3000))  # bitfield promises 3000 bits
    cut = core.bits()[:400]
    _assert_invalid(decode(_b64(cut)), "truncated")


@pytest.mark.parametrize(
    ("vendor_consents", "detail"),
    [
        (_vendors(ranges=[(1, 2), (9, 4)], max_id=10), "range_order"),
        (_vendors(ranges=[(1, 2), (8, 11)], max_id=10), "range_bounds"),
        (_vendors(ranges=[(0, 0), (1, 2)], max_id=10), "range_bounds"),
    ],
    ids=["order", "past-max", "zero"],
)
def test_bad_ranges_are_invalid_and_left_out(vendor_consents: str, detail: str) -> None:
    result = decode(Core(vendor_consents=vendor_consents).encode())
    _assert_invalid(result, detail)
    assert result.string is not None and set(result.string.vendor_consents) == {1, 2}


def test_bad_restriction_range_and_type() -> None:
    _assert_invalid(decode(Core(restrictions=[(1, 0, [(5, 4)])]).encode()), "range_order")
    result = decode(Core(restrictions=[(1, 3, [(5, 5)]), (2, 0, [(6, 6)])]).encode())
    _assert_invalid(result, "restriction_type")
    assert result.string is not None
    assert [r.purpose_id for r in result.string.publisher_restrictions] == [2]


def test_letters_past_z() -> None:
    _assert_invalid(decode(Core(language=(4, 40)).encode()), "language")
    result = decode(Core(country=(26, 0)).encode())
    _assert_invalid(result, "country_code")
    assert result.string is not None and result.string.publisher_country_code == ""


@pytest.mark.parametrize("segment_type", [0, 2, 4, 7])
def test_unknown_segment_types(segment_type: int) -> None:
    result = decode(Core().encode() + "." + _b64(_bits(segment_type, 3) + "0" * 40))
    _assert_invalid(result, "segment_type")
    assert result.string is not None


def test_duplicate_segment() -> None:
    segment = _publisher_tc([1], [], [], [], 0)
    _assert_invalid(decode(Core().encode() + "." + segment + "." + segment), "segment_duplicate")


def test_first_problem_wins_structural_before_policy() -> None:
    core = Core(policy_version=2, service_specific=0, vendor_consents=_vendors(ranges=[(3, 1)], max_id=5))
    _assert_invalid(decode(core.encode()), "range_order")
    _assert_invalid(decode(Core(policy_version=2, service_specific=0).encode()), "policy_version")


# -- allows() -----------------------------------------------------------------------------------


def test_allows_purposes_and_special_features() -> None:
    tc = _decoded(Core().encode())  # consents 1,2,3,4,7; LI 2,7,8; special feature 1
    assert allows(tc, purposes=[1, 2, 3, 4, 7])
    assert allows(tc, purposes=[])
    assert not allows(tc, purposes=[1, 5])
    assert allows(tc, purposes=[1], special_features=[1])
    assert not allows(tc, purposes=[1], special_features=[2])
    assert allows(tc, purposes=[2, 7, 8], legitimate_interest=True)
    assert not allows(tc, purposes=[8])  # LI only, consent asked
    assert not allows(tc, purposes=[2, 9], legitimate_interest=True)


def test_allows_never_accepts_legitimate_interest_for_consent_only_purposes() -> None:
    tc = _decoded(Core(purposes_li=[1, 3, 4, 5, 6, 7]).encode())
    for purpose in (1, 3, 4, 5, 6):
        assert not allows(tc, purposes=[purpose], legitimate_interest=True)
    assert allows(tc, purposes=[7], legitimate_interest=True)


def test_allows_vendor_and_publisher_restrictions() -> None:
    core = Core(  # vendor consents 2,5,6,7,10; vendor LI 5,8-12
        restrictions=[(1, 0, [(5, 5)]), (2, 1, [(7, 10)]), (7, 2, [(6, 6), (10, 10)])],
    )
    tc = _decoded(core.encode())
    assert allows(tc, purposes=[2], vendor_id=5)
    assert not allows(tc, purposes=[1, 2], vendor_id=5)  # type 0: not allowed for purpose 1
    assert allows(tc, purposes=[1, 2], vendor_id=2)
    assert not allows(tc, purposes=[2], vendor_id=3)  # no vendor consent
    assert allows(tc, purposes=[2], vendor_id=10)  # type 1 (require consent), asked on consent
    assert not allows(tc, purposes=[2], vendor_id=10, legitimate_interest=True)  # type 1 excludes LI
    assert allows(tc, purposes=[2], vendor_id=12, legitimate_interest=True)
    assert not allows(tc, purposes=[7], vendor_id=6)  # type 2 (require LI), asked on consent
    assert allows(tc, purposes=[7], vendor_id=10, legitimate_interest=True)
    assert not allows(tc, purposes=[7], vendor_id=6, legitimate_interest=True)  # 6 has no vendor LI


# -- fuzzing ------------------------------------------------------------------------------------

SAMPLES = [
    Core().encode(),
    Core(restrictions=[(1, 0, [(5, 5)]), (2, 2, [(7, 10)])]).encode() + "." + _disclosed([1, 7]),
    Core(vendor_consents=_vendors(ranges=[(1, 3), (9, 9)], max_id=20)).encode()
    + "." + _publisher_tc([1], [2], [1], [], 2),
]


def _consistent(result: TCFResult, *, render: bool = True) -> None:
    assert isinstance(result, TCFResult)
    assert (result.reason is None) is result.valid
    assert result.reason != "tcf_invalid:internal"  # the catch-all must never be what answers
    if result.valid:
        assert result.string is not None
    if render and result.string is not None:
        json.dumps(result.string.to_json())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text_never_raises(text: str) -> None:
    result = decode(text)
    _consistent(result)
    if not text.startswith("C") or set(text) - set(ALPHABET + "."):
        assert not result.valid


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_truncations_never_raise(tc: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(tc) - 1))
    result = decode(tc[:cut])
    _consistent(result)
    core_end = tc.index(".") if "." in tc else len(tc)
    if cut < core_end - 1:  # the last character or two of a segment may be byte padding only
        assert not result.valid


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_bit_flips_never_raise(tc: str, data: st.DataObject) -> None:
    chars = list(tc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(chars) - 1))
        if chars[i] != ".":
            bit = data.draw(st.integers(min_value=0, max_value=5))
            chars[i] = ALPHABET[ALPHABET.index(chars[i]) ^ (1 << bit)]
    _consistent(decode("".join(chars)))


def test_fuzz_corpus_truncations_and_flips() -> None:
    rows = _corpus()[::32]
    for row in rows:
        tc = row["tc_string"]
        for cut in range(0, len(tc), max(1, len(tc) // 17)):
            _consistent(decode(tc[:cut]), render=False)
        for i in range(0, len(tc), max(1, len(tc) // 13)):
            if tc[i] != ".":
                flipped = tc[:i] + ALPHABET[ALPHABET.index(tc[i]) ^ 0b100] + tc[i + 1 :]
                _consistent(decode(flipped), render=False)


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_decode_valid(capsys: pytest.CaptureFixture[str]) -> None:
    tc = Core().encode() + "." + _publisher_tc([1], [], [], [], 0)
    assert main(["tcf", "decode", tc]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["reason"] is None
    assert out == {**_decoded(tc).to_json(), "valid": True, "reason": None}


def test_cli_decode_invalid_still_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tcf", "decode", Core(policy_version=2).encode()]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["valid"], out["reason"], out["policy_version"]) == (False, "tcf_invalid:policy_version", 2)


@pytest.mark.parametrize("junk", ["", "not a tc string", "C", "%%%", "CP188cAQ.Zzzz"])
def test_cli_decode_junk(junk: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tcf", "decode", junk]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["valid"] is False and out["reason"].startswith("tcf_invalid:")
    assert "Traceback" not in captured.err


def test_cli_decode_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(Core().encode() + "\n"))
    assert main(["tcf", "decode", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_cli_tcf_without_subcommand_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tcf"]) == 2
    assert "decode" in capsys.readouterr().err
