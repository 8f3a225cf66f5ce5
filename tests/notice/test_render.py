"""Rendered notices: Markdown, standalone HTML (well-formed, no scripts, no external assets, escaped)
and JSON (round-trips); all deterministic."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from veil.errors import VeilError
from veil.notice import build_notice, notice_json, render_notice
from veil.policy import load_policy
from veil.policy.compile import CompiledPolicy
from veil.redact.paths import format_path

from .conftest import EXAMPLE

HOSTILE = """
policy "evil <b>corp</b> & co" version "1 \\"<i>\\""
purpose x.y {
  description "<script>alert(1)</script> & <img src=http://x.test/a.png> [link](http://x.test) **bold**"
  basis consent
  consent "k<script>"
  retention 1 year
  recipients "<b>Partner</b>", "a | b"
}
category contact = email
route GET /a/{id} { subject path.id  for x.y { keep email } }
"""

VOID = {"meta", "br", "img", "link", "hr", "input", "wbr", "source", "col", "area", "base", "embed", "track"}


class _Checker(HTMLParser):
    """Fails on unbalanced tags; collects tags, attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    return checker


def test_markdown_lists_every_purpose(example: CompiledPolicy) -> None:
    md = render_notice(example, "md")
    for p in example.purposes.values():
        assert f"### {p.description}" in md and f"Reference: `{p.name}`" in md
        assert f"We keep it for {p.retention}." in md
    assert "Legal basis: Consent (GDPR Art. 6(1)(a))" in md and "Contract (GDPR Art. 6(1)(b))" in md
    assert "Legitimate interests (GDPR Art. 6(1)(f))" in md
    assert "| health data (`health`) | **yes** |" in md and "| payment data (`payment`) | **yes** |" in md
    assert "We share it with Acme logistics, Parcel carriers." in md
    assert md.count("A Global Privacy Control signal from your browser opts you out of this purpose.") == 1
    assert "withdrawing is as easy as giving consent" in md.lower()
    assert "[withdraw or change your consent](<https://acme.example/privacy/choices>)" in md
    assert "You have given your consent" not in md  # veil does not know who reads the notice
    assert "POST /consent" not in md and "veil consent" not in md  # no operator instructions


def test_html_is_well_formed_standalone_and_complete(example: CompiledPolicy) -> None:
    page = render_notice(example, "html")
    assert page.startswith("<!DOCTYPE html>")
    checker = _parse(page)
    assert "script" not in checker.tags and "<script" not in page.lower()
    assert not {"link", "img", "iframe", "object", "embed"} & set(checker.tags)
    # links only to the addresses the notice section gives (and anchors in the page itself)
    hrefs = {v for k, v in checker.attrs if k == "href"}
    section = example.notice.values
    allowed = {section[k] for k in ("privacy_center", "requests", "withdraw", "opt_out", "limit_sensitive")}
    assert {h for h in hrefs if not h.startswith("#")} == allowed | {"mailto:privacy@acme.example", "tel:+18005550100"}
    assert not {k for k, v in checker.attrs if k in ("src", "srcset", "action", "style")}
    assert {"main", "header", "footer", "section", "article", "dl", "table", "nav"} <= set(checker.tags)
    assert ("name", "viewport") in checker.attrs
    text = " ".join(" ".join(checker.text).split())
    for p in example.purposes.values():
        assert p.name in text and p.description in text
        for r in p.recipients:
            assert r in text
    assert "You have given your consent" not in text and "POST /consent" not in text
    assert "GDPR Art. 6(1)(f)" in text and "Sec-GPC: 1" in text


def test_html_escapes_every_policy_string(write_policy: Any) -> None:
    policy = write_policy(HOSTILE)
    page = render_notice(policy, "html")
    checker = _parse(page)
    assert "<script" not in page and "<b>" not in page and "<i>" not in page and "<img" not in page
    assert set(checker.tags) & {"script", "img", "b", "i"} == set()
    text = "".join(checker.text)
    assert "<script>alert(1)</script>" in text  # shown to the reader as text
    assert "<b>Partner</b>" in text and 'evil <b>corp</b> & co' in text
    assert "&lt;script&gt;" in page


def test_markdown_escapes_policy_strings(write_policy: Any) -> None:
    md = render_notice(write_policy(HOSTILE), "md")
    prose = re.sub(r"`[^`\n]*`", "", md)  # code spans are literal text in CommonMark
    assert "<script" not in prose and "<b>" not in prose and "<img" not in prose
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "\\[link\\]" in md and "\\*\\*bold\\*\\*" in md


def test_json_round_trips(example: CompiledPolicy) -> None:
    text = render_notice(example, "json")
    data = json.loads(text)
    assert data == notice_json(build_notice(example))
    assert json.loads(json.dumps(data)) == data
    names = [p["name"] for p in data["purposes"]]
    assert names == list(example.purposes)
    ads = data["purposes"][names.index("advertising.targeted")]
    assert ads["gpc_honored"] is True and ads["consent_required"] is True
    assert ads["tcf"]["purposes"][0] == {"id": 1, "name": "Store and/or access information on a device"}
    assert ads["basis"]["article"] == "GDPR Art. 6(1)(a)"
    cats = {c["name"]: c for c in data["categories"]}
    assert cats["health"]["sensitive"] is True and cats["payment"]["sensitive"] is True
    assert cats["contact"]["fields"] == [format_path(p) for p in example.categories["contact"][1]]
    assert data["gpc"]["honored"] is True


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_deterministic(example: CompiledPolicy, fmt: str) -> None:
    again = load_policy([EXAMPLE])
    assert render_notice(example, fmt) == render_notice(again, fmt)


def test_unknown_format_is_a_veil_error(example: CompiledPolicy) -> None:
    with pytest.raises(VeilError) as info:
        render_notice(example, "pdf")
    assert info.value.code == "notice_format"


def test_public_names_are_complete_and_sorted() -> None:
    import veil.notice as mod

    assert mod.__all__ == sorted(mod.__all__)
    assert all(hasattr(mod, n) for n in mod.__all__)
    assert {"render_notice", "records_of_processing"} <= set(mod.__all__)
