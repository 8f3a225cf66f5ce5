"""The notice as Markdown, with the same sections and texts as the HTML page (lang/*.toml). Policy
strings are escaped: no Markdown or HTML in them takes effect."""

from __future__ import annotations

import re

from veil.notice._model import Notice, PurposeNotice, Shown, automated_rows, join, obligation_line, source_lines
from veil.notice.lang import Catalog, catalog
from veil.policy.notice import href

_SPECIAL = re.compile(r"([\\`*_\[\]|~!])")
_LEADING = re.compile(r"^(#|[-+=>]|\d+[.)])")


def esc(text: str, *, line_start: bool = False) -> str:
    """Escape a policy string for Markdown (and the HTML a Markdown renderer would pass through);
    `line_start` also defuses a leading list, heading or quote marker."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", " ".join(text.split()))
    if not line_start:
        return text
    return _LEADING.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], text)


def code(text: str, *, cell: bool = False) -> str:
    """A code span: literal inside, so only backticks, line breaks (and `|` in a table) need care."""
    text = " ".join(text.replace("`", "'").split())
    return "`" + (text.replace("|", "\\|") if cell else text) + "`"


def _link(value: str | None, label: str | None = None) -> str:
    if not value:
        return ""
    target = href(value)
    shown = label if label is not None else esc(value)
    return f"[{shown}](<{target}>)" if target else shown


class _Md:
    def __init__(self, notice: Notice, cat: Catalog) -> None:
        self.n, self.c = notice, cat

    def t(self, key: str, **md: str) -> str:
        return esc(self.c.t(key)).format_map(md) if md else esc(self.c.t(key))

    def v(self, name: str) -> str | None:
        return self.n.section.get(name)

    def shown(self, item: Shown) -> str:
        key, text, _ = item
        if text is None:
            return self.t(key)
        return self.t(key, text=esc(text)) if key else esc(text)


def _purpose(m: _Md, p: PurposeNotice) -> list[str]:
    text, _ = p.description_in(m.c.lang)
    out = [f"### {esc(text) if text else code(p.name)}", ""]
    sentences = []
    if p.categories:
        sentences.append(m.t("purpose.uses", data=join(esc(m.c.label(c.name)) for c in p.categories)))
    else:
        sentences.append(m.t("purpose.uses_nothing"))
    sentences.append(m.t("purpose.basis", title=m.t(f"basis.{p.basis.code}"),
                         article=esc(m.c.t("law.art6", point=p.basis.point))))
    if p.retention_parts:
        sentences.append(m.t("purpose.kept", retention=esc(m.c.duration(*p.retention_parts))))
    else:
        sentences.append(m.t("purpose.kept_unknown"))
    sentences.append(m.t("purpose.shared", recipients=join(map(esc, p.recipients))) if p.recipients
                     else m.t("purpose.shared_unknown"))
    out += [" ".join(sentences), ""]
    extra: list[str] = []
    if p.consent is not None:
        where = m.v("withdraw") or m.v("privacy_center")
        extra.append(m.t("purpose.consent", link=_link(where, m.t("purpose.consent_link"))) if where
                     else m.t("purpose.consent_no_link"))
    elif p.basis.code in ("contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"):
        extra.append(m.t(f"purpose.{p.basis.code}"))
    if p.sensitive:
        extra.append(m.t("purpose.sensitive"))
        if m.v("limit_sensitive") and "ccpa" in m.n.jurisdictions:
            extra.append(m.t("purpose.limit", link=_link(m.v("limit_sensitive"), m.t("ccpa.limit_link"))))
    if p.gpc_honored:
        extra.append(m.t("purpose.gpc"))
    elif p.gpc_routes:
        extra.append(m.t("purpose.gpc_routes"))
    if extra:
        out += [" ".join(extra), ""]
    if p.categories:
        cats = [esc(m.c.label(c.name)) + f" ({', '.join(m.t(f'manner.{x}') for x in c.manners)})"
                for c in p.categories]
        out.append(f"- **{m.t('purpose.data')}:** {join(cats)}")
    if p.processing:
        out.append(f"- **{m.t('purpose.processing')}:** "
                   + join(m.t(f"processing.{k}") if m.c.has(f"processing.{k}") else esc(k) for k in p.processing))
    if p.tcf is not None:
        items = [f"{n}. {t}" for n, t in p.tcf.purposes] + [f"{n}. {t}" for n, t in p.tcf.special_features]
        out.append(f"- **{m.t('purpose.tcf_li' if p.tcf.legitimate_interest else 'purpose.tcf')}:** {join(items)}")
    if p.automated is not None:
        out += [f"- **{m.t(label)}:** {m.shown(item)}" for label, item in automated_rows(p.automated, m.c.lang)]
    out.append(f"- {m.t('purpose.reference', name=code(p.name))}")
    return [*out, ""]


def render_markdown(notice: Notice, lang: str = "en") -> str:
    m = _Md(notice, catalog(lang))
    s = notice.section
    gdpr, ccpa = "gdpr" in notice.jurisdictions, "ccpa" in notice.jurisdictions
    meta = []
    if s.get("updated"):
        meta.append(m.t("page.updated", date=esc(s.values["updated"])))
    if notice.version:
        meta.append(m.t("page.version", version=esc(notice.version)))
    meta.append(m.t("page.policy_hash", hash=code(notice.policy_hash)))
    out = [f"# {m.t('page.title_of', controller=esc(notice.controller))}", "",
           f"{m.t('page.intro', controller=esc(notice.controller))} {m.t('page.generated')}", "", " ".join(meta), ""]
    if ccpa:
        out += [f"**{m.t('page.choices_title')}:**", ""]
        out.append("- " + (_link(m.v("opt_out"), m.t("ccpa.do_not_sell")) if m.v("opt_out") and notice.sells_or_shares
                           else m.t("ccpa.do_not_sell") if notice.sells_or_shares else m.t("ccpa.no_sale")))
        if notice.uses_sensitive or m.v("limit_sensitive"):
            out.append("- " + (_link(m.v("limit_sensitive"), m.t("ccpa.limit_link")) if m.v("limit_sensitive")
                               else m.t("ccpa.no_limit")))
        out.append("")
    out += [f"## {m.t('section.controller')}", "", m.t("controller.text", controller=esc(notice.controller)), ""]
    for name, key in (("address", "controller.address"), ("contact", "controller.contact"),
                      ("phone", "controller.phone"), ("dpo", "controller.dpo"),
                      ("representative", "controller.representative")):
        if s.get(name):
            value = _link(s.values[name]) if name == "contact" else esc(s.values[name])
            out.append("- " + m.t(key, **{name: value}))
    if "dpo" in s.values and not s.values["dpo"]:
        out.append("- " + m.t("controller.no_dpo"))
    if s.get("privacy_center"):
        out.append("- " + m.t("controller.privacy_center",
                              link=_link(s.values["privacy_center"], m.t("controller.privacy_center_link"))))
    out += ["", f"## {m.t('section.purposes')}", ""]
    for p in notice.purposes:
        out.extend(_purpose(m, p))
    out += [f"## {m.t('section.categories')}", "",
            f"| {m.t('categories.name')} | {m.t('categories.sensitive')} | {m.t('categories.fields')} | "
            f"{m.t('categories.used_for')} |", "| --- | --- | --- | --- |"]
    for c in notice.categories:
        fields = ", ".join(code(f, cell=True) for f in c.fields)
        sens = f"**{m.t('categories.yes')}**" if c.sensitive else m.t("categories.no")
        out.append(f"| {esc(m.c.label(c.name))} ({code(c.name, cell=True)}) | {sens} | {fields} | "
                   f"{join(map(esc, c.purposes), m.t('categories.not_disclosed'))} |")
    out.append("")
    if notice.shows("source"):
        out += [f"## {m.t('section.source')}", "", " ".join(m.shown(x) for x in source_lines(notice)), ""]
    if notice.shows("obligation"):
        out += [f"## {m.t('section.obligation')}", "", m.shown(obligation_line(notice)), ""]
    if ccpa:
        out += [f"## {m.t('section.disclosures')}", "",
                m.t("disclosures.derived", version=esc(notice.version or notice.policy_hash)), "",
                f"| {m.t('disclosures.category')} | {m.t('disclosures.sold_or_shared')} | "
                f"{m.t('disclosures.business')} |", "| --- | --- | --- |"]
        none = m.t("disclosures.none")
        for d in notice.disclosures:
            out.append(f"| {esc(m.c.label(d.category))} | {join(map(esc, d.sold_or_shared_to), none)} | "
                       f"{join(map(esc, d.business_to), none)} |")
        out.append("")
    if gdpr:
        where = m.v("requests") or m.v("privacy_center")
        out += [f"## {m.t('section.rights')}", "",
                m.t("rights.intro", link=_link(where, m.t("rights.requests_link"))) if where
                else m.t("rights.intro_contact", contact=_link(m.v("contact")) or m.t("controller.unknown")), ""]
        keys = ["access", "rectification", "erasure", "restriction", "portability", "objection",
                *(["withdraw"] if notice.needs_consent else []), *(["automated"] if notice.profiles else []),
                "complaint"]
        out += [f"- {m.t(f'rights.{k}')}" for k in keys]
        if m.v("authority"):
            out += ["", m.t("rights.authority", authority=esc(s.values["authority"]))]
        out.append("")
    if ccpa:
        where = m.v("requests") or m.v("privacy_center") or m.v("contact")
        phone = m.t("ccpa.phone", phone=esc(s.values["phone"])) if m.v("phone") else ""
        out += [f"## {m.t('section.ccpa_rights')}", "",
                m.t("ccpa.intro", link=_link(where, m.t("rights.requests_link")) if where
                    else m.t("controller.unknown"), phone=phone), ""]
        out += [f"- {m.t(f'ccpa.{k}')}" for k in ("know", "delete", "correct", "opt_out", "limit",
                                                   "no_discrimination")]
        out.append("")
    out += [f"## {m.t('section.gpc')}", "", m.t("gpc.honoured") if notice.honors_gpc else m.t("gpc.none"), ""]
    if gdpr and "transfers" in s.values:
        out += [f"## {m.t('section.transfers')}", "",
                esc(s.values["transfers"]) if s.values["transfers"] else m.t("transfers.none"), ""]
    if m.v("contact"):
        out += [f"## {m.t('section.contact')}", "", m.t("contact.text", contact=_link(m.v("contact"))), ""]
    return "\n".join(out)
