"""`veil keygen` and the audit-key rotation walk-through of docs/keys.md."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Veil, write_keys
from veil.cli import main
from veil.keys import generate_key, load_secret, write_private_file

REC = "personalize.recommendations"


def _keygen(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["keygen", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_owner_only_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "audit.key"
    code, stdout, _ = _keygen(capsys, "--out", str(out))
    assert code == 0 and stdout == ""  # nothing secret on the terminal
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert len(load_secret(f"file:{out}")) == 32  # 256 bits, accepted by veil
    code, _, err = _keygen(capsys, "--out", str(out))
    assert code == 1 and "exists" in err  # never overwrites a key by accident
    printed = _keygen(capsys, "--kind", "token")[1].split()
    assert len(printed) == 1 and len(bytes.fromhex(printed[0])) == 32


def test_keygen_caller_prints_the_policy_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, line = _keygen(capsys, "--kind", "caller")[1].splitlines()
    assert line == f"key sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    out = tmp_path / "caller.key"
    stdout = _keygen(capsys, "--kind", "caller", "--out", str(out))[1]
    assert stdout.strip() == f"key sha256:{hashlib.sha256(out.read_text().strip().encode()).hexdigest()}"


def _requests(v: Veil, n: int) -> None:
    for _ in range(n):
        assert v.get("/customers/c-000001", purpose=REC).status_code == 200


def test_audit_key_rotation_walkthrough(veil_factory: Callable[..., Veil], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    keys = write_keys(keys_dir)  # store, pseudonym, hash stay the same across the restart
    k1, k2 = keys_dir / "k1.key", keys_dir / "k2.key"
    for k in (k1, k2):
        write_private_file(k, generate_key())
    # 1. veil writes with k1
    v = veil_factory("v", overrides={"keys": {**keys, "audit": [{"id": "k1", "secret": f"file:{k1}"}]}})
    v.consent("c-000001", "personalization", notice_version=3)
    _requests(v, 3)
    v.stop()
    # 2. rotate: the new key first (it signs), the old one stays (it verifies the older records)
    ring = [{"id": "k2", "secret": f"file:{k2}"}, {"id": "k1", "secret": f"file:{k1}"}]
    v = veil_factory("v", overrides={"keys": {**keys, "audit": ring}})
    _requests(v, 3)
    v.stop()
    log_dir = str(v.dir / "audit")
    lines = (v.dir / "audit" / "decisions.log").read_text().splitlines()
    kids = {line.split('"kid":"', 1)[1][:2] for line in lines}
    assert kids == {"k1", "k2"}
    # 3. verify: both keys pass; with the config (which lists both) too; the new key alone fails
    assert main(["audit", "verify", "--key", f"k2=file:{k2}", "--key", f"k1=file:{k1}", log_dir]) == 0
    assert main(["audit", "verify", "--config", str(v.config_path)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--key", f"k2=file:{k2}", log_dir]) == 1
    assert "unknown_key" in capsys.readouterr().out
