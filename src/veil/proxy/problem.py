"""application/problem+json (RFC 9457) bodies with veil's stable reason codes."""

from __future__ import annotations

import orjson

from veil.policy.decision import REASONS

PROBLEM_BASE = "https://veil.dev/problems/"


def problem_body(reason: str, decision_id: str, detail: str | None = None) -> tuple[int, bytes]:
    status, title = REASONS.get(reason, REASONS["internal_error"])
    body = {
        "type": PROBLEM_BASE + reason.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail or title,
        "reason": reason,
        "decision_id": decision_id,
    }
    return status, orjson.dumps(body)
