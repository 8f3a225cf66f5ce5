"""The access report as a page: who, which categories (and in which form), purpose, when; every string
escaped; no scripts or external assets."""

from __future__ import annotations

from dataclasses import dataclass

from veil.audit.report import Disclosure, SubjectReport
from veil.audit.report_html import render_report_html
from veil.audit.verify import VerifyResult


@dataclass(frozen=True)
class Purpose:
    description: str
    recipients: tuple[str, ...]


def disclosure(caller: str, purpose: str, time: str, cats: dict[str, tuple[str, ...]], *,
               decision: str = "redact", known: bool = True) -> Disclosure:
    return Disclosure(time, caller, purpose, cats, decision, "GET /c/{id}", f"id-{time}", known)


def test_the_page_lists_recipients_and_every_disclosure() -> None:
    rep = SubjectReport(("p" * 32,), VerifyResult(True, 3, 1, 1), [
        disclosure("storefront", "personalize.recs", "2026-01-02T10:00:00Z",
                   {"contact.email": ("hash",), "profile": ("clear",)}),
        disclosure("storefront", "personalize.recs", "2026-01-03T10:00:00Z", {}, decision="allow", known=False),
        disclosure("<script>alert(1)</script>", "x\"><img>", "2026-01-04T10:00:00Z", {"a&b": ("mask",)}),
    ])
    page = render_report_html(rep, purposes={"personalize.recs": Purpose("Recommendations <b>for you</b>",
                                                                         ("Acme storefront",))},
                              generated="2026-12-03T10:00:00+00:00")
    assert page.startswith("<!doctype html>") and "<script" not in page.replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "x&quot;&gt;&lt;img&gt;" in page
    assert "Recommendations &lt;b&gt;for you&lt;/b&gt;" in page and "Acme storefront" in page
    assert "<code>contact.email</code> transformed: pseudonymized" in page
    assert "<code>profile</code> as stored" in page and "<code>a&amp;b</code> transformed: masked" in page
    assert "1 time: the log does not say which kinds of data" in page  # an older record
    assert page.count("<tr><td><time>") == 3  # every disclosure, oldest first
    assert "the data as stored" in page and "some fields removed or transformed" in page
    assert "The log entries below were checked" in page and "p" * 32 in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere


def test_an_unverified_log_and_no_disclosures_say_so() -> None:
    rep = SubjectReport(("q" * 32,), VerifyResult(False, 0, 1, 1, ("r1/main", 7), "mac_mismatch", "modified"))
    page = render_report_html(rep)
    assert "could not be fully verified" in page and "mac_mismatch" in page
    assert "No disclosure of your data was recorded." in page
