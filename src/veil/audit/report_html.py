"""The per-subject access report as a page a customer can read (GDPR Art. 15): who received which
categories of their data, for which purpose, when, and whether as stored or transformed (hashed,
masked, generalized). One standalone HTML page (inline CSS, no scripts, no external assets); every
string is escaped.

Purposes are explained with the policy's own words (description, recipients) when a policy is given.
The categories and their forms are what the decision records say left veil (`disclosed`, read by
`veil.audit.report.disclosure_of`); a disclosure whose categories the log cannot tell says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Protocol

from veil.audit.report import SubjectReport

FORM_TEXT = {"clear": "as stored", "hash": "transformed: pseudonymized", "mask": "transformed: masked",
             "generalize": "transformed: generalized", "replace": "transformed: replaced", "null": "emptied"}
DECISION_TEXT = {
    "allow": "the data as stored", "allowed": "the data as stored",
    "redact": "some fields removed or transformed", "redacted": "some fields removed or transformed",
    "filter": "as part of a list", "filtered": "as part of a list",
}

_CSS = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fff; --muted: #57606a; --line: #d0d7de;
  --warn: #9a3412; --warn-bg: #fff1e6; --ok-bg: #eef6ee; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9da7b3;
  --line: #30363d; --warn: #fdba74; --warn-bg: #3b1d0a; --ok-bg: #12261a; } }
body { margin: 0; background: var(--bg); color: var(--fg); font: 16px/1.55 system-ui, sans-serif; }
main, header, footer { max-width: 60rem; margin: 0 auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.tag { display: inline-block; border: 1px solid var(--line); border-radius: 999px; padding: 0 .5rem;
  font-size: .85em; margin: 0 .15rem .15rem 0; }
.table { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: .4rem .5rem; }
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


def _categories(categories: Mapping[str, Sequence[str]], unknown: int = 0) -> str:
    tags = [f'<span class="tag"><code>{_e(c)}</code> '
            f'{_e(", ".join(FORM_TEXT.get(f, f) for f in forms) or "as stored")}</span>'
            for c, forms in categories.items()]
    if unknown:
        tags.append(f'<span class="muted">{unknown} time{"s" if unknown > 1 else ""}: the log does not say '
                    "which kinds of data</span>")
    return "".join(tags) or '<span class="muted">no categorized fields</span>'


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
        f"<style>{_CSS}</style></head><body>",
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
                f"<td>{_categories(r.categories, r.unknown)}</td><td>{r.count}</td>"
                f"<td><time>{_e(r.first)}</time></td><td><time>{_e(r.last)}</time></td></tr>")
        parts.append("</tbody></table></div>")
        parts.append("<h2>Every disclosure</h2>")
        parts.append('<div class="table"><table><thead><tr><th>When</th><th>Recipient</th><th>Purpose</th>'
                     "<th>Kinds of data</th><th>What left</th></tr></thead><tbody>")
        for d in rep.disclosures:
            parts.append(
                f"<tr><td><time>{_e(d.time)}</time></td><td><code>{_e(d.caller)}</code></td>"
                f"<td><code>{_e(d.purpose)}</code></td><td>{_categories(d.categories, 0 if d.known else 1)}</td>"
                f"<td>{_e(DECISION_TEXT.get(d.decision, d.decision))}"
                f"{' (while the policy was being tried out)' if d.report_only else ''}</td></tr>")
        parts.append("</tbody></table></div>")
    parts.append("</main><footer><p class=\"muted\">Requests that were refused are not listed: "
                 "no data left in them.</p></footer></body></html>")
    return "\n".join(parts) + "\n"
