"""The store from the command line: `veil audit ship --once/--migrate`, `verify --store`,
`report --store [--format html]`, `prune` (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from tests.audit.test_audit_cli import keys, make_log, run  # noqa: F401  (fixture)
from tests.consent.conftest import PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def config(tmp_path: Path, keys: dict[str, str], pg_schema: str) -> Path:  # noqa: F811
    cfg = {
        "upstreams": {"demo": {"url": "http://127.0.0.1:9"}},
        "policy": {"paths": [str(Path(__file__).resolve().parents[2] / "policies")]},
        "audit": {"path": str(tmp_path / "audit" / "decisions.log"),
                  "ship": {"url": f"{PG_URL}?schema={pg_schema}", "replica": "cli-test", "partition": "day"}},
        "keys": {"audit": "env:VEIL_TEST_AUDIT_KEY", "pseudonym": f"file:{keys['pseudonym_file']}"},
    }
    path = tmp_path / "veil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ship_verify_report_prune(tmp_path: Path, keys: dict[str, str], config: Path,  # noqa: F811
                                  pg_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"{PG_URL}?schema={pg_schema}"
    code, out, _ = run(["audit", "ship", "--config", str(config), "--migrate"], capsys)
    assert (code, out.strip()) == (0, "store ready (partitions: day)")
    asyncio.run(make_log(tmp_path / "audit", keys))
    code, out, _ = run(["audit", "ship", "--config", str(config), "--once"], capsys)
    assert (code, out.strip()) == (0, "all shipped")

    code, out, _ = run(["audit", "verify", "--store", store, "--key", "env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert code == 0, out
    assert out.splitlines()[0].startswith("ok      cli-test/main (#1): 5 records (seq 1..5), closed")
    code, out, _ = run(["audit", "verify", "--config", str(config), "--store", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["chains"][0]["replica"] == "cli-test"

    code, out, _ = run(["audit", "report", "--config", str(config), "--store", "--subject", "alice"], capsys)
    assert code == 0, out
    assert "storefront  personalize.recs  contact.email (hash), profile  3" in out
    code, out, _ = run(["audit", "report", "--config", str(config), "--store", "--subject", "alice", "--format",
                        "json"], capsys)
    assert json.loads(out)["recipients"][0]["count"] == 3
    code, page, _ = run(["audit", "report", "--config", str(config), "--store", "--subject", "alice", "--format",
                         "html"], capsys)
    assert code == 0 and page.startswith("<!doctype html>") and "alice" not in page
    assert "<code>storefront</code>" in page and "personalize.recs" in page

    # retention: everything before the given date goes, behind signed markers; what remains verifies
    code, out, _ = run(["audit", "prune", "--config", str(config), "--before", "2999-01-01"], capsys)
    assert code == 0 and out.strip().endswith("5 records removed, before 2999-01-01T00:00:00+00:00"), out
    code, out, _ = run(["audit", "verify", "--store", store, "--key", "env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert code == 0 and "5 records up to seq 5 removed (retention" in out, out


def test_usage_errors(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["audit", "verify", "--store", "mysql://x", "--key", "env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert code == 2 and "--store must be a postgresql:// URL" in err
    code, _, err = run(["audit", "verify", "--store", f"{PG_URL}?schema=x"], capsys)
    assert code == 2 and "give --key" in err
    code, _, err = run(["audit", "verify", "--store", "--key", "env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert code == 2 and "audit.ship.url" in err
