"""The notice as one standalone HTML page for customers: semantic markup, inline CSS, no scripts, no
external assets; links only to the addresses the policy's `notice` section gives. Texts come from the
language's catalog (lang/*.toml); every policy string goes through `html.escape`.

Layout rules the browser tests hold it to (tests/browser/test_notice_page.py): no word is broken inside
(identifiers never wrap; a table too wide for the screen scrolls in its own focusable region), and no
serious or critical accessibility finding (axe-core).
"""

from __future__ import annotations

from html import escape

from veil.notice._model import (
    CategoryUse,
    Notice,
    PurposeNotice,
    Shown,
    automated_rows,
    obligation_line,
    source_lines,
)
from veil.notice.lang import Catalog, catalog
from veil.policy.notice import href

_CSS = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fff; --muted: #57606a; --line: #d0d7de;
  --warn: #9a3412; --warn-bg: #fff1e6; --ok-bg: #eef6ee; --link: #0550ae; --box: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9da7b3;
  --line: #30363d; --warn: #fdba74; --warn-bg: #3b1d0a; --ok-bg: #12261a; --link: #79c0ff; --box: #161b22; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  overflow-wrap: normal; word-break: normal; hyphens: manual; }
main, header, footer { max-width: 48rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.5rem; }
a { color: var(--link); }
h1 { font-size: 1.6rem; margin: 0 0 .5rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; }
h3 { font-size: 1.1rem; margin: 0 0 .25rem; }
nav ul { columns: 2 14rem; }
article { border: 1px solid var(--line); border-radius: .5rem; padding: 1rem; margin: 1rem 0; }
.choices { border: 2px solid var(--line); background: var(--box); border-radius: .5rem; padding: .75rem 1rem;
  margin: 1rem 0; }
.choices h2 { margin-top: 0; font-size: 1.1rem; }
.choices a { font-weight: 600; }
dl { display: grid; grid-template-columns: minmax(7rem, max-content) 1fr; gap: .35rem 1rem; margin: .75rem 0 0; }
dt { font-weight: 600; }
dd { margin: 0; }
@media (max-width: 34rem) { dl { grid-template-columns: 1fr; } dd { margin-bottom: .5rem; } }
ul { margin: 0; padding-left: 1.2rem; }
li { margin: .15rem 0; }
ul.cell { list-style: none; padding: 0; }
ul.cell li { margin: 0 0 .2rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; white-space: nowrap; }
.muted, small { color: var(--muted); }
.tag { display: inline-block; border: 1px solid var(--line); border-radius: 999px; padding: 0 .5rem;
  font-size: .85em; margin: 0 .15rem .15rem 0; white-space: nowrap; }
.sensitive { color: var(--warn); background: var(--warn-bg); border-color: var(--warn); font-weight: 600; }
.table { overflow-x: auto; margin: .5rem 0; }
.table:focus { outline: 2px solid var(--link); outline-offset: 2px; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; color: var(--muted); padding-bottom: .25rem; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: .4rem .5rem; }
th { white-space: nowrap; }
footer { padding: 1rem 1rem 2rem; color: var(--muted); }
"""


def _e(text: str) -> str:
    return escape(text, quote=True)


class _Page:
    """Rendering state: the notice, its reader's language and the policy's own language."""

    def __init__(self, notice: Notice, cat: Catalog) -> None:
        self.n = notice
        self.c = cat
        self.own = notice.section.language  # the language policy strings are written in

    def t(self, key: str, **html: str) -> str:
        """A catalog text, escaped, with placeholders filled by HTML fragments (already escaped)."""
        return _e(self.c.t(key)).format_map(html) if html else _e(self.c.t(key))

    def policy_text(self, text: str, lang: str = "") -> str:
        """A policy string, marked with its language when it differs from the page's."""
        lang = lang or self.own
        return _e(text) if lang == self.c.lang else f'<span lang="{_e(lang)}">{_e(text)}</span>'

    def link(self, value: str | None, label: str | None = None) -> str:
        """A link to a notice address (`label`: catalog-text already escaped, else the address)."""
        if not value:
            return ""
        target = href(value)
        text = label if label is not None else _e(value)
        return f'<a href="{_e(target)}">{text}</a>' if target else text

    def value(self, name: str) -> str | None:
        return self.n.section.get(name)


