"""veil's own data at rest: no raw subject ids in the consent store or the decision log, owner-only
files and directories, and a key file others can read stops `veil serve` before it listens."""

from __future__ import annotations

import secrets
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.conftest import Veil, write_keys
from veil.audit.log import AuditLog
from veil.commands.demo import prepare
from veil.keys import KeyRing

REC = "personalize.recommendations"
CUSTOMERS = ("c-000001", "c-000002", "c-000004")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _store_bytes(db: Path) -> bytes:
    paths = (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
    return b"".join(p.read_bytes() for p in paths if p.exists())


def _log_bytes(audit_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(audit_dir.iterdir()) if p.is_file())


def test_no_subject_ids_at_rest_and_owner_only_files(veil_factory: Callable[..., Veil]) -> None:
    # ids that cannot occur by chance in a file, plus demo customers whose data is disclosed
    odd = [f"subject-{secrets.token_hex(6)}@example.org" for _ in range(5)]
    # paths relative to veil.yaml, in directories veil creates itself
    v = veil_factory(overrides={
        "consent": {"url": "sqlite:///state/consent/consent.db"},
        "audit": {"path": "state/audit/decisions.log", "flush_ms": 1},
    })
    db = v.dir / "state" / "consent" / "consent.db"
    for sid in (*odd, *CUSTOMERS):
        v.consent(sid, "personalization", notice_version=3, source="signup-form")
    for sid in CUSTOMERS:
        r = v.get(f"/customers/{sid}", purpose=REC)
        assert r.status_code == 200, r.text
    assert v.get("/customers?limit=5", purpose=REC).status_code == 200
    assert db.is_file()
    audit_dir = v.dir / "state" / "audit"

    def check() -> None:
        store, log = _store_bytes(db), _log_bytes(audit_dir)
        assert b"personalization" in store and b"storefront" in log  # we are reading the right files
        for sid in (*odd, *CUSTOMERS):
            assert sid.encode() not in store, "a raw subject id is in the consent store"
            assert sid.encode() not in log, "a raw subject id is in the decision log"

    check()  # while running: the WAL holds the recent writes
    # the audit-scoped report still finds the subject's disclosures by pseudonym
    r = v.client.get(f"{v.admin}/audit/report", params={"subject": "c-000001"},
                     headers={"Authorization": f"Bearer {v.tokens['audit']}"})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["verified"] is True
    assert "c-000001" not in r.text
    assert {(x["caller"], x["purpose"]) for x in rep["recipients"]} == {("storefront", REC)}
    assert rep["recipients"][0]["count"] == 2  # its profile, and the list it was an item of
    v.stop()
    check()  # after a clean stop (WAL checkpointed, head file written)

    # everything veil created is owner-only
    log = audit_dir / "decisions.log"
    files = [db, log, log.with_name("decisions.log.head")]
    files += [p for p in (db.with_name("consent.db-wal"), db.with_name("consent.db-shm")) if p.exists()]
    for f in files:
        assert f.is_file(), f
        assert _mode(f) == 0o600, f"{f.name}: {_mode(f):o}"
    for d in (db.parent, audit_dir):
        assert _mode(d) == 0o700, f"{d}: {_mode(d):o}"


async def test_missing_parents_of_the_audit_dir_are_owner_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "deep" / "er" / "audit" / "decisions.log", KeyRing.single(b"k" * 32))
    await log.start()
    await log.close()
    for d in (tmp_path / "deep", tmp_path / "deep" / "er", tmp_path / "deep" / "er" / "audit"):
        assert _mode(d) == 0o700, f"{d}: {_mode(d):o}"


def test_demo_keys_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    prepare(directory, "127.0.0.1", 18080, 18081, 19000)
    assert _mode(directory) == 0o700 and _mode(directory / "keys") == 0o700
    keys = sorted((directory / "keys").iterdir())
    assert len(keys) == 7
    for k in keys:
        assert _mode(k) == 0o600, k.name
        assert len(bytes.fromhex(k.read_text().strip())) == 32


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("name", ["store", "audit"])
def test_key_file_readable_by_others_stops_serve(tmp_path: Path, name: str) -> None:
    keys = write_keys(tmp_path)
    bad = Path(keys[name][len("file:"):])
    bad.chmod(0o644)
    pport, aport = free_port(), free_port()
    cfg = {
        "listen": {"proxy": f"127.0.0.1:{pport}", "admin": f"127.0.0.1:{aport}"},
        "upstreams": {"demo": {"url": "http://127.0.0.1:9"}},
        "policy": {"paths": [str(Path(__file__).resolve().parents[2] / "policies")], "watch": False},
        "consent": {"url": "sqlite:///consent.db"},
        "keys": keys,
    }
    (tmp_path / "veil.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "veil", "serve", "--config", str(tmp_path / "veil.yaml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0] and "chmod 600" in lines[0] and "group or others" in lines[0]
    assert not _listening(pport) and not _listening(aport)
    assert not (tmp_path / "consent.db").exists()  # stopped before touching any data
