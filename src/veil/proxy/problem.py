"""application/problem+json (RFC 9457) bodies with veil's stable reason codes."""

from __future__ import annotations

import orjson

from veil.reasons import Reason

PROBLEM_BASE = "https://veil.dev/problems/"


def problem_body(reason: Reason, decision_id: str, detail: str | None = None, *, status: int | None = None
                 ) -> tuple[int, bytes]:
    """(status, body) for a refusal; `status` overrides the reason's (an upstream error status passed on)."""
    code = reason.status if status is None else status
    body = {
        "type": PROBLEM_BASE + reason.value.replace("_", "-"),
        "title": reason.title,
        "status": code,
        "detail": detail or reason.title,
        "reason": reason.value,
        "decision_id": decision_id,
    }
    return code, orjson.dumps(body)
