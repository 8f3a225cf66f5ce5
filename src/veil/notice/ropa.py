"""Records of processing activities (GDPR Art. 30(1)): one row per purpose and data category.

A purpose that discloses no category still gets one row (category empty), so every purpose is on record.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from veil.notice._model import Notice, build_notice
from veil.policy.compile import CompiledPolicy

COLUMNS = (
    "controller", "policy_version", "purpose", "description", "lawful_basis", "lawful_basis_article",
    "processing", "category", "sensitive", "disclosed_as", "recipients", "retention", "consent_key",
    "consent_max_age", "gpc_honored", "tcf_purposes", "routes",
)


def rows_of(notice: Notice) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in notice.purposes:
        common: dict[str, Any] = {
            "controller": notice.controller,
            "policy_version": notice.version or notice.policy_hash,
            "purpose": p.name,
            "description": p.description,
            "lawful_basis": p.basis.code,
            "lawful_basis_article": p.basis.article,
            "processing": "; ".join(p.processing),
        }
        tail: dict[str, Any] = {
            "recipients": "; ".join(p.recipients),
            "retention": p.retention or "",
            "consent_key": (p.consent.key or "") if p.consent else "",
            "consent_max_age": (p.consent.max_age or "") if p.consent else "",
            "gpc_honored": p.gpc_honored,
            "tcf_purposes": "; ".join(str(n) for n, _ in p.tcf.purposes) if p.tcf else "",
            "routes": "; ".join(p.routes),
        }
        for c in p.categories or (None,):
            rows.append({
                **common,
                "category": c.name if c else "",
                "sensitive": c.sensitive if c else False,
                "disclosed_as": "; ".join(c.manners) if c else "",
                **tail,
            })
    return [{k: r[k] for k in COLUMNS} for r in rows]


def records_of_processing(policy: CompiledPolicy) -> list[dict[str, Any]]:
    """Art. 30 rows for a compiled policy, in policy order; the controller is the policy name."""
    return rows_of(build_notice(policy))


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a spreadsheet must not read a policy string as a formula
    return value


def records_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def records_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
