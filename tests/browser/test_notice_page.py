"""The privacy notice as a customer reads it: served by a real `veil serve` admin listener, rendered in
headless Chromium, in the reader's language (Accept-Language); the items each declared jurisdiction
requires are on the page, axe-core finds no serious or critical problem, and no word is cut in two at
any screen width."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Upstream, Veil, start_upstream, start_veil, stop
from veil.notice import available, render_notice
from veil.notice.lang import catalog
from veil.policy import load_policy
from veil.policy.notice import REQUIREMENTS

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
    # GDPR Art. 13(2)(e) whether data must be provided; 14(2)(f) its sources; 13(2)(f)/14(2)(g)/22
    # profiling and automated decisions, with the purpose that profiles
    for item in ("Do you have to give us your data?", "To place an order you must give us your name",
                 "Where your data comes from", "Where we do not collect personal data from you, it comes from:",
                 "delivery updates from our parcel carriers", "None of it comes from publicly accessible sources.",
                 "How the profiling works", "We rank products by how well they match",
                 "What it means for you", "It decides which products you see first",
                 "Automated decisions", "We make no decision about you based solely on automated processing",
                 "Automated decisions: not to be subject to a decision based solely on automated processing"):
        assert item in text, item
    recs = page.locator("#purpose-personalize\\.recommendations")
    assert "How the profiling works" in recs.inner_text()
    assert "How the profiling works" not in page.locator("#purpose-orders\\.fulfillment").inner_text()
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
                 "In den letzten 12 Monaten offengelegte", "aus der geltenden Datenrichtlinie",
                 "Müssen Sie uns Ihre Daten geben?", "Woher Ihre Daten stammen",
                 "Keine dieser Daten stammen aus öffentlich zugänglichen Quellen.",
                 "Wie die Profilbildung funktioniert", "Wir ordnen Produkte danach", "Was das für Sie bedeutet",
                 "Sie bestimmt, welche Produkte",
                 "Automatisierte Entscheidungen", "Wir treffen keine ausschließlich auf einer automatisierten"):
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


# The Art. 13/14 items added to the notice, by the requirement (veil.policy.notice.REQUIREMENTS) each
# one answers: the catalog texts that show it on the page.
ITEM_TEXTS: dict[str, tuple[str, ...]] = {
    "obligation": ("section.obligation",),
    "source": ("section.source",),
    "public_sources": ("source.public_none",),
    "automated_decisions": ("automated.decisions", "automated.no_decisions", "rights.automated"),
    "profiling_logic": ("automated.logic",),
    "profiling_effects": ("automated.effects",),
}


@pytest.mark.parametrize("jurisdiction", ["gdpr", "ccpa"])
def test_required_items_per_jurisdiction(browser: Any, tmp_path: Path, jurisdiction: str) -> None:
    """The example policies with one jurisdiction declared: every item of REQUIREMENTS that the
    jurisdiction requires is on the page in every language; GDPR-only sections are not on a CCPA page."""
    assert set(ITEM_TEXTS) <= {r.item for r in REQUIREMENTS}
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("packs"))
    notice = policies / "notice.veil"
    text = notice.read_text(encoding="utf-8").replace("jurisdictions gdpr, ccpa", f"jurisdictions {jurisdiction}")
    if jurisdiction == "ccpa":  # not required there: unstated, it is not on the page at all
        text = re.sub(r"\n  obligation .*", "", text)
    notice.write_text(text, encoding="utf-8")
    policy = load_policy([policies])
    required = [r for r in REQUIREMENTS if jurisdiction in r.laws and r.item in ITEM_TEXTS]
    assert required
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    for lang in available():
        cat = catalog(lang)
        page_file = tmp_path / f"notice-{lang}.html"
        page_file.write_text(render_notice(policy, "html", lang), encoding="utf-8")
        page = ctx.new_page()
        page.goto(page_file.as_uri())
        text = _text(page)
        for r in required:
            for key in ITEM_TEXTS[r.item]:
                assert cat.t(key) in text, (lang, r.item, key)
        if jurisdiction == "ccpa":  # GDPR's own items are not asked of a California-only notice
            assert cat.t("section.obligation") not in text and cat.t("obligation.unknown") not in text
            assert cat.t("rights.access") not in text  # the GDPR rights section
