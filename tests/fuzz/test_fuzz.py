"""Fuzzing in the suite: every seed and every regression input replayed in-process, then a bounded
coverage-guided run of each target under atheris (tests/fuzz/run.py).

The bounded run lasts VEIL_FUZZ_SECONDS per target (default 2: a smoke run on every CI build, on top
of the replay). Longer on demand:

    VEIL_FUZZ_SECONDS=300 pytest tests/fuzz -k bounded          # or:
    python -m tests.fuzz.run --all --seconds 600

An input that fails becomes a file in tests/fuzz/regressions/<target>/ (with the fix, and where it
says more, a unit test next to the code it broke); the replay keeps it fixed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.fuzz.targets import TARGETS

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SECONDS = int(os.environ.get("VEIL_FUZZ_SECONDS", "2"))


def inputs(target: str) -> list[Path]:
    out: list[Path] = []
    for kind in ("corpus", "regressions"):
        d = HERE / kind / target
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file())
    return out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_has_a_seed_corpus(target: str) -> None:
    assert len(list((HERE / "corpus" / target).iterdir())) >= 3


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_and_regressions_replay(target: str) -> None:
    for path in inputs(target):
        try:
            TARGETS[target](path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"{target} fails on {path.relative_to(ROOT)}") from exc


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bounded_coverage_guided_run(target: str, tmp_path: Path) -> None:
    require(importlib.util.find_spec("atheris") is not None, "atheris")
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, "--seconds", str(SECONDS),
         "--corpus-out", str(tmp_path / "corpus"), "--artifacts", str(artifacts)],
        cwd=ROOT, capture_output=True, timeout=SECONDS * 5 + 120,
    )
    found = sorted(artifacts.iterdir()) if artifacts.exists() else []
    report = "\n".join(f"  {p.name}: {p.read_bytes()[:300]!r}" for p in found)
    assert proc.returncode == 0 and not found, (
        f"fuzzing {target} found a failure; add the input to tests/fuzz/regressions/{target}/ with the fix\n"
        f"{report}\n{proc.stderr.decode(errors='replace')[-4000:]}")


def test_every_target_says_what_to_instrument() -> None:
    require(importlib.util.find_spec("atheris") is not None, "atheris")
    from tests.fuzz.run import INSTRUMENT

    assert set(INSTRUMENT) == set(TARGETS)
