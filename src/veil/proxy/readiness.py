"""Readiness of a whole veil (every worker), as `/readyz` answers it.

Each worker reports its checks (`Runtime.readiness()`: name → ok), open fields and details. A failed
check becomes a reason code: the proxy's own code where there is one (`policy_unavailable`,
`consent_unavailable`, `audit_unavailable`), `<check>_unavailable` for checks added later; a worker that
does not answer adds `worker_unavailable`. The veil is

    ready       every worker answered and every check passed
    degraded    only checks in DEGRADING failed: veil serves what does not need them (purposes on a
                basis other than consent) and fails the rest closed
    not_ready   anything else

HTTP 200 when ready, else 503; a probe may accept named degrading reasons (`tolerate`), e.g. to keep
serving purposes that need no consent while the consent store is down on every replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REASONS = {"policy": "policy_unavailable", "consent_store": "consent_unavailable",
           "decision_log": "audit_unavailable"}
DEGRADING = frozenset({"consent_unavailable"})
WORKER_UNAVAILABLE = "worker_unavailable"


def reason_of(check: str) -> str:
    return REASONS.get(check, f"{check}_unavailable")


@dataclass(frozen=True)
class WorkerReport:
    worker: str
    answered: bool
    checks: dict[str, bool] = field(default_factory=dict)
    public: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, worker: str, readiness: dict[str, Any]) -> WorkerReport:
        return cls(worker, True, {k: bool(v) for k, v in readiness.get("checks", {}).items()},
                   dict(readiness.get("public", {})), dict(readiness.get("details", {})))

    def to_json(self) -> dict[str, Any]:
        return {"checks": self.checks, "public": self.public, "details": self.details}

    @classmethod
    def from_json(cls, worker: str, raw: Any) -> WorkerReport:
        if not isinstance(raw, dict):
            return cls(worker, False)
        return cls.of(worker, raw)

    @property
    def reasons(self) -> list[str]:
        if not self.answered:
            return [WORKER_UNAVAILABLE]
        return sorted(reason_of(name) for name, ok in self.checks.items() if not ok)


@dataclass(frozen=True)
class Readiness:
    status: str
    reasons: tuple[str, ...]
    workers: tuple[WorkerReport, ...]

    def http_status(self, tolerate: Iterable[str] = ()) -> int:
        blocking = set(self.reasons) - (set(tolerate) & DEGRADING)
        return 503 if blocking else 200

    def open_json(self) -> dict[str, Any]:
        """What anyone may see: the status, reason codes and the open fields (e.g. the mode)."""
        out: dict[str, Any] = {"status": self.status, "reasons": list(self.reasons)}
        out.update(_merge(w.public for w in self.workers if w.answered))
        return out

    def detailed_json(self) -> dict[str, Any]:
        return {**self.open_json(), "workers": [
            {"worker": w.worker, "answered": w.answered, "reasons": w.reasons, "checks": w.checks,
             **w.public, **w.details}
            for w in self.workers
        ]}


def aggregate(reports: Sequence[WorkerReport]) -> Readiness:
    reasons = sorted({r for w in reports for r in w.reasons})
    if not reasons:
        status = "ready"
    elif set(reasons) <= DEGRADING:
        status = "degraded"
    else:
        status = "not_ready"
    return Readiness(status, tuple(reasons), tuple(reports))


def parse_tolerate(values: Iterable[str]) -> set[str]:
    """`tolerate=consent_unavailable[,…]`; raises ValueError naming a code that cannot be tolerated."""
    out: set[str] = set()
    for value in values:
        for code in filter(None, (v.strip() for v in value.split(","))):
            if code not in DEGRADING:
                raise ValueError(f"tolerate accepts {', '.join(sorted(DEGRADING))}, not {code!r}")
            out.add(code)
    return out


def _merge(publics: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One value per open field when the workers agree, else the sorted distinct values."""
    seen: dict[str, list[Any]] = {}
    for p in publics:
        for k, v in p.items():
            if v not in seen.setdefault(k, []):
                seen[k].append(v)
    return {k: vs[0] if len(vs) == 1 else sorted(vs, key=str) for k, vs in seen.items()}
