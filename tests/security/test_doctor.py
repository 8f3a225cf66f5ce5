"""`veil doctor`: one test per finding, and a clean deployment with none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import write_keys, write_tokens
from tests.security.conftest import copy_policies
from veil.cli import main
from veil.config import parse_config
from veil.doctor import NOTE, WARNING, Finding, inspect, is_loopback


def clean(tmp: Path) -> dict[str, Any]:
    """A deployment doctor has nothing to say about: loopback listeners, every key and token from
    owner-only files, an enforcing mode, one worker."""
    tmp.mkdir(parents=True, exist_ok=True)
    _, refs = write_tokens(tmp)
    read = tmp / "read.token"
    read.write_text("read-token-0123456789abcdef")
    read.chmod(0o600)
    return {
        "listen": {"proxy": "127.0.0.1:8080", "admin": "127.0.0.1:8081"},
        "upstreams": {"api": {"url": "http://127.0.0.1:9000"}},
        "policy": {"paths": [str(copy_policies(tmp / "policies"))]},
        "consent": {"url": f"sqlite:///{tmp / 'data' / 'consent.db'}"},
        "audit": {"path": str(tmp / "audit" / "decisions.log")},
        "keys": write_keys(tmp),
        "admin": {"tokens": {**refs, "read": f"file:{read}"}},
        "environment": "production",
    }


def findings(cfg: dict[str, Any]) -> list[Finding]:
    return [f for f in inspect(parse_config(cfg)) if f.severity == WARNING]


def codes(cfg: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f.code, f.key) for f in findings(cfg)}


def test_clean_config_has_no_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = clean(tmp_path)
    assert findings(cfg) == []
    (tmp_path / "veil.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["doctor", "--config", str(tmp_path / "veil.yaml")]) == 0
    assert "no findings" in capsys.readouterr().out


def test_cli_exits_1_and_says_what_to_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = clean(tmp_path)
    cfg["mode"] = "report-only"
    (tmp_path / "veil.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["doctor", "--config", str(tmp_path / "veil.yaml")]) == 1
    out = capsys.readouterr().out
    assert "warning[report_only_in_production] mode:" in out and "fix: set mode: enforce" in out
    assert main(["doctor", "--json", "--config", str(tmp_path / "veil.yaml")]) == 1
    assert '"code": "report_only_in_production"' in capsys.readouterr().out


def test_admin_on_a_public_address_needs_tokens_and_tls(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["listen"]["admin"] = "0.0.0.0:8081"
    assert codes(cfg) == {("tls_missing", "admin.tls")}  # all tokens set: only TLS is missing
    cfg["admin"]["tokens"] = {"consent": cfg["admin"]["tokens"]["consent"]}
    assert codes(cfg) == {
        ("tls_missing", "admin.tls"), ("admin_scope_untokened", "admin.tokens.audit"),
        ("admin_scope_untokened", "admin.tokens.reload"), ("admin_read_open", "admin.tokens.read"),
    }
    cfg["listen"]["admin"] = "[::1]:8081"  # loopback: open read scope and missing tokens are fine
    assert codes(cfg) == set()


def test_proxy_on_a_public_address_without_tls(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["listen"]["proxy"] = "10.1.2.3:8080"
    assert codes(cfg) == {("tls_missing", "tls")}
    pem = tmp_path / "server.pem"
    pem.write_text("not checked here")
    pem.chmod(0o600)
    cfg["tls"] = {"cert": str(pem), "key": str(pem)}
    assert codes(cfg) == set()
    pem.chmod(0o640)
    assert codes(cfg) == {("permissive_mode", "tls.key")}


def test_report_only_in_production(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["mode"] = "report-only"
    assert codes(cfg) == {("report_only_in_production", "mode")}
    cfg["environment"] = "staging"
    assert codes(cfg) == set()


def test_an_unsynced_decision_log_in_production(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    for mode in ("interval", "always"):
        cfg["audit"]["fsync"] = mode
        assert codes(cfg) == set()
    cfg["audit"]["fsync"] = "never"
    assert codes(cfg) == {("audit_never_synced", "audit.fsync")}
    cfg["environment"] = "staging"
    assert codes(cfg) == set()


def test_permissive_key_files_and_data(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    Path(cfg["keys"]["audit"][5:]).chmod(0o644)
    Path(cfg["admin"]["tokens"]["consent"][5:]).chmod(0o604)
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    (tmp_path / "data" / "consent.db").write_bytes(b"")
    (tmp_path / "data" / "consent.db").chmod(0o644)
    (tmp_path / "audit").mkdir(mode=0o700)
    (tmp_path / "audit" / "decisions.log").write_bytes(b"")
    (tmp_path / "audit" / "decisions.log").chmod(0o640)
    found = findings(cfg)
    assert {(f.code, f.key) for f in found} == {
        ("permissive_mode", "keys.audit"), ("permissive_mode", "admin.tokens.consent"),
        ("permissive_mode", "consent.url"), ("permissive_mode", "audit.path"),
    }
    assert len([f for f in found if f.key == "consent.url"]) == 2  # the directory and the file
    fixes = {f.fix for f in found}
    assert f"chmod 700 {tmp_path / 'data'}" in fixes
    assert f"chmod 600 {tmp_path / 'data' / 'consent.db'}" in fixes


def test_missing_key_file(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    Path(cfg["keys"]["store"][5:]).unlink()
    assert codes(cfg) == {("key_file_missing", "keys.store")}


def test_sqlite_with_several_workers(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["workers"] = 4
    assert codes(cfg) == {("sqlite_workers", "workers")}
    cfg["consent"]["url"] = "postgresql://veil@db/veil"
    assert codes(cfg) == set()


def test_keys_not_configured(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    del cfg["keys"]["pseudonym"], cfg["keys"]["hash"]
    found = findings(cfg)
    assert {(f.code, f.key) for f in found} == {("key_missing", "keys.pseudonym"),
                                                ("key_missing", "keys.hash")}
    assert any("development key" in f.message for f in found)


def test_policy_warnings_and_errors(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    extra = Path(cfg["policy"]["paths"][0]) / "extra.veil"
    extra.write_text("caller batch {\n  key env VEIL_DOCTOR_TEST_UNSET_KEY\n  may personalize\n}\n")
    found = findings(cfg)
    assert [(f.code, f.key) for f in found] == [("policy_key_unresolved", f"{extra}:2:3")]
    extra.write_text("caller broken {\n")
    assert codes(cfg) == {("policy_invalid", "policy.paths")}


def test_plain_http_upstream_is_a_note(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["upstreams"]["api"]["url"] = "http://api.internal:9000"
    all_found = inspect(parse_config(cfg))
    assert [(f.code, f.severity) for f in all_found] == [("upstream_plaintext", NOTE)]


@pytest.mark.parametrize("nets,flagged", [
    (["10.0.0.0/8", "192.168.0.0/16", "127.0.0.1", "fd00::/8"], []),
    (["0.0.0.0/0"], ["trusted_proxies[0]"]),
    (["10.0.0.0/8", "203.0.113.0/24", "8.8.8.8"], ["trusted_proxies[2]"]),  # 203.0.113/24 is documentation
    (["::/0"], ["trusted_proxies[0]"]),
])
def test_public_trusted_proxies(tmp_path: Path, nets: list[str], flagged: list[str]) -> None:
    cfg = clean(tmp_path)
    cfg["trusted_proxies"] = nets
    found = [f for f in inspect(parse_config(cfg)) if f.code == "trusted_proxies_public"]
    assert [f.key for f in found] == flagged and all(f.severity == WARNING for f in found)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("veil.internal")
