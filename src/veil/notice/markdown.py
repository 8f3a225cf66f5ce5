"""The notice as Markdown. Policy strings are escaped: no Markdown or HTML in them takes effect."""

from __future__ import annotations

import re

from veil.notice._model import ART9_TEXT, GPC_TEXT, LIMIT_TEXT, CategoryUse, Notice, PurposeNotice, join

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


def _category(c: CategoryUse) -> str:
    label = f"{esc(c.name)} **(sensitive)**" if c.sensitive else esc(c.name)
    return f"{label}: {', '.join(c.manners)}"


def _purpose(p: PurposeNotice) -> list[str]:
    out = [f"## {esc(p.name)}", "", esc(p.description, line_start=True) or "_No description._", ""]
    b = p.basis
    out.append(f"- **Lawful basis:** {esc(b.title)} ({b.article}). {esc(b.plain)}")
    if p.processing:
        out.append(f"- **Kinds of processing:** {join(esc(t) for _, t in p.processing)}")
    cats = [_category(c) for c in p.categories]
    out.append(f"- **Data used:** {join(cats, 'no personal data is disclosed for this purpose')}")
    if p.sensitive:
        out.append(f"- **Sensitive data:** {ART9_TEXT}" + (f" {LIMIT_TEXT}" if p.consent else ""))
    out.append(f"- **Recipients:** {join(map(esc, p.recipients), 'not stated')}")
    out.append(f"- **Retention:** {esc(p.retention) if p.retention else 'not stated'}")
    if p.consent is None:
        out.append("- **Consent:** not required (see the lawful basis).")
    else:
        c = p.consent
        line = f"- **Consent:** required (consent key {code(c.key or '')}"
        if c.max_age:
            line += f"; asked again after {esc(c.max_age)}"
        if c.notice_version is not None:
            line += f"; must have been given to notice version {c.notice_version} or later"
        out.append(line + ").")
        out.append(f"  {c.withdraw} Operators record a withdrawal with {code(c.withdraw_api)} on the "
                   f"admin API, or {code(c.withdraw_cli)}.")
    if p.gpc_honored:
        out.append("- **Global Privacy Control:** honoured (`Sec-GPC: 1` opts you out of this purpose).")
    elif p.gpc_routes:
        out.append(f"- **Global Privacy Control:** honoured on {join(esc(r) for r in p.gpc_routes)}.")
    else:
        out.append("- **Global Privacy Control:** not applicable (no sale, sharing or targeted advertising).")
    if p.tcf is not None:
        items = [f"{n}. {t}" for n, t in p.tcf.purposes] + [f"special feature {n}. {t}"
                                                            for n, t in p.tcf.special_features]
        li = " (on legitimate interest)" if p.tcf.legitimate_interest else ""
        out.append(f"- **IAB TCF v2.2 purposes{li}:** {join(items)}")
    return [*out, ""]


def render_markdown(notice: Notice) -> str:
    version = f", version {esc(notice.version)}" if notice.version else ""
    out = [f"# Privacy notice: {esc(notice.controller)}", "",
           f"This notice is generated from the data policy that enforces it ({esc(notice.controller)}"
           f"{version}; policy hash {code(notice.policy_hash)}). Every purpose below is the only way your "
           "data leaves our systems through this service; anything not listed is removed.", ""]
    for p in notice.purposes:
        out.extend(_purpose(p))
    out += ["## Data categories", "", "| Category | Sensitive | Fields | Disclosed for |",
            "| --- | --- | --- | --- |"]
    for c in notice.categories:
        fields = ", ".join(code(f, cell=True) for f in c.fields)
        out.append(f"| {esc(c.name)} | {'**yes**' if c.sensitive else 'no'} | {fields} | "
                   f"{join(map(esc, c.purposes), 'not disclosed')} |")
    out += ["", "## Global Privacy Control", "", GPC_TEXT if notice.honors_gpc else
            "No purpose here sells or shares personal information or uses it for targeted advertising.", ""]
    return "\n".join(out)
