"""GDPR Art. 13(2)(e), 13(2)(f)/14(2)(g) and 14(2)(f) in the notice: whether customers must provide
their data, profiling and automated decisions per purpose, and where data comes from. They are
rendered in every language and format, and what the page shows as not stated is exactly what
`veil check` warns about (one table: veil.policy.notice.REQUIREMENTS)."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest

from veil.errors import Diagnostics
from veil.notice import available, build_notice, render_notice
from veil.notice.lang import catalog
from veil.policy import load_policy
from veil.policy.compile import CompiledPolicy
from veil.policy.notice import REQUIREMENTS

PROFILING = """
purpose recs {
  description "Recommendations"
  basis consent
  consent "recs"
  processing profiling
  retention 1 year
  recipients "Storefront"
}
purpose credit {
  description "Payment on account"
  basis contract
  automated_decisions "We decide automatically whether you can pay on account."
  retention 1 year
  recipients "Billing"
}
purpose orders {
  description "Orders"
  basis contract
  retention 1 year
  recipients "Logistics"
}
"""
STATED = """
purpose recs {
  description "Recommendations"
  description de "Empfehlungen"
  basis consent
  consent "recs"
  processing profiling
  profiling_logic "We rank <products> by similar purchases."
  profiling_logic de "Wir ordnen Produkte nach ähnlichen Käufen."
  profiling_effects "Which products you see first."
  automated_decisions none
  retention 1 year
  recipients "Storefront"
}
"""


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _codes(policy: CompiledPolicy) -> set[str]:
    return {d.code for d in policy.warnings}


def test_example_policy_states_every_item(example: CompiledPolicy) -> None:
    notice = build_notice(example)
    recs = next(p for p in notice.purposes if p.name == "personalize.recommendations")
    assert recs.automated is not None and recs.automated.missing == () and recs.automated.decides is False
    assert [lang for lang, _ in recs.automated.logic] == ["", "de"]
    for name in ("orders.fulfillment", "analytics.segments"):  # no profiling: nothing to say
        assert next(p for p in notice.purposes if p.name == name).automated is None
    data = json.loads(render_notice(example, "json"))
    assert data["not_stated"] == []
    assert data["notice"]["public_sources"] is None and data["notice"]["source"].startswith("Your consent choices")
    auto = next(p for p in data["purposes"] if p["name"] == "personalize.recommendations")["automated"]
    assert auto["decides"] is False and auto["not_stated"] == [] and set(auto["profiling_logic"]) == {"", "de"}


@pytest.mark.parametrize("lang", available())
def test_every_language_renders_the_items(example: CompiledPolicy, lang: str) -> None:
    cat = catalog(lang)
    for fmt in ("html", "md"):
        page = render_notice(example, fmt, lang)
        text = _text(page) if fmt == "html" else page.replace("\\", "")
        for key in ("section.source", "section.obligation", "automated.logic", "automated.effects",
                    "automated.decisions", "automated.no_decisions", "source.public_none", "rights.automated"):
            assert cat.t(key) in text, (fmt, key)
        assert cat.t("source.text", text="Your consent choices")[:40] in text, fmt
        assert "To place an order you must give us your name" in text
    german = render_notice(example, "html", "de")
    assert "Wir ordnen Produkte danach" in german and "Sie bestimmt, welche Produkte" in german
    # the section's strings are written in English: marked as such on the German page
    assert '<span lang="en">To place an order' in german


def test_missing_items_are_shown_not_stated_exactly_where_check_warns(write_policy: Any) -> None:
    policy = write_policy(PROFILING + 'notice { controller "Acme" jurisdictions gdpr source "Partner shops" }')
    codes = _codes(policy)
    notice = build_notice(policy)
    by_name = {p.name: p for p in notice.purposes}
    data = json.loads(render_notice(policy, "json"))
    # the notice section: what the page lists as not stated is what veil check warns about
    section_codes = {r.code for r in REQUIREMENTS if r.scope == "notice" and r.item in data["not_stated"]}
    assert section_codes == {c for c in codes if c in {r.code for r in REQUIREMENTS if r.scope == "notice"}}
    assert {"source", "public_sources", "obligation"} & set(data["not_stated"]) == {"public_sources", "obligation"}
    # purposes: profiling without statements, and automated decisions without logic or effects
    assert by_name["recs"].automated is not None and by_name["credit"].automated is not None
    assert set(by_name["recs"].automated.missing) == {"profiling_logic", "profiling_effects", "automated_decisions"}
    assert set(by_name["credit"].automated.missing) == {"profiling_logic", "profiling_effects"}
    assert by_name["orders"].automated is None
    purpose_codes = {r.code for p in notice.purposes if p.automated for r in REQUIREMENTS
                     if r.scope == "purpose" and r.item in p.automated.missing}
    assert purpose_codes == {c for c in codes if c in {r.code for r in REQUIREMENTS if r.scope == "purpose"}}
    for lang in available():
        cat = catalog(lang)
        text = _text(render_notice(policy, "html", lang))
        assert f'{cat.t("automated.logic")} {cat.t("automated.unknown")}' in text
        assert f'{cat.t("automated.decisions")} {cat.t("automated.unknown")}' in text  # recs says nothing
        assert cat.t("automated.decided", text="We decide automatically whether you can pay on account.") in text
        assert cat.t("source.public_unknown") in text and cat.t("obligation.unknown") in text
        md = render_notice(policy, "md", lang).replace("\\", "")
        assert cat.t("source.public_unknown") in md and cat.t("obligation.unknown") in md


def test_items_follow_the_declared_jurisdictions(write_policy: Any) -> None:
    """California requires the sources but neither the obligation nor the profiling statements: a
    CCPA-only notice shows sources as not stated and says nothing about the rest."""
    policy = write_policy(PROFILING + 'notice { controller "Acme" jurisdictions ccpa }')
    assert {"notice_source_missing"} <= _codes(policy)
    assert not {"notice_obligation_missing", "notice_profiling_logic_missing"} & _codes(policy)
    text = _text(render_notice(policy, "html"))
    en = catalog("en")
    assert en.t("source.unknown") in text
    assert en.t("section.obligation") not in text and en.t("obligation.unknown") not in text
    for label in ("automated.logic", "automated.effects", "automated.decisions"):  # not required: not shown
        assert f'{en.t(label)} {en.t("automated.unknown")}' not in text
    # what the policy states is shown whatever the jurisdiction
    assert en.t("automated.decided", text="We decide automatically whether you can pay on account.") in text
    not_stated = json.loads(render_notice(policy, "json"))["not_stated"]
    assert "source" in not_stated and "obligation" not in not_stated


def test_source_none_and_public_sources(write_policy: Any) -> None:
    en = catalog("en")
    text = _text(render_notice(write_policy(STATED + 'notice { jurisdictions gdpr source none }'), "html"))
    assert en.t("source.none") in text and en.t("source.public_unknown") not in text  # nothing to ask
    text = _text(render_notice(write_policy(
        STATED + 'notice { jurisdictions gdpr source "Partner shops." public_sources "The commercial register." }'),
        "html"))
    assert en.t("source.text", text="Partner shops.") in text
    assert en.t("source.public", text="The commercial register.") in text


def test_stated_profiling_is_escaped_and_localized(write_policy: Any) -> None:
    policy = write_policy(STATED + 'notice { jurisdictions gdpr }')
    assert not {c for c in _codes(policy) if "profiling" in c or "automated" in c}
    page = render_notice(policy, "html")
    assert "We rank &lt;products&gt; by similar purchases." in page and "<products>" not in page
    german = render_notice(policy, "html", "de")
    assert "Wir ordnen Produkte nach ähnlichen Käufen." in german
    assert '<span lang="en">Which products you see first.</span>' in german  # no German text: marked English
    md = render_notice(policy, "md")
    assert "We rank &lt;products&gt; by similar purchases." in md


def test_a_bad_automated_decisions_word_stops_the_load(tmp_path: Any) -> None:
    path = tmp_path / "p.veil"
    path.write_text('purpose p {\n  basis contract\n  automated_decisions no\n}\n', encoding="utf-8")
    with pytest.raises(Diagnostics) as info:
        load_policy([path])
    found = [d for d in info.value.items if d.code == "automated_decisions_invalid"]
    assert found and (found[0].location.line, found[0].location.col) == (3, 3)  # type: ignore[union-attr]
