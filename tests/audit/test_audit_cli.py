from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from veil.audit import AuditLog, pseudonym
from veil.cli import main
from veil.keys import KeyRing, generate_key, write_private_file


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Real key material: the audit key in the environment, the pseudonym key in a 0600 file."""
    audit, pseudo = generate_key(), generate_key()
    monkeypatch.setenv("VEIL_TEST_AUDIT_KEY", audit)
    write_private_file(tmp_path / "pseudonym.key", pseudo)
    return {"audit": audit, "pseudonym": pseudo, "pseudonym_file": str(tmp_path / "pseudonym.key")}


async def make_log(directory: Path, keys: dict[str, str], n: int = 3) -> Path:
    ring = KeyRing.single(bytes.fromhex(keys["audit"]), "k1")
    me = pseudonym(KeyRing.single(bytes.fromhex(keys["pseudonym"])), "alice")
    log = AuditLog(directory / "decisions.log", ring, flush_interval=0)
    await log.start()
    for i in range(n):
        await log.append({"id": f"d{i}", "time": f"2025-02-0{i + 1}T09:00:00Z", "caller": "storefront",
                          "purpose": "personalize.recs", "decision": "redact", "subject": me,
                          "released": True, "disclosed": {"contact.email": ["hash"], "profile": ["clear"]}})
    await log.close()
    return log.path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_verify_ok_and_failed(tmp_path: Path, keys: dict[str, str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = await make_log(tmp_path / "audit", keys)
    code, out, _ = run(["audit", "verify", str(path), "--key", "k1=env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert (code, out.strip()) == (0, "ok: 5 records in 1 files")
    code, out, _ = run(["audit", "verify", str(tmp_path / "audit"), "--key", "env:VEIL_TEST_AUDIT_KEY"],
                       capsys)
    assert code == 0

    lines = path.read_bytes().splitlines(keepends=True)
    del lines[2]
    path.write_bytes(b"".join(lines))
    code, out, _ = run(["audit", "verify", str(path), "--key", "env:VEIL_TEST_AUDIT_KEY"], capsys)
    assert code == 1 and out.startswith(f"FAILED at {path}:3: seq_gap")
    code, out, _ = run(["audit", "verify", str(path), "--key", "env:VEIL_TEST_AUDIT_KEY", "--json"], capsys)
    data = json.loads(out)
    assert code == 1 and data["problem"] == "seq_gap" and data["first_bad"] == [str(path), 3]


async def test_verify_with_config(tmp_path: Path, keys: dict[str, str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    await make_log(tmp_path / "audit", keys)
    config = tmp_path / "veil.yaml"
    config.write_text(
        "upstreams:\n  api:\n    url: http://127.0.0.1:9\n"
        "audit:\n  path: audit/decisions.log\n"
        f"keys:\n  audit: env:VEIL_TEST_AUDIT_KEY\n  pseudonym: file:{keys['pseudonym_file']}\n"
    )
    code, out, _ = run(["audit", "verify", "--config", str(config)], capsys)
    assert (code, out.strip()) == (0, "ok: 5 records in 1 files")
    code, out, _ = run(["audit", "report", "--config", str(config), "--subject", "alice", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["disclosures"]) == 3


async def test_report_table_and_json(tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    await make_log(tmp_path / "audit", keys)
    base = ["audit", "report", str(tmp_path / "audit"), "--key", "env:VEIL_TEST_AUDIT_KEY",
            "--pseudonym-key", f"file:{keys['pseudonym_file']}"]
    code, out, _ = run([*base, "--subject", "alice"], capsys)
    assert code == 0
    assert "alice" not in out
    assert "CALLER" in out and "storefront" in out and "contact.email (hash), profile" in out
    assert "2025-02-01T09:00:00Z" in out and "2025-02-03T09:00:00Z" in out

    monkeypatch.setattr("sys.stdin", io.StringIO("alice\n"))
    code, out, _ = run([*base, "--subject", "-", "--json"], capsys)
    data: dict[str, Any] = json.loads(out)
    assert code == 0 and data["verified"] and data["recipients"][0]["count"] == 3

    code, out, _ = run([*base, "--subject", "nobody"], capsys)
    assert code == 0 and "no disclosures" in out


async def test_usage_errors(tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    path = await make_log(tmp_path / "audit", keys)
    assert run(["audit", "verify", str(path)], capsys)[0] == 2
    assert run(["audit"], capsys)[0] == 2
    assert run(["audit", "report", str(path), "--key", "env:VEIL_TEST_AUDIT_KEY", "--subject", "a"],
               capsys)[0] == 2
    code, _, err = run(["audit", "verify", str(path), "--key", "env:VEIL_TEST_NOT_SET"], capsys)
    assert code == 1 and "VEIL_TEST_NOT_SET" in err
    code, _, err = run(["audit", "verify", str(tmp_path / "missing.log"), "--key", "env:VEIL_TEST_AUDIT_KEY"],
                       capsys)
    assert code == 1 and "no such decision log" in err
