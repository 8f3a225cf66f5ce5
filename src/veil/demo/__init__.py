"""The demo: a legacy personalization API (`veil.demo.upstream`) over synthetic customers
(`veil.demo.data`), the thing veil is put in front of in examples, tests and benchmarks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def policies_dir() -> Path:
    """The example policies: inside the installed package, or at the root of a source checkout."""
    packaged = resources.files("veil").joinpath("policies")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "policies"


__all__ = ["policies_dir"]
