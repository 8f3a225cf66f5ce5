"""The house stays a pipeline: the import contracts in pyproject.toml ([tool.importlinter]) hold —
a lower layer never imports a higher one, the pure core (policy, redact) imports no I/O, and no
sibling modules import each other in a cycle. Run by import-linter on the installed source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
                          " sys.exit(lint_imports_command())", "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert "3 kept, 0 broken" in report, report


def test_the_core_is_importable_without_the_io_stack() -> None:
    """The flow, the compiler and the redaction engine load without starlette, uvicorn, httpx, aiohttp
    or asyncpg: what the contracts say, seen from a fresh interpreter."""
    code = ("import sys, veil.policy.flow, veil.policy.testing, veil.redact.engine; "
            "bad = [m for m in ('starlette', 'uvicorn', 'httpx', 'aiohttp', 'asyncpg', 'veil.proxy')"
            " if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
