"""veil.schema and veil.discovery sit below the proxy: no web framework, HTTP client or store, and
discovery does not import the proxy (the proxy hands it its decoder)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["veil.schema.check", "veil.schema.starter", "veil.discovery.recorder",
                                    "veil.discovery.report", "veil.discovery.suggest", "veil.personal"])
def test_no_io_frameworks(module: str) -> None:
    code = (
        f"import sys, {module}; bad = [m for m in ('starlette', 'httpx', 'aiohttp', 'asyncpg', 'sqlite3', "
        "'uvicorn', 'veil.proxy') if m in sys.modules]; print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
