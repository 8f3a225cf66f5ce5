"""Generated field-plan code is inspectable: it has a file name that names the plan and the location,
its source is kept (linecache, `FieldPlan.sources`), so a traceback or a profiler points at a readable
line; `veil explain --show-plan` prints it."""

from __future__ import annotations

import linecache
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from veil.cli import main
from veil.redact import Action, FieldRule, compile_plan, native
from veil.redact.paths import parse_path
from veil.redact.transforms import Transform

NATIVE_BUILT = native.cplan is not None
POLICIES = Path(__file__).resolve().parents[2] / "policies"


@dataclass(frozen=True, slots=True)
class Exploding(Transform):
    name: ClassVar[str] = "exploding"

    def __call__(self, value: Any) -> Any:
        raise ValueError("boom")


def test_a_traceback_through_generated_code_shows_its_source() -> None:
    plan = compile_plan([
        FieldRule(parse_path("id"), Action.KEEP, rule_id=0),
        FieldRule(parse_path("profile.email"), Action.TRANSFORM, Exploding(), rule_id=1),
    ], name="GET /things/{id} for p", native=False)
    with pytest.raises(ValueError) as err:
        plan.apply({"id": 1, "profile": {"email": "a@example.com"}})
    frames = [f for f in traceback.extract_tb(err.value.__traceback__) if f.filename.startswith("<veil plan")]
    assert frames, "the generated function is in the traceback"
    frame = frames[-1]
    assert frame.filename == "<veil plan GET /things/{id} for p #1: $>"
    assert frame.line is not None and "_exploding_email" in frame.line  # the readable source line
    assert linecache.getline(frame.filename, frame.lineno).strip() == frame.line
    names = [f for f, _ in plan.sources]
    assert names == ["<veil plan GET /things/{id} for p #1: $>"]
    assert "def filter_obj(d0, ev):" in plan.describe()


@pytest.mark.skipif(not NATIVE_BUILT, reason="veil.redact._cplan is not built here")
def test_the_native_loop_is_listed_by_its_python_rendering() -> None:
    """Where the compiled loop runs a filtered object, the listing still shows the same plan in Python,
    says so, and an error raised inside a transform still reaches the caller with its own frame."""
    plan = compile_plan([
        FieldRule(parse_path("id"), Action.KEEP, rule_id=0),
        FieldRule(parse_path("profile.email"), Action.TRANSFORM, Exploding(), rule_id=1),
    ], name="GET /things/{id} for p", native=True)
    with pytest.raises(ValueError) as err:
        plan.apply({"id": 1, "profile": {"email": "a@example.com"}})
    assert traceback.extract_tb(err.value.__traceback__)[-1].name == "__call__"
    (_name, source), = plan.sources
    assert "run by the native loop (veil.redact._cplan)" in source and "def filter_obj(d0, ev):" in source


def test_explain_show_plan(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["explain", "--policy", str(POLICIES), "--request", "GET /customers/c-1", "--caller", "storefront",
            "--purpose", "personalize.recommendations", "--consent", "personalization=given", "--show-plan"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plan GET /customers/{id} for personalize.recommendations" in out
    assert "#7   transform hash       email" in out and "routes.veil:9:5" in out
    assert "# ---- <veil plan GET /customers/{id} for personalize.recommendations #" in out
    assert "def filter_obj(d0, ev):" in out
    assert main(["explain", "--policy", str(POLICIES), "--request", "GET /nowhere", "--caller", "storefront",
                 "--purpose", "personalize.recommendations", "--show-plan"]) == 1
    assert "no plan: the request is refused before a rule applies" in capsys.readouterr().out
