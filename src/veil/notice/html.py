"""The notice as one standalone HTML page: semantic markup, inline CSS, no scripts, no external assets.
Every policy string goes through `html.escape`."""

from __future__ import annotations

from html import escape

from veil.notice._model import ART9_TEXT, GPC_TEXT, LIMIT_TEXT, CategoryUse, Notice, PurposeNotice

_CSS = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fff; --muted: #57606a; --line: #d0d7de;
  --warn: #9a3412; --warn-bg: #fff1e6; --ok-bg: #eef6ee; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9da7b3;
  --line: #30363d; --warn: #fdba74; --warn-bg: #3b1d0a; --ok-bg: #12261a; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.55;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main, header, footer { max-width: 46rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .5rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; }
h3 { font-size: 1.1rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
article { border: 1px solid var(--line); border-radius: .5rem; padding: 1rem; margin: 1rem 0; }
dl { display: grid; grid-template-columns: minmax(7rem, max-content) 1fr; gap: .35rem 1rem;
  margin: .75rem 0 0; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 34rem) { dl { grid-template-columns: 1fr; } dd { margin-bottom: .5rem; } }
ul { margin: 0; padding-left: 1.2rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
  overflow-wrap: anywhere; }
.muted, small { color: var(--muted); }
.tag { display: inline-block; border: 1px solid var(--line); border-radius: 999px; padding: 0 .5rem;
  font-size: .85em; margin: 0 .15rem .15rem 0; }
.sensitive { color: var(--warn); background: var(--warn-bg); border-color: var(--warn); font-weight: 600; }
.honoured { background: var(--ok-bg); }
.table { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: .4rem .5rem; }
footer { padding-bottom: 2rem; }
"""


def _e(text: str) -> str:
    return escape(text, quote=True)


def _ul(items: list[str], empty: str) -> str:
    if not items:
        return f'<span class="muted">{_e(empty)}</span>'
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _category(c: CategoryUse) -> str:
    name = f"<code>{_e(c.name)}</code>"
    if c.sensitive:
        name += ' <span class="tag sensitive">sensitive</span>'
    return name + " " + "".join(f'<span class="tag">{_e(m)}</span>' for m in c.manners)


def _consent(p: PurposeNotice) -> str:
    c = p.consent
    if c is None:
        return "Not required (see the lawful basis)."
    parts = [f"Required (consent key <code>{_e(c.key or '')}</code>)."]
    if c.max_age:
        parts.append(f"We ask again after {_e(c.max_age)}.")
    if c.notice_version is not None:
        parts.append(f"Consent must have been given to notice version {c.notice_version} or later.")
    parts.append(f"<strong>{_e(c.withdraw)}</strong>")
    parts.append(f'<br><small>Operators record a withdrawal with <code>{_e(c.withdraw_api)}</code> on the '
                 f"admin API, or <code>{_e(c.withdraw_cli)}</code>.</small>")
    return " ".join(parts)


def _gpc(p: PurposeNotice) -> str:
    if p.gpc_honored:
        return ('<span class="tag honoured">honoured</span> <code>Sec-GPC: 1</code> opts you out of '
                "this purpose.")
    if p.gpc_routes:
        return "Honoured on " + ", ".join(f"<code>{_e(r)}</code>" for r in p.gpc_routes) + "."
    return '<span class="muted">Not applicable: no sale, sharing or targeted advertising.</span>'


def _purpose(p: PurposeNotice) -> str:
    b = p.basis
    rows = [
        ("Lawful basis", f"{_e(b.title)} <small>({_e(b.article)})</small>. {_e(b.plain)}"),
        ("Data used", _ul([_category(c) for c in p.categories],
                          "No personal data is disclosed for this purpose.")),
    ]
    if p.sensitive:
        rows.append(("Sensitive data", _e(ART9_TEXT + (" " + LIMIT_TEXT if p.consent else ""))))
    if p.processing:
        rows.append(("Processing", _ul([_e(t) for _, t in p.processing], "")))
    rows += [
        ("Recipients", _ul([_e(r) for r in p.recipients], "Not stated.")),
        ("Retention", _e(p.retention) if p.retention else '<span class="muted">Not stated.</span>'),
        ("Consent", _consent(p)),
        ("Global Privacy Control", _gpc(p)),
    ]
    if p.tcf is not None:
        items = [f"{n}. {_e(t)}" for n, t in p.tcf.purposes]
        items += [f"Special feature {n}. {_e(t)}" for n, t in p.tcf.special_features]
        label = "IAB TCF v2.2 purposes" + (" (legitimate interest)" if p.tcf.legitimate_interest else "")
        rows.append((label, _ul(items, "")))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    desc = _e(p.description) if p.description else '<span class="muted">No description.</span>'
    return (f'<article id="purpose-{_e(p.name)}"><h3><code>{_e(p.name)}</code></h3><p>{desc}</p>'
            f"<dl>{body}</dl></article>")


def _categories(notice: Notice) -> str:
    rows = []
    for c in notice.categories:
        sens = '<span class="tag sensitive">sensitive</span>' if c.sensitive else "no"
        fields = ", ".join(f"<code>{_e(f)}</code>" for f in c.fields)
        used = (", ".join(f"<code>{_e(p)}</code>" for p in c.purposes)
                or '<span class="muted">not disclosed</span>')
        rows.append(f"<tr><td><code>{_e(c.name)}</code></td><td>{sens}</td><td>{fields}</td><td>{used}</td></tr>")
    return ('<div class="table"><table><thead><tr><th scope="col">Category</th><th scope="col">Sensitive</th>'
            '<th scope="col">Fields</th><th scope="col">Disclosed for</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def render_html(notice: Notice) -> str:
    title = f"Privacy notice: {notice.controller}"
    version = f", version {_e(notice.version)}" if notice.version else ""
    gpc = GPC_TEXT if notice.honors_gpc else (
        "No purpose here sells or shares personal information or uses it for targeted advertising.")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>{_e(title)}</h1>",
        "<p>This notice is generated from the data policy that enforces it "
        f"({_e(notice.controller)}{version}; "
        f"policy hash <code>{_e(notice.policy_hash)}</code>). The purposes below are the only ways your data "
        "leaves our systems through this service; anything not listed is removed.</p></header>",
        "<main>",
        '<section aria-labelledby="purposes"><h2 id="purposes">Purposes</h2>',
        *(_purpose(p) for p in notice.purposes),
        "</section>",
        f'<section aria-labelledby="categories"><h2 id="categories">Data categories</h2>{_categories(notice)}'
        "</section>",
        f'<section aria-labelledby="gpc"><h2 id="gpc">Global Privacy Control</h2><p>{_e(gpc)}</p></section>',
        "</main>",
        f"<footer><small>{_e(notice.controller)}{version}</small></footer>",
        "</body>",
        "</html>",
        "",
    ])
