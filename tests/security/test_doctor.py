"""`veil doctor`: one test per finding, and a clean deployment with none."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.conftest import write_keys, write_tokens
from tests.security.conftest import copy_policies
from veil.cli import main
from veil.config import parse_config
from veil.doctor import ERROR, NOTE, WARNING, Finding, inspect, is_loopback


def clean(tmp: Path) -> dict[str, Any]:
    """A deployment doctor has nothing to say about: loopback listeners, every key and token from
    owner-only files, an enforcing mode, one worker."""
    tmp.mkdir(parents=True, exist_ok=True)
    _, refs = write_tokens(tmp)
    read = tmp / "read.token"
    read.write_text("read-token-0123456789abcdef")
    read.chmod(0o600)
    return {
        "listen": {"proxy": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
        "upstreams": {"api": {"url": "http://127.0.0.1:9000"}},
        "policy": {"paths": [str(copy_policies(tmp / "policies"))]},
        "consent": {"url": f"sqlite:///{tmp / 'data' / 'consent.db'}"},
        "audit": {"path": str(tmp / "audit" / "decisions.log")},
        "keys": write_keys(tmp),
        "admin": {"tokens": {**refs, "read": f"file:{read}"}},
        "environment": "production",
    }


def findings(cfg: dict[str, Any]) -> list[Finding]:
    """The findings that count (errors and warnings); severity words match the effect."""
    found = inspect(parse_config(cfg))
    for f in found:
        stops = "will not start" in f.message or "refuses every request" in f.message
        assert stops == (f.severity == ERROR), f
    return [f for f in found if f.severity in (ERROR, WARNING)]


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
    assert out.splitlines()[-1].endswith("veil.yaml: 1 warning(s)")
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
    cfg["listen"]["proxy"] = f"0.0.0.0:{free_port()}"
    assert codes(cfg) == {("tls_missing", "tls")}
    cert, key = tls_files(tmp_path)
    cfg["tls"] = {"cert": str(cert), "key": str(key)}
    assert codes(cfg) == set()
    key.chmod(0o640)
    assert codes(cfg) == {("permissive_mode", "tls.key")}
    key.write_text("not a key")
    key.chmod(0o600)
    found = findings(cfg)
    assert [(f.code, f.key, f.severity) for f in found] == [("tls_invalid", "tls", ERROR)]
    cfg["tls"]["client_ca"] = str(tmp_path / "missing-ca.pem")
    cfg["tls"]["key"] = str(tmp_path / "server.key")
    tls_files(tmp_path)
    assert codes(cfg) == {("tls_invalid", "tls")}


def tls_files(tmp: Path) -> tuple[Path, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("veil.internal")
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return cert_path, key_path


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
    assert {(f.code, f.key, f.severity) for f in found} == {
        ("permissive_mode", "keys.audit", ERROR), ("permissive_mode", "admin.tokens.consent", ERROR),  # refused
        ("permissive_mode", "consent.url", WARNING), ("permissive_mode", "audit.path", WARNING),
    }
    assert len([f for f in found if f.key == "consent.url"]) == 2  # the directory and the file
    fixes = {f.fix for f in found}
    assert f"chmod 700 {tmp_path / 'data'}" in fixes
    assert f"chmod 600 {tmp_path / 'data' / 'consent.db'}" in fixes


def test_missing_key_file(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    Path(cfg["keys"]["store"][5:]).unlink()
    assert [(f.code, f.key, f.severity) for f in findings(cfg)] == [("key_file_missing", "keys.store", ERROR)]


def test_unset_env_keys_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = clean(tmp_path)
    monkeypatch.delenv("VEIL_DOCTOR_STORE", raising=False)
    monkeypatch.setenv("VEIL_DOCTOR_AUDIT", "")
    cfg["keys"]["store"] = "env:VEIL_DOCTOR_STORE"
    cfg["keys"]["audit"] = "env:VEIL_DOCTOR_AUDIT"
    cfg["admin"]["tokens"]["reload"] = "env:VEIL_DOCTOR_STORE"
    found = findings(cfg)
    assert {(f.code, f.key, f.severity) for f in found} == {
        ("env_unset", "keys.store", ERROR), ("env_unset", "keys.audit", ERROR),
        ("env_unset", "admin.tokens.reload", ERROR),
    }
    assert "environment variable VEIL_DOCTOR_STORE is not set: veil will not start" in found[0].render() + \
        found[1].render() + found[2].render()
    monkeypatch.setenv("VEIL_DOCTOR_STORE", "short")
    assert ("key_invalid", "keys.store") in codes(cfg)
    monkeypatch.setenv("VEIL_DOCTOR_STORE", "ab" * 32)
    monkeypatch.setenv("VEIL_DOCTOR_AUDIT", "cd" * 32)
    assert codes(cfg) == set()


def test_an_address_in_use(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg["listen"]["admin"] = f"127.0.0.1:{port}"
        [f] = findings(cfg)
    assert (f.code, f.key, f.severity) == ("listen_failed", "listen.admin", ERROR)
    assert f.message == f"cannot listen on 127.0.0.1:{port}: the address is already in use (another veil, or " \
                        "another program): veil will not start (`veil serve` exits 3)"
    assert codes(cfg) == set()  # closed again: free


def test_the_same_port_twice_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = clean(tmp_path)
    cfg["listen"]["admin"] = cfg["listen"]["proxy"].replace("127.0.0.1", "0.0.0.0")
    (tmp_path / "veil.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["doctor", "--config", str(tmp_path / "veil.yaml")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("error[config_invalid] listen.admin: must not use the proxy's port (")
    assert "veil will not start" in out


def test_relative_sqlite_paths(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["consent"]["url"] = "sqlite:///var/lib/veil/consent.db"  # three slashes: relative
    [f] = findings(cfg)
    assert (f.code, f.key, f.severity) == ("sqlite_path_relative", "consent.url", WARNING)
    assert "relative path var/lib/veil/consent.db" in f.message and "sqlite:////var/lib/veil/consent.db" in f.fix
    cfg["consent"]["url"] = "sqlite:///data/consent.db"
    notes = [f for f in inspect(parse_config(cfg, base=tmp_path)) if f.code == "sqlite_path_relative"]
    assert [f.severity for f in notes] == [NOTE] and str(tmp_path / "data" / "consent.db") in notes[0].message
    cfg["consent"]["url"] = f"sqlite:///{tmp_path / 'data' / 'consent.db'}"  # absolute (four slashes)
    assert not [f for f in inspect(parse_config(cfg)) if f.code == "sqlite_path_relative"]


def test_unwritable_consent_store_and_decision_log(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg["consent"]["url"] = f"sqlite:///{blocker / 'consent.db'}"
    cfg["audit"]["path"] = str(blocker / "audit" / "decisions.log")
    assert {(f.code, f.severity) for f in findings(cfg) if f.severity == ERROR} == {
        ("consent_store_unwritable", ERROR), ("audit_unwritable", ERROR)}


def test_unreachable_postgres(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["consent"]["url"] = f"postgresql://veil@127.0.0.1:{free_port()}/veil"
    [f] = findings(cfg)
    assert (f.code, f.severity) == ("consent_store_unreachable", ERROR) and "veil will not start" in f.message


def readme_config() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_readme_example_config_without_its_env_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The README's own example with none of its env: keys set: doctor reports each as an error, and
    `veil serve` indeed refuses to start on the first."""
    text = readme_config()
    refs = sorted(set(re.findall(r"env:(VEIL_[A-Z_]+)", text)))
    assert len(refs) == 8
    for name in refs:
        monkeypatch.delenv(name, raising=False)
    text = text.replace("0.0.0.0:8080", f"127.0.0.1:{free_port()}")  # this machine may run a veil on 8080
    text = text.replace("127.0.0.1:8081", f"127.0.0.1:{free_port()}")
    (tmp_path / "veil.yaml").write_text(text)
    assert main(["doctor", "--config", str(tmp_path / "veil.yaml")]) == 1
    out = capsys.readouterr().out
    for name in refs:
        assert f"environment variable {name} is not set: veil will not start" in out
    assert "error[policy_invalid] policy.paths:" in out  # /etc/veil/policies does not exist here
    assert "sqlite_path_relative" not in out  # the README writes the absolute path with four slashes
    env = {k: v for k, v in os.environ.items() if k not in refs}
    run = subprocess.run([sys.executable, "-m", "veil", "serve", "--config", str(tmp_path / "veil.yaml")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert "ERROR veil.serve: cannot start: keys." in line and "is not set" in line


def test_sqlite_with_several_workers(tmp_path: Path) -> None:
    cfg = clean(tmp_path)
    cfg["workers"] = 4
    assert codes(cfg) == {("sqlite_workers", "workers")}
    cfg["consent"]["url"] = "postgresql://veil@db/veil"
    assert codes(cfg) == {("consent_store_unreachable", "consent.url")}  # no host `db` here, but no sqlite_workers


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
    assert {(f.code, f.key, f.severity) for f in findings(cfg)} == {("policy_invalid", "policy.paths", ERROR)}


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


def test_a_fleet_without_shipping_is_a_note_and_serve_mode_a_warning(tmp_path: Path) -> None:
    from tests.consent.conftest import PG_URL, require_pg

    require_pg()  # doctor asks a PostgreSQL consent store whether it answers
    cfg = clean(tmp_path)
    cfg["consent"]["url"] = PG_URL
    assert [(f.code, f.severity) for f in inspect(parse_config(cfg))] == [("audit_not_shipped", NOTE)]
    cfg["audit"]["ship"] = {"url": "postgresql://veil@db/veil?schema=veil_audit"}
    assert inspect(parse_config(cfg)) == []
    cfg["audit"]["ship"]["on_full"] = "serve"
    assert codes(cfg) == {("audit_unrecorded_allowed", "audit.ship.on_full")}
    cfg["environment"] = "staging"
    assert codes(cfg) == set()


def test_the_native_loop_missing_or_off_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from veil.redact import native

    cfg = parse_config(clean(tmp_path))
    monkeypatch.setattr(native, "cplan", None)
    monkeypatch.setattr(native, "ENABLED", False)
    (found,) = [f for f in inspect(cfg) if f.code.startswith("native_loop")]
    assert (found.code, found.severity) == ("native_loop_missing", NOTE) and "C compiler" in found.fix
    monkeypatch.setattr(native, "cplan", object())
    (found,) = [f for f in inspect(cfg) if f.code.startswith("native_loop")]
    assert (found.code, found.key) == ("native_loop_off", "VEIL_NATIVE")
