"""docs/deploy.md, "Writing consent from another system": the documented hash command and SQL block,
run as written (psql) against the local PostgreSQL, are honoured by every worker of a running veil."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.conftest import ROOT, Veil
from tests.e2e.test_consent_race import Pinned, at_once, pin_every_worker
from tests.e2e.test_postgres_replicas import PG_URL, pg_schema, store_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.postgres
DOC = ROOT / "docs" / "deploy.md"
SUBJECT = "c-000777"  # the subject test_consent_race's pinned connections ask for


def documented_sql() -> str:
    text = DOC.read_text()
    at = text.index("<!-- tested by tests/e2e/test_direct_sql.py")
    block = re.search(r"```sql\n(.*?)```", text[at:], re.S)
    assert block, "the SQL block after the marker in docs/deploy.md"
    return block.group(1)


def store_hash(v: Veil) -> tuple[str, str]:
    run = subprocess.run([sys.executable, "-m", "veil", "consent", "hash", "--config", str(v.config_path),
                          "--subject", "-"], input=SUBJECT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    h, key_id = run.stdout.split()
    return h, key_id


def test_documented_direct_sql_withdrawal_is_honoured(
    veil_factory: Callable[..., Veil], pg_schema: str, store_key: tuple[str, bytes], tmp_path: Path  # noqa: F811
) -> None:
    require(shutil.which("psql") is not None, "psql")
    v = veil_factory("direct", overrides={
        "workers": 2, "keys": {"store": store_key[0]},
        "consent": {"url": f"{PG_URL}?schema={pg_schema}", "cache_ttl": 30.0},
    }, wait="/readyz", ready_timeout=60.0)
    v.consent(SUBJECT, "personalization", notice_version=3)
    pins: list[Pinned] = pin_every_worker(v, 2)
    assert at_once(pins) == [(200, None), (200, None)]  # cached on both workers for 30 s
    h, key_id = store_hash(v)
    assert re.fullmatch(r"[0-9a-f]{32}", h) and key_id == "k1"
    script = tmp_path / "withdraw.sql"
    script.write_text(documented_sql())
    started = time.monotonic()
    run = subprocess.run(
        ["psql", PG_URL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"schema={pg_schema}", "-v", f"hash={h}",
         "-v", f"key_id={key_id}", "-v", "consent_key=personalization", "-v", "action=withdrawn",
         "-v", "source=crm", "-f", str(script)],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    while (seen := at_once(pins)) != [(403, "consent_withdrawn")] * 2:
        assert time.monotonic() - started < 1.0, f"still {seen} a second after the direct write"
        time.sleep(0.005)
    took = time.monotonic() - started
    print(f"\ndirect SQL (documented block, psql): both workers block after {took * 1000:.0f} ms "
          f"(psql's own start included)")
    for p in pins:
        p.conn.close()
    show = subprocess.run([sys.executable, "-m", "veil", "consent", "show", "--config", str(v.config_path),
                           "--subject", SUBJECT, "--proof", "--json"], capture_output=True, text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    assert '"source": "crm"' in show.stdout and '"method": "direct-sql"' in show.stdout
    assert '"status": "withdrawn"' in show.stdout
