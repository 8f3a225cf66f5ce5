"""Transparency generated from the policy: privacy notices (Markdown, HTML, JSON) and GDPR Art. 30
records of processing. One source of truth: the compiled policy that the proxy enforces.

    render_notice(policy, "html" | "md" | "json") → str
    records_of_processing(policy) → list[dict]      records_csv(rows) / records_json(rows) → str
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from veil.errors import VeilError
from veil.notice._model import GPC_TEXT, Notice, build_notice
from veil.notice.html import render_html
from veil.notice.markdown import render_markdown
from veil.notice.ropa import records_csv, records_json, records_of_processing
from veil.policy.compile import CompiledPolicy

FORMATS = ("html", "json", "md")


def notice_json(notice: Notice) -> dict[str, Any]:
    """The notice as plain JSON data (tuples become lists, pairs become objects)."""
    purposes: list[dict[str, Any]] = []
    for p in notice.purposes:
        d = asdict(p)
        d["processing"] = [{"code": k, "text": t} for k, t in p.processing]
        if p.tcf is not None:
            d["tcf"] = {
                "purposes": [{"id": n, "name": t} for n, t in p.tcf.purposes],
                "special_features": [{"id": n, "name": t} for n, t in p.tcf.special_features],
                "legitimate_interest": p.tcf.legitimate_interest,
            }
        d["consent_required"] = p.consent is not None
        d["sensitive"] = p.sensitive
        purposes.append(d)
    out: dict[str, Any] = {
        "controller": notice.controller,
        "version": notice.version,
        "policy_hash": notice.policy_hash,
        "purposes": purposes,
        "categories": [asdict(c) for c in notice.categories],
        "gpc": {"honored": notice.honors_gpc, "header": "Sec-GPC: 1", "explanation": GPC_TEXT},
    }
    result: dict[str, Any] = json.loads(json.dumps(out))  # tuples → lists: equal to what a reader parses
    return result


def render_notice(policy: CompiledPolicy, fmt: str = "html") -> str:
    """The privacy notice for a compiled policy. Deterministic: the same policy gives the same text."""
    if fmt not in FORMATS:
        raise VeilError(f"unknown notice format {fmt!r} (html, md or json)", code="notice_format")
    notice = build_notice(policy)
    if fmt == "html":
        return render_html(notice)
    if fmt == "md":
        return render_markdown(notice)
    return json.dumps(notice_json(notice), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "FORMATS",
    "Notice",
    "build_notice",
    "notice_json",
    "records_csv",
    "records_json",
    "records_of_processing",
    "render_notice",
]
