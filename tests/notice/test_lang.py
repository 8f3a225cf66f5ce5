"""The notice's language catalogs: every language has every text with the same placeholders, and a
reader's Accept-Language picks one."""

from __future__ import annotations

import re
import string
import tomllib
from importlib import resources
from typing import Any

import pytest

from veil.errors import VeilError
from veil.notice import render_notice
from veil.notice.lang import DEFAULT, available, catalog, negotiate
from veil.policy.compile import CompiledPolicy


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and not {"one", "other"} >= set(v):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _load(lang: str) -> dict[str, Any]:
    return _flat(tomllib.loads(resources.files("veil.notice.lang").joinpath(f"{lang}.toml").read_text("utf-8")))


def _fields(text: Any) -> set[str]:
    texts = text.values() if isinstance(text, dict) else [text]
    return {f for t in texts for _, f, _, _ in string.Formatter().parse(str(t)) if f}


def test_at_least_english_and_one_more() -> None:
    assert DEFAULT == "en" and len(available()) >= 2 and "de" in available()


@pytest.mark.parametrize("lang", [x for x in available() if x != DEFAULT])
def test_every_catalog_has_every_key_and_placeholder(lang: str) -> None:
    en, other = _load(DEFAULT), _load(lang)
    assert set(other) == set(en), (set(en) ^ set(other))
    for key, text in en.items():
        assert _fields(other[key]) == _fields(text), key
    assert other["meta.language"] == lang


@pytest.mark.parametrize(("header", "want"), [
    ("de-AT,de;q=0.9,en;q=0.5", "de"),
    ("en-US,en;q=0.9,de;q=0.8", "en"),
    ("fr-CH, fr;q=0.9, de;q=0.7, *;q=0.5", "de"),
    ("fr", "en"),  # nothing matches: the default
    ("de;q=0, en", "en"),  # q=0 refuses
    ("en;q=0.5, de;q=0.6", "de"),
    ("*", "en"),
    ("", "en"),
    (None, "en"),
    ("de;q=abc, ;;,", "en"),  # malformed parts are ignored
    ("DE", "de"),
])
def test_negotiate(header: str | None, want: str) -> None:
    assert negotiate(header) == want


def test_unknown_language_is_a_veil_error(example: CompiledPolicy) -> None:
    with pytest.raises(VeilError) as info:
        render_notice(example, "html", "xx")
    assert info.value.code == "notice_language"


def test_german_page_uses_german_texts_and_marks_english_policy_strings(example: CompiledPolicy) -> None:
    page = render_notice(example, "html", "de")
    assert '<html lang="de">' in page
    for text in ("Wer verantwortlich ist", "Ihre Rechte", "Rechtsgrundlage: Einwilligung (Art. 6 Abs. 1 lit. a DSGVO)",
                 "Wir bewahren sie 13 Monate auf.", "Wir bewahren sie 10 Jahre auf.",
                 "Do Not Sell or Share My Personal Information", "Limit the Use of My Sensitive Personal Information"):
        assert text in page, text
    # purposes with a German description use it; recipients (written in English) are marked as English
    assert "Versand und Service für Ihre Bestellungen" in page
    assert '<span lang="en">Acme logistics</span>' in page
    for english in ("What we use your data for", "Legal basis", "We keep it for", "Your rights"):
        assert english not in page


def test_durations_are_plural_aware() -> None:
    assert catalog("en").duration(1, "year") == "1 year" and catalog("en").duration(13, "months") == "13 months"
    assert catalog("de").duration(1, "years") == "1 Jahr" and catalog("de").duration(6, "month") == "6 Monate"


def test_unlabelled_categories_read_as_words() -> None:
    assert catalog("en").label("spi.financial_account") == "spi financial account"
    assert catalog("de").label("contact.address") == "Postanschrift"
    assert re.fullmatch(r"[\w ]+", catalog("de").label("some.new_thing"))
