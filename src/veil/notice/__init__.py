"""Transparency generated from the policy: privacy notices (Markdown, HTML, JSON) and GDPR Art. 30
records of processing. One source of truth: the compiled policy that the proxy enforces.

    render_notice(policy, "html" | "md" | "json", lang="en") → str      languages: lang/*.toml
    negotiate(accept_language) → "de" | "en" | ...
    records_of_processing(policy) → list[dict]      records_csv(rows) / records_json(rows) → str
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from veil.errors import VeilError
from veil.notice._model import Notice, build_notice
from veil.notice.html import render_html
from veil.notice.lang import available, catalog, negotiate
from veil.notice.markdown import render_markdown
from veil.notice.ropa import records_csv, records_json, records_of_processing
from veil.policy.compile import CompiledPolicy
from veil.policy.notice import missing

FORMATS = ("html", "json", "md")


def notice_json(notice: Notice, lang: str = "en") -> dict[str, Any]:
    """The notice as plain JSON data (tuples become lists, pairs become objects); words in `lang`."""
    cat = catalog(lang)
    purposes: list[dict[str, Any]] = []
    for p in notice.purposes:
        d = asdict(p)
        d.pop("retention_parts")
        d["description"], _ = p.description_in(lang)
        d["descriptions"] = dict(p.descriptions)
        d["basis"] = {"code": p.basis.code, "article": p.basis.article, "title": cat.t(f"basis.{p.basis.code}")}
        d["processing"] = [{"code": k, "text": cat.t(f"processing.{k}") if cat.has(f"processing.{k}") else k}
                           for k in p.processing]
        if p.tcf is not None:
            d["tcf"] = {
                "purposes": [{"id": n, "name": t} for n, t in p.tcf.purposes],
                "special_features": [{"id": n, "name": t} for n, t in p.tcf.special_features],
                "legitimate_interest": p.tcf.legitimate_interest,
            }
        if p.automated is not None:  # GDPR Art. 13(2)(f): texts by language ("" is the policy's own)
            a = p.automated
            d["automated"] = {"profiling_logic": dict(a.logic), "profiling_effects": dict(a.effects),
                              "automated_decisions": dict(a.decisions), "decides": a.decides,
                              "not_stated": list(a.missing)}
        d["consent_required"] = p.consent is not None
        d["sensitive"] = p.sensitive
        purposes.append(d)
    section = notice.section
    out: dict[str, Any] = {
        "language": cat.lang,
        "controller": notice.controller,
        "version": notice.version,
        "policy_hash": notice.policy_hash,
        "jurisdictions": list(notice.jurisdictions),
        "notice": {k: (v or None) for k, v in section.values.items()},
        # items of the notice section the jurisdictions require and the policy does not state
        "not_stated": sorted({r.item for r, _ in missing(replace(section, jurisdictions=notice.jurisdictions),
                                                          notice.facts)}),
        "purposes": purposes,
        "categories": [asdict(c) for c in notice.categories],
        "disclosures_last_12_months": {
            "derived_from_policy": True,
            "items": [asdict(d) for d in notice.disclosures],
        },
        "gpc": {"honored": notice.honors_gpc, "header": "Sec-GPC: 1",
                "explanation": cat.t("gpc.honoured") if notice.honors_gpc else cat.t("gpc.none")},
    }
    result: dict[str, Any] = json.loads(json.dumps(out))  # tuples → lists: equal to what a reader parses
    return result


def render_notice(policy: CompiledPolicy, fmt: str = "html", lang: str = "en") -> str:
    """The privacy notice for a compiled policy in language `lang`. Deterministic: the same policy and
    language give the same text."""
    if fmt not in FORMATS:
        raise VeilError(f"unknown notice format {fmt!r} (html, md or json)", code="notice_format")
    catalog(lang)  # an unknown language is a VeilError before anything is built
    notice = build_notice(policy)
    if fmt == "html":
        return render_html(notice, lang)
    if fmt == "md":
        return render_markdown(notice, lang)
    return json.dumps(notice_json(notice, lang), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "FORMATS",
    "Notice",
    "available",
    "build_notice",
    "negotiate",
    "notice_json",
    "records_csv",
    "records_json",
    "records_of_processing",
    "render_notice",
]
