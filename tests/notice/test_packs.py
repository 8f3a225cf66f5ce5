"""The GDPR and CCPA starter packs load cleanly (no errors, no warnings) and say what they promise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from veil.notice import build_notice, records_of_processing, render_notice
from veil.policy import load_policy
from veil.policy.compile import CompiledPolicy

from .conftest import PACKS

ART9 = {"health", "biometric", "genetic", "religion", "ethnicity", "sexual_orientation", "political_opinions",
        "trade_union"}
SPI = {"spi.government_id", "spi.precise_geolocation", "spi.account_credentials", "spi.financial_account",
       "spi.racial_ethnic_origin", "spi.health", "spi.sex_life"}


@pytest.fixture(scope="module")
def gdpr() -> CompiledPolicy:
    return load_policy([PACKS / "gdpr"], strict_warnings=True)


@pytest.fixture(scope="module")
def ccpa() -> CompiledPolicy:
    return load_policy([PACKS / "ccpa"], strict_warnings=True)


def test_packs_load_without_findings(gdpr: CompiledPolicy, ccpa: CompiledPolicy) -> None:
    assert gdpr.warnings == [] and ccpa.warnings == []
    assert (gdpr.name, ccpa.name) == ("gdpr-starter", "ccpa-starter")
    assert gdpr.routes and ccpa.routes  # an example route to adapt
    assert (PACKS / "README.md").read_text(encoding="utf-8").count("veil check") >= 1


def test_gdpr_pack(gdpr: CompiledPolicy) -> None:
    sensitive = {n for n, (s, _) in gdpr.categories.items() if s}
    assert sensitive == ART9
    bases = {p.basis for p in gdpr.purposes.values()}
    assert bases == {"consent", "contract", "legal_obligation", "legitimate_interests"}
    consent = [p for p in gdpr.purposes.values() if p.needs_consent]
    assert {p.name for p in consent} >= {"marketing.email", "marketing.profiling", "health.recommendations"}
    for p in consent:
        assert p.consent_key and p.max_age is not None and p.min_notice is not None, p.name
    for p in gdpr.purposes.values():
        assert p.retention and p.recipients and p.description, p.name
    notice = build_notice(gdpr)
    health = next(p for p in notice.purposes if p.name == "health.recommendations")
    assert [c.name for c in health.categories if c.sensitive] == ["health"]
    for p in notice.purposes:  # Art. 9 data only under consent
        assert p.consent is not None or not p.sensitive, p.name


def test_ccpa_pack(ccpa: CompiledPolicy) -> None:
    sensitive = {n for n, (s, _) in ccpa.categories.items() if s}
    assert sensitive >= SPI
    sale_or_share = [p for p in ccpa.purposes.values()
                     if {"sale", "sharing", "targeted_advertising"} & set(p.processing)]
    assert {p.name for p in sale_or_share} == {"advertising.cross_context", "data.sale"}
    assert all(p.gpc_honor and p.consent_key == "sell_or_share" for p in sale_or_share)
    limited = [p for p in ccpa.purposes.values() if p.consent_key == "use_sensitive_pi"]
    assert limited
    notice = build_notice(ccpa)
    for p in notice.purposes:
        if any(c.sensitive and "in clear" in c.manners for c in p.categories):
            assert p.consent is not None and p.consent.key == "use_sensitive_pi", p.name
    assert "Limit the Use of My Sensitive Personal Information" in render_notice(ccpa, "md")
    financial = next(p for p in notice.purposes if p.name == "service.orders")
    assert {c.name: c.manners for c in financial.categories}["spi.financial_account"] == ("masked",)


@pytest.mark.parametrize("pack", ["gdpr", "ccpa"])
def test_pack_notices_and_records(pack: str) -> None:
    policy = load_policy([PACKS / pack])
    for fmt in ("md", "html", "json"):
        assert render_notice(policy, fmt)
    assert {r["purpose"] for r in records_of_processing(policy)} == set(policy.purposes)


def test_pack_importable_from_another_set(tmp_path: Path) -> None:
    f = tmp_path / "mine.veil"
    target = Path(os.path.relpath(PACKS / "gdpr", tmp_path))  # imports are relative to the importer
    f.write_text(f'import "{target.as_posix()}"\n', encoding="utf-8")
    policy = load_policy([f])
    assert set(policy.purposes) == set(load_policy([PACKS / "gdpr"]).purposes)


def test_example_set_does_not_pick_up_the_packs(example: CompiledPolicy) -> None:
    assert not any(name.startswith(str(PACKS)) for name in example.sources)
