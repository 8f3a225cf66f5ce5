"""Rows 3s and 3c of `veil bench` against the real PostgreSQL: veil's decision log shipped by veil
itself and by a `veil audit ship` sidecar beside it; both rows answer and the store holds both chains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest
from tests.consent.conftest import PG_URL, pg_schema  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_log_shipped_by_veil_and_by_a_sidecar(tmp_path: Path, pg_schema: str) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    env = {**os.environ, "VEIL_BENCH_PG_URL": f"{PG_URL}?schema={pg_schema}"}
    done = subprocess.run(
        [sys.executable, "-m", "veil", "bench", "--only",
         "veil_enforce_small,veil_enforce_small_ship,veil_enforce_small_ship_sidecar", "--rounds", "1",
         "--duration", "1", "--field-repeats", "0", "--loadgen", "builtin", "--json", str(out)],
        capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr
    data = orjson.loads(out.read_bytes())
    rows = {r["key"]: r for r in data["rows"]}
    assert all(rows[k]["ok"] and rows[k]["bad_responses"] == 0 for k in rows), rows
    assert "veil enforce (profile), log shipped (sidecar)" in done.stdout
    assert data["ratios"]["enforce_small_sidecar_shipped_vs_not"] > 0
    conn = await asyncpg.connect(PG_URL, timeout=10)
    try:
        shipped = dict(await conn.fetch(
            f'SELECT replica, max(shipped_seq) FROM "{pg_schema}".audit_chains GROUP BY replica'))
    finally:
        await conn.close()
    # each veil's chain reached the store: in-process shipping and the sidecar both ship what was served
    assert set(shipped) == {"bench", "bench-sidecar"} and all(n > 0 for n in shipped.values()), shipped
