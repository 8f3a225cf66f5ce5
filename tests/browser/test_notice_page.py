"""The privacy notice as a customer reads it: served by a real `veil serve` admin listener, rendered in
headless Chromium, in the reader's language (Accept-Language); the items each declared jurisdiction
requires are on the page, axe-core finds no serious or critical problem, and no word is cut in two at
any screen width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Upstream, Veil, start_upstream, start_veil, stop

from .conftest import BROKEN_WORDS, PAGE_OVERFLOW, run_axe, serious, shot

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (1280, 768, 375)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Veil]:
    up: Upstream = start_upstream(log_dir=tmp_path_factory.mktemp("notice-upstream"))
    v = start_veil(tmp_path_factory.mktemp("notice") / "veil", up.url)
    yield v
    v.stop()
    stop(up.proc)


def _open(browser: Any, url: str, lang: str, width: int = 1280, **kw: Any) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": 900},
                              extra_http_headers={"Accept-Language": lang}, **kw)
    page = ctx.new_page()
    resp = page.goto(url)
    assert resp is not None and resp.status == 200
    return page


def _text(page: Any) -> str:
    return " ".join(page.inner_text("body").split())


def _href(page: Any, text: str) -> str:
    return str(page.get_by_role("link", name=text, exact=True).first.get_attribute("href"))


def test_english_notice_has_every_required_item(browser: Any, served: Veil) -> None:
    page = _open(browser, served.admin + "/notice", "en-US,en;q=0.9")
    text = _text(page)
    assert page.evaluate("document.documentElement.lang") == "en"
    # GDPR Art. 13: who, contacts, purposes with basis, retention, recipients, rights, complaint
    for item in ("Acme Retail GmbH", "Hauptstraße 1, 10115 Berlin, Germany", "privacy@acme.example",
                 "Data protection officer: Dr. Jana Richter", "Legal basis: Consent (GDPR Art. 6(1)(a))",
                 "Legal basis: Contract (GDPR Art. 6(1)(b))", "We keep it for 13 months.", "We keep it for 10 years.",
                 "We share it with Acme logistics, Parcel carriers.", "Access:", "Rectification:", "Erasure:",
                 "Restriction:", "Portability:", "Objection:", "Complaint:",
                 "Our supervisory authority: Berlin Commissioner for Data Protection",
                 "EU-US Data Privacy Framework", "Last updated: 2026-11-01"):
        assert item in text, item
    # consent: how to withdraw, for the reader, never a claim that they consented, no operator commands
    assert "You can withdraw it at any time" in text
    assert _href(page, "withdraw or change your consent") == "https://acme.example/privacy/choices"
    assert "You have given your consent" not in text
    assert "POST /consent" not in text and "veil consent" not in text
    # CCPA: the two links, the rights, categories disclosed in the last 12 months (derived, and said so)
    assert _href(page, "Do Not Sell or Share My Personal Information") == \
        "https://acme.example/privacy/do-not-sell-or-share"
    assert _href(page, "Limit the Use of My Sensitive Personal Information") == "https://acme.example/privacy/limit"
    for item in ("Right to know", "Right to delete", "Right to correct", "Right to opt out of the sale and sharing",
                 "Right not to be discriminated against", "Personal information disclosed in the last 12 months",
                 "derived from the data policy in force", "Sold or shared with",
                 "Disclosed for a business purpose to", "or call +1 800 555 0100"):
        assert item in text, item
    disclosures = page.locator("section[aria-labelledby=disclosures] tbody tr")
    assert disclosures.count() == 6  # the six categories the example policy lets leave


def test_german_notice_by_accept_language(browser: Any, served: Veil) -> None:
    page = _open(browser, served.admin + "/notice", "de-AT,de;q=0.9,en;q=0.5")
    text = _text(page)
    assert page.evaluate("document.documentElement.lang") == "de"
    for item in ("Datenschutzhinweise: Acme Retail GmbH", "Wer verantwortlich ist", "Ihre Rechte",
                 "Rechtsgrundlage: Einwilligung (Art. 6 Abs. 1 lit. a DSGVO)", "Wir bewahren sie 13 Monate auf.",
                 "Produktempfehlungen im Shop", "Beschwerde bei einer Aufsichtsbehörde",
                 "In den letzten 12 Monaten offengelegte", "aus der geltenden Datenrichtlinie"):
        assert item in text, item
    assert "Do Not Sell or Share My Personal Information" in text  # the CCPA's own wording stays
    assert "What we use your data for" not in text
    # English policy strings on a German page are marked as English (screen readers switch voice)
    assert page.locator('span[lang="en"]', has_text="Acme logistics").count() >= 1
    r = httpx.get(served.admin + "/notice?lang=de&format=md")
    assert r.headers["content-language"] == "de" and "accept-language" in r.headers["vary"].lower()
    assert httpx.get(served.admin + "/notice?lang=xx").status_code == 400


@pytest.mark.parametrize("lang", ["en", "de"])
def test_no_serious_accessibility_violations(browser: Any, served: Veil, lang: str) -> None:
    page = _open(browser, served.admin + "/notice", lang)
    found = run_axe(page)
    assert serious(found) == [], "\n".join(serious(found))


@pytest.mark.parametrize("width", WIDTHS)
def test_layout_never_cuts_a_word(browser: Any, served: Veil, width: int) -> None:
    for lang in ("en", "de"):
        page = _open(browser, served.admin + "/notice", lang, width=width)
        assert page.evaluate(BROKEN_WORDS) == [], (lang, width)
        assert page.evaluate(PAGE_OVERFLOW) <= 1, "the page scrolls sideways"  # wide tables scroll in place
        if width == 1280 and lang == "en":
            shot(page, "notice.png", clip={"x": 0, "y": 0, "width": width, "height": 1100})


def test_the_layout_check_catches_a_cut_word(browser: Any, served: Veil) -> None:
    """The check is real: the same page with words allowed to break anywhere fails it."""
    page = _open(browser, served.admin + "/notice", "en", width=375)
    page.add_style_tag(content="td, code, th, p, li { word-break: break-all !important; "
                               "white-space: normal !important; } .table { overflow-x: visible !important; } "
                               "table { table-layout: fixed; }")
    broken = page.evaluate(BROKEN_WORDS)
    assert broken, "a forced break-all layout must be reported"
    assert any(re.search(r"\w", b["word"]) for b in broken)


def test_long_category_and_field_names_do_not_break(browser: Any, tmp_path: Path) -> None:
    """A policy with very long names: the table scrolls in its own focusable region instead."""
    from veil.notice import render_notice
    from veil.policy import load_policy

    (tmp_path / "p.veil").write_text(
        'notice { controller "Acme" jurisdictions ccpa contact "privacy@acme.example" phone none '
        'requests "https://acme.example/r" updated "2026-01-01" opt_out "https://acme.example/o" }\n'
        'purpose p { description "d" basis consent consent "k" processing sharing gpc honor retention 1 year '
        'recipients "r" }\n'
        "category customer_lifetime_value_prediction_segment_assignment = "
        "profile.customer_lifetime_value_prediction_segment_assignment_identifier\n"
        "route GET /a/{id} { subject path.id  for p { keep profile } }\n", encoding="utf-8")
    page_file = tmp_path / "notice.html"
    page_file.write_text(render_notice(load_policy([tmp_path / "p.veil"]), "html"), encoding="utf-8")
    ctx = browser.new_context(viewport={"width": 375, "height": 800})
    page = ctx.new_page()
    page.goto(page_file.as_uri())
    assert page.evaluate(BROKEN_WORDS) == []
    assert page.evaluate(PAGE_OVERFLOW) <= 1
    assert serious(run_axe(page)) == []
