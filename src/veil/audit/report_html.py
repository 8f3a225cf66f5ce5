"""The per-subject access report as a page a customer can read (GDPR Art. 15): who received which
categories of their data, for which purpose, when, and whether in clear or transformed. One standalone
HTML page (the notice's stylesheet, no scripts, no external assets); every string is escaped.

Purposes are explained with the policy's own words (description, recipients) when a policy is given.
A category is shown with its form when the decision record says it (`disclosed`: clear or
transformed); otherwise just the category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Protocol

from veil.audit.report import SubjectReport
from veil.notice.html import _CSS

FORM_TEXT = {"clear": "as stored", "transformed": "transformed (masked, hashed or generalized)"}
DECISION_TEXT = {
    "allow": "the data as stored", "allowed": "the data as stored",
    "redact": "some fields removed or transformed", "redacted": "some fields removed or transformed",
    "filter": "as part of a list", "filtered": "as part of a list",
}

_EXTRA_CSS = """
.verified { background: var(--ok-bg); border: 1px solid var(--line); border-radius: .5rem; padding: .5rem 1rem; }
.unverified { color: var(--warn); background: var(--warn-bg); border: 1px solid var(--warn); border-radius: .5rem;
  padding: .5rem 1rem; }
"""


class PurposeText(Protocol):
    @property
    def description(self) -> str: ...

    @property
    def recipients(self) -> Sequence[str]: ...


def _e(text: str) -> str:
    return escape(text, quote=True)


def _categories(categories: Sequence[str], forms: Sequence[tuple[str, str]]) -> str:
    if forms:
        return "".join(f'<span class="tag"><code>{_e(c)}</code> {_e(FORM_TEXT.get(f, f))}</span>' for c, f in forms)
    if not categories:
        return '<span class="muted">no categorized fields</span>'
    return "".join(f'<span class="tag"><code>{_e(c)}</code></span>' for c in categories)


def _purpose(name: str, purposes: Mapping[str, PurposeText]) -> str:
    p = purposes.get(name)
    out = f"<code>{_e(name)}</code>"
    if p is not None and p.description:
        out += f"<br>{_e(p.description)}"
    return out


def _recipient(caller: str, purpose: str, purposes: Mapping[str, PurposeText]) -> str:
    p = purposes.get(purpose)
    out = f"<code>{_e(caller)}</code>"
    if p is not None and p.recipients:
        out += "<br>" + _e(", ".join(p.recipients))
    return out


def render_report_html(rep: SubjectReport, *, purposes: Mapping[str, PurposeText] | None = None,
                       generated: str = "") -> str:
    purposes = purposes or {}
    v = rep.verification
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Who received your data</title>",
        f"<style>{_CSS}{_EXTRA_CSS}</style></head><body>",
        "<header><h1>Who received your data</h1>",
        "<p>Every time a service asked for your data through our gateway, the decision was recorded in a "
        "tamper-evident log. This page lists each time your data was disclosed: to whom, for which purpose, "
        "which kinds of data, when, and whether it was passed on as stored or transformed first.</p>",
        f'<p class="muted">Your reference in the log: {", ".join(f"<code>{_e(s)}</code>" for s in rep.subjects)}'
        + (f" · generated {_e(generated)}" if generated else "") + "</p></header><main>",
    ]
    if v.ok:
        parts.append(f'<p class="verified">The log entries below were checked: {_e(v.render())}.</p>')
    else:
        parts.append('<p class="unverified">The log could not be fully verified; entries after the problem '
                     f"may be missing. ({_e(v.problem or '')}: {_e(v.message)})</p>")
    recipients = rep.recipients
    parts.append("<h2>Summary</h2>")
    if not recipients:
        parts.append("<p>No disclosure of your data was recorded.</p>")
    else:
        parts.append('<div class="table"><table><thead><tr><th>Recipient</th><th>Purpose</th>'
                     "<th>Kinds of data</th><th>How often</th><th>First</th><th>Last</th></tr></thead><tbody>")
        for r in recipients:
            parts.append(
                f"<tr><td>{_recipient(r.caller, r.purpose, purposes)}</td><td>{_purpose(r.purpose, purposes)}</td>"
                f"<td>{_categories(r.categories, r.forms)}</td><td>{r.count}</td>"
                f"<td><time>{_e(r.first)}</time></td><td><time>{_e(r.last)}</time></td></tr>")
        parts.append("</tbody></table></div>")
        parts.append("<h2>Every disclosure</h2>")
        parts.append('<div class="table"><table><thead><tr><th>When</th><th>Recipient</th><th>Purpose</th>'
                     "<th>Kinds of data</th><th>What left</th></tr></thead><tbody>")
        for d in rep.disclosures:
            parts.append(
                f"<tr><td><time>{_e(d.time)}</time></td><td><code>{_e(d.caller)}</code></td>"
                f"<td><code>{_e(d.purpose)}</code></td><td>{_categories(d.categories, d.forms)}</td>"
                f"<td>{_e(DECISION_TEXT.get(d.decision, d.decision))}</td></tr>")
        parts.append("</tbody></table></div>")
    parts.append("</main><footer><p class=\"muted\">Requests that were refused are not listed: "
                 "no data left in them.</p></footer></body></html>")
    return "\n".join(parts) + "\n"