# ---------------------------------------------------------------- sections
def _ul(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _category(pg: _Page, c: CategoryUse) -> str:
    out = _e(pg.c.label(c.name))
    if c.sensitive:
        out += f' <span class="tag sensitive">{pg.t("categories.sensitive")}</span>'
    return out + " " + "".join(f'<span class="tag">{pg.t(f"manner.{m}")}</span>' for m in c.manners)


def _join(items: list[str]) -> str:
    return ", ".join(items)


def _purpose_text(pg: _Page, p: PurposeNotice) -> list[str]:
    """The plain-language paragraph: we use … ; legal basis … ; kept for … ; shared with … ; choices."""
    out: list[str] = []
    if p.categories:
        out.append(pg.t("purpose.uses", data=_join([_e(pg.c.label(c.name)) for c in p.categories])))
    else:
        out.append(pg.t("purpose.uses_nothing"))
    article = _e(pg.c.t("law.art6", point=p.basis.point))
    out.append(pg.t("purpose.basis", title=pg.t(f"basis.{p.basis.code}"), article=article))
    if p.retention_parts:
        out.append(pg.t("purpose.kept", retention=_e(pg.c.duration(*p.retention_parts))))
    elif p.retention:
        out.append(pg.t("purpose.kept", retention=pg.policy_text(p.retention)))
    else:
        out.append(pg.t("purpose.kept_unknown"))
    if p.recipients:
        out.append(pg.t("purpose.shared", recipients=_join([pg.policy_text(r) for r in p.recipients])))
    else:
        out.append(pg.t("purpose.shared_unknown"))
    return out


def _purpose_choices(pg: _Page, p: PurposeNotice) -> list[str]:
    out: list[str] = []
    if p.consent is not None:
        withdraw = pg.value("withdraw") or pg.value("privacy_center")
        if withdraw:
            out.append(pg.t("purpose.consent", link=pg.link(withdraw, pg.t("purpose.consent_link"))))
        else:
            out.append(pg.t("purpose.consent_no_link"))
        if p.consent.max_age:
            n, _, unit = p.consent.max_age.partition(" ")
            age = pg.c.duration(int(n), unit) if n.isdigit() else p.consent.max_age
            out.append(pg.t("purpose.consent_again", age=_e(age)))
    elif p.basis.code in ("contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"):
        out.append(pg.t(f"purpose.{p.basis.code}"))
    if p.sensitive:
        out.append(pg.t("purpose.sensitive"))
        limit = pg.value("limit_sensitive")
        if limit and "ccpa" in pg.n.jurisdictions:
            out.append(pg.t("purpose.limit", link=pg.link(limit, pg.t("ccpa.limit_link"))))
    if p.gpc_honored:
        out.append(pg.t("purpose.gpc"))
    elif p.gpc_routes:
        out.append(pg.t("purpose.gpc_routes"))
    return out


def _shown(pg: _Page, item: Shown) -> str:
    key, text, lang = item
    if text is None:
        return pg.t(key)
    html = pg.policy_text(text, lang)
    return pg.t(key, text=html) if key else html


def _purpose(pg: _Page, p: PurposeNotice) -> str:
    text, lang = p.description_in(pg.c.lang)
    title = pg.policy_text(text, lang) if text else f"<code>{_e(p.name)}</code>"
    rows: list[tuple[str, str]] = []
    if p.categories:
        rows.append((pg.t("purpose.data"), _ul([_category(pg, c) for c in p.categories])))
    if p.processing:
        rows.append((pg.t("purpose.processing"),
                     _ul([pg.t(f"processing.{k}") if pg.c.has(f"processing.{k}") else _e(k) for k in p.processing])))
    if p.tcf is not None:
        items = [f"{n}. {pg.policy_text(t, 'en')}" for n, t in p.tcf.purposes]
        items += [f"{n}. {pg.policy_text(t, 'en')}" for n, t in p.tcf.special_features]
        rows.append((pg.t("purpose.tcf_li" if p.tcf.legitimate_interest else "purpose.tcf"), _ul(items)))
    if p.automated is not None:
        rows += [(pg.t(label), _shown(pg, item)) for label, item in automated_rows(p.automated, pg.c.lang)]
    details = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    ref = pg.t("purpose.reference", name=f"<code>{_e(p.name)}</code>")
    return (f'<article id="purpose-{_e(p.name)}" aria-labelledby="h-{_e(p.name)}">'
            f'<h3 id="h-{_e(p.name)}">{title}</h3>'
            f"<p>{' '.join(_purpose_text(pg, p))}</p>"
            + "".join(f"<p>{x}</p>" for x in _purpose_choices(pg, p))
            + (f"<dl>{details}</dl>" if details else "")
            + f'<p><small>{ref}</small></p></article>')


def _controller(pg: _Page) -> str:
    s = pg.n.section
    lines = [pg.t("controller.text", controller=_e(pg.n.controller))]
    items: list[str] = []
    if s.get("address"):
        items.append(pg.t("controller.address", address=_e(s.values["address"])))
    if s.get("contact"):
        items.append(pg.t("controller.contact", contact=pg.link(s.values["contact"])))
    if s.get("phone"):
        items.append(pg.t("controller.phone", phone=pg.link("tel:" + "".join(
            ch for ch in s.values["phone"] if ch.isdigit() or ch == "+"), _e(s.values["phone"]))))
    if s.get("dpo"):
        items.append(pg.t("controller.dpo", dpo=_e(s.values["dpo"])))
    elif "dpo" in s.values:
        items.append(pg.t("controller.no_dpo"))
    if s.get("representative"):
        items.append(pg.t("controller.representative", representative=_e(s.values["representative"])))
    if s.get("privacy_center"):
        items.append(pg.t("controller.privacy_center",
                          link=pg.link(s.values["privacy_center"], pg.t("controller.privacy_center_link"))))
    return f"<p>{lines[0]}</p>" + (_ul(items) if items else "")


def _table(head: list[str], rows: list[list[str]], label: str) -> str:
    th = "".join(f'<th scope="col">{h}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    # a wide table scrolls inside its own region (never the page, never by breaking words): keyboard
    # users reach it with Tab, screen readers hear its name
    return (f'<div class="table" role="region" tabindex="0" aria-label="{label}">'
            f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>")


def _cell_list(items: list[str], empty: str) -> str:
    if not items:
        return f'<span class="muted">{empty}</span>'
    return '<ul class="cell">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _categories(pg: _Page) -> str:
    rows = []
    for c in pg.n.categories:
        sens = (f'<span class="tag sensitive">{pg.t("categories.yes")}</span>' if c.sensitive
                else pg.t("categories.no"))
        fields = ", ".join(f"<code>{_e(f)}</code>" for f in c.fields)
        used = _cell_list([f'<a href="#purpose-{_e(p)}"><code>{_e(p)}</code></a>' for p in c.purposes],
                          pg.t("categories.not_disclosed"))
        rows.append([_e(pg.c.label(c.name)) + f"<br><code>{_e(c.name)}</code>", sens, fields, used])
    head = [pg.t("categories.name"), pg.t("categories.sensitive"), pg.t("categories.fields"),
            pg.t("categories.used_for")]
    return _table(head, rows, pg.t("section.table_of", title=pg.t("section.categories")))


def _disclosures(pg: _Page) -> str:
    version = pg.n.version or pg.n.policy_hash
    rows = []
    for d in pg.n.disclosures:
        none = pg.t("disclosures.none")
        rows.append([
            _e(pg.c.label(d.category)) + (f' <span class="tag sensitive">{pg.t("categories.sensitive")}</span>'
                                          if d.sensitive else ""),
            _cell_list([pg.policy_text(r) for r in d.sold_or_shared_to], none),
            _cell_list([pg.policy_text(r) for r in d.business_to], none),
        ])
    head = [pg.t("disclosures.category"), pg.t("disclosures.sold_or_shared"), pg.t("disclosures.business")]
    return (f'<p>{pg.t("disclosures.derived", version=_e(version))}</p>'
            + _table(head, rows, pg.t("section.table_of", title=pg.t("section.disclosures"))))


def _rights(pg: _Page) -> str:
    s = pg.n.section
    where = s.get("requests") or s.get("privacy_center")
    if where:
        intro = pg.t("rights.intro", link=pg.link(where, pg.t("rights.requests_link")))
    else:
        contact = s.get("contact")
        intro = pg.t("rights.intro_contact",
                     contact=pg.link(contact) if contact else pg.t("controller.unknown"))
    keys = ["access", "rectification", "erasure", "restriction", "portability", "objection"]
    if pg.n.needs_consent:
        keys.append("withdraw")
    if pg.n.profiles:
        keys.append("automated")
    keys.append("complaint")
    out = f"<p>{intro}</p>" + _ul([pg.t(f"rights.{k}") for k in keys])
    if s.get("authority"):
        out += f'<p>{pg.t("rights.authority", authority=_e(s.values["authority"]))}</p>'
    return out


def _ccpa_rights(pg: _Page) -> str:
    s = pg.n.section
    where = s.get("requests") or s.get("privacy_center") or s.get("contact")
    phone = pg.t("ccpa.phone", phone=_e(s.values["phone"])) if s.get("phone") else ""
    intro = pg.t("ccpa.intro", link=pg.link(where, pg.t("rights.requests_link")) if where
                 else pg.t("controller.unknown"), phone=phone)
    keys = ["know", "delete", "correct", "opt_out", "limit", "no_discrimination"]
    return f"<p>{intro}</p>" + _ul([pg.t(f"ccpa.{k}") for k in keys])


def _choices(pg: _Page) -> str:
    """CCPA: the two links, conspicuous, near the top of the page."""
    s = pg.n.section
    items: list[str] = []
    if pg.n.sells_or_shares:
        items.append(pg.link(s.get("opt_out"), pg.t("ccpa.do_not_sell")) if s.get("opt_out")
                     else pg.t("ccpa.do_not_sell"))
    else:
        items.append(pg.t("ccpa.no_sale"))
    if pg.n.uses_sensitive or s.get("limit_sensitive"):
        items.append(pg.link(s.get("limit_sensitive"), pg.t("ccpa.limit_link")) if s.get("limit_sensitive")
                     else pg.t("ccpa.no_limit"))
    if s.get("withdraw") and pg.n.needs_consent:
        items.append(pg.link(s.get("withdraw"), pg.t("purpose.consent_link")))
    return (f'<section class="choices" aria-labelledby="choices"><h2 id="choices">{pg.t("page.choices_title")}</h2>'
            f"{_ul(items)}</section>")


def render_html(notice: Notice, lang: str = "en") -> str:
    pg = _Page(notice, catalog(lang))
    s = notice.section
    gdpr, ccpa = "gdpr" in notice.jurisdictions, "ccpa" in notice.jurisdictions
    sections: list[tuple[str, str, str]] = [("controller", pg.t("section.controller"), _controller(pg))]
    purposes = "".join(_purpose(pg, p) for p in notice.purposes)
    sections.append(("purposes", pg.t("section.purposes"), purposes))
    sections.append(("categories", pg.t("section.categories"), _categories(pg)))
    if notice.shows("source"):
        sections.append(("source", pg.t("section.source"),
                         "".join(f"<p>{_shown(pg, x)}</p>" for x in source_lines(notice))))
    if notice.shows("obligation"):
        sections.append(("obligation", pg.t("section.obligation"), f"<p>{_shown(pg, obligation_line(notice))}</p>"))
    if ccpa:
        sections.append(("disclosures", pg.t("section.disclosures"), _disclosures(pg)))
    if gdpr:
        sections.append(("rights", pg.t("section.rights"), _rights(pg)))
    if ccpa:
        sections.append(("ccpa-rights", pg.t("section.ccpa_rights"), _ccpa_rights(pg)))
    gpc = pg.t("gpc.honoured") if notice.honors_gpc else pg.t("gpc.none")
    sections.append(("gpc", pg.t("section.gpc"), f"<p>{gpc}</p>"))
    if gdpr and "transfers" in s.values:
        text = _e(s.values["transfers"]) if s.values["transfers"] else pg.t("transfers.none")
        sections.append(("transfers", pg.t("section.transfers"), f"<p>{text}</p>"))
    if s.get("contact"):
        contact = pg.t("contact.text", contact=pg.link(s.values["contact"]))
        sections.append(("contact", pg.t("section.contact"), f"<p>{contact}</p>"))
    title = pg.t("page.title_of", controller=_e(notice.controller))
    meta = []
    if s.get("updated"):
        day = _e(s.values["updated"])
        meta.append(pg.t("page.updated", date=f'<time datetime="{day}">{day}</time>'))
    if notice.version:
        meta.append(pg.t("page.version", version=_e(notice.version)))
    meta.append(pg.t("page.policy_hash", hash=f"<code>{_e(notice.policy_hash)}</code>"))
    version = " · " + _e(notice.version) if notice.version else ""
    nav = _ul([f'<a href="#{sid}">{head}</a>' for sid, head, _ in sections])
    body = "".join(f'<section aria-labelledby="{sid}"><h2 id="{sid}">{head}</h2>{html}</section>'
                   for sid, head, html in sections)
    return "\n".join([
        "<!DOCTYPE html>",
        f'<html lang="{_e(pg.c.lang)}">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>{title}</h1>",
        f"<p>{pg.t('page.intro', controller=_e(notice.controller))} {pg.t('page.generated')}</p>",
        f'<p class="muted">{" ".join(meta)}</p>',
        _choices(pg) if ccpa else "",
        f'<nav aria-labelledby="toc"><h2 id="toc">{pg.t("page.contents")}</h2>{nav}</nav>',
        "</header>",
        f"<main>{body}</main>",
        f"<footer><small>{_e(notice.controller)}{version}</small></footer>",
        "</body>",
        "</html>",
        "",
    ])
