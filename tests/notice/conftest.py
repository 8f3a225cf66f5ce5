"""Factories for the notice tests: the example policy set, the packs, and policies written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from veil.policy import load_policy
from veil.policy.compile import CompiledPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies"
PACKS = ROOT / "policies" / "packs"


@pytest.fixture(scope="session")
def example() -> CompiledPolicy:
    return load_policy([EXAMPLE])


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], CompiledPolicy]:
    def make(text: str) -> CompiledPolicy:
        path = tmp_path / "policy.veil"
        path.write_text(text, encoding="utf-8")
        return load_policy([path])

    return make
