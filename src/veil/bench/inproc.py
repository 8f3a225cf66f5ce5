"""A shape's request through the real request flow (veil.policy.flow.decide), in-process: the proxy's
flow with only its two ports replaced (the upstream answer is the shape's body, consent comes from the
shape's consented set in memory). What the bench counts and times per field is what the proxy does.

    run = ShapeRun(shape)              # loads and checks the shape's policy set (strict), compiles it
    out = run.once()                   # one request: the flow's Outcome (its body is what leaves)
    leaf_counts(shape)                 # (kept, dropped, transformed) leaves of one response
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from veil.config import FlowSettings
from veil.consent.store import ConsentState, Status
from veil.errors import VeilError
from veil.policy.compile import CompiledPolicy
from veil.policy.flow import Answer, Forward, Outcome, RequestFacts, decide
from veil.policy.load import load_policy
from veil.policy.testing import run_sync

HASH_KEY = hashlib.sha256(b"veil bench in-process hash key").digest()


class Shape(Protocol):
    """What a run reads of a shape (veil.bench.shapes.Shape)."""

    @property
    def name(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def policy_files(self) -> Mapping[str, str]: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def consented(self) -> frozenset[str]: ...
    @property
    def consent_key(self) -> str: ...


def load_shape_policy(shape: Shape, *, strict: bool = True) -> CompiledPolicy:
    """The shape's policy set, loaded the way `veil serve` and `veil check --strict` load it."""
    with tempfile.TemporaryDirectory(prefix="veil-bench-policy-") as tmp:
        for name, text in shape.policy_files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        return load_policy([tmp], hash_key=HASH_KEY, strict_warnings=strict)


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def request_body(self, limit: int) -> bytes:
        return b""

    async def forward(self, fwd: Forward) -> Answer:
        return Answer(200, [("content-type", "application/json")], self.body)


class _Consent:
    """Given for the consented subjects (now, notice version 3), withdrawn for the others."""

    def __init__(self, shape: Shape, now: datetime) -> None:
        self.consented = shape.consented
        self.given = ConsentState(shape.consent_key, Status.GIVEN, now, 3)
        self.withdrawn = ConsentState(shape.consent_key, Status.WITHDRAWN, now, 3)

    async def current(self, subjects: Sequence[str], keys: Sequence[str]
                      ) -> Mapping[tuple[str, str], ConsentState]:
        return {(s, k): self.given if s in self.consented else self.withdrawn for s in subjects for k in keys}


class ShapeRun:
    """One shape's request, ready to run through the flow again and again."""

    def __init__(self, shape: Shape, policy: CompiledPolicy | None = None,
                 settings: FlowSettings | None = None) -> None:
        self.shape = shape
        self.policy = policy if policy is not None else load_shape_policy(shape)
        self.settings = settings or FlowSettings()
        self.now = datetime.now(UTC)
        path, _, query = shape.path.partition("?")
        self.facts = RequestFacts("GET", path.encode(), query.encode(),
                                  [(k.lower().encode(), v.encode()) for k, v in shape.headers])
        self.exchange = _Body(shape.body)
        self.consent = _Consent(shape, self.now)

    def once(self) -> Outcome:
        out = run_sync(decide(self.policy, self.facts, self.exchange, self.consent, self.settings, self.now))
        if out.body == b"" or out.reason.value != "ok":
            raise VeilError(f"shape {self.shape.name}: the flow refused the request ({out.reason.value})",
                            code="bench_shape_refused")
        return out


def leaves(doc: Any) -> int:
    """The scalars of a JSON document (a container, empty or not, is not a field of its own)."""
    n, todo = 0, [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
        else:
            n += 1
    return n


def leaf_counts(shape: Shape, policy: CompiledPolicy | None = None) -> tuple[int, int, int]:
    """(kept, dropped, transformed) leaves of one response, from what the flow sent and its report. Every
    transform of the corpus maps a scalar to a scalar; dropped is every input leaf that did not leave
    (removed, dropped, or in an item whose subject withdrew)."""
    import orjson

    out = ShapeRun(shape, policy).once()
    transformed = sum(out.report.transformed.values()) if out.report is not None else 0
    kept = leaves(orjson.loads(out.body)) - transformed
    return kept, leaves(orjson.loads(shape.body)) - kept - transformed, transformed
