from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.cli import main
from veil.keys import write_private_file

KEY_ENV = "VEIL_TEST_STORE_KEY"


@pytest.fixture
def store_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    return ["--store", f"sqlite:///{tmp_path}/data/consent.db", "--store-key", f"env:{KEY_ENV}"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["consent", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_grant_show_withdraw_proof(store_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "grant", *store_args, "--subject", "alice@example.com", "--key", "personalization",
        "--source", "web", "--method", "checkbox", "--notice-version", "4", "--expires", "2999-01-01",
        "--jurisdiction", "EU", "--purpose", "recs", "--purpose", "email",
    )
    assert code == 0 and "alice@example.com" not in out
    code, out, _ = run(capsys, "show", *store_args, "--subject", "alice@example.com", "--json")
    doc = json.loads(out)
    assert doc["consent"][0]["status"] == "given" and doc["consent"][0]["notice_version"] == 4
    assert "events" not in doc and "alice@example.com" not in out

    withdraw = ("withdraw", *store_args, "--subject", "alice@example.com", "--key", "personalization")
    assert run(capsys, *withdraw)[0] == 0
    code, out, _ = run(capsys, "show", *store_args, "--subject", "alice@example.com", "--proof", "--json")
    doc = json.loads(out)
    assert doc["consent"][0]["effective"] == "withdrawn"
    first, second = doc["events"]
    assert first["action"] == "given" and second["action"] == "withdrawn"
    for field in ("event_id", "at", "recorded_at", "source", "method", "notice_version", "expires_at",
                  "jurisdiction", "purposes", "consent_key"):
        assert field in first
    assert first["purposes"] == ["recs", "email"] and first["method"] == "checkbox"

    code, out, _ = run(capsys, "show", *store_args, "--subject", "alice@example.com", "--proof")
    assert code == 0 and "withdrawn" in out and "history (2 event(s)" in out


def test_expired_consent_shows_as_expired(store_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    grant = ("grant", *store_args, "--subject", "s", "--key", "k")
    run(capsys, *grant, "--at", "2020-01-01", "--expires", "2021-01-01")
    code, out, _ = run(capsys, "show", *store_args, "--subject", "s")
    assert code == 0 and "k: expired" in out


def test_import_and_resume_flags(
    store_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("subject,consent_key,action,at\na,k,given,2024-01-01T00:00:00Z\nb,k,withdrawn,2024-01-02\n")
    code, out, _ = run(capsys, "import", *store_args, str(path))
    assert code == 0 and "imported 2 row(s)" in out
    code, _, err = run(capsys, "import", *store_args, str(path))
    assert code == 1 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "import", *store_args, str(path), "--resume")
    assert code == 0 and "nothing to do" in out


def test_import_errors_are_listed_without_values(
    store_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"subject": "secret-id", "consent_key": "k", "action": "nope", "at": "2024-01-01"}\n')
    code, _, err = run(capsys, "import", *store_args, str(path))
    assert code == 1 and "line 1: action" in err and "secret-id" not in err and "nope" not in err


def test_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "store.key"
    write_private_file(key, "cd" * 32)
    cfg = tmp_path / "veil.yaml"
    cfg.write_text(
        "upstreams:\n  api:\n    url: http://127.0.0.1:9\n"
        "consent:\n  url: sqlite:///data/consent.db\n"
        f"keys:\n  store: file:{key}\n"
    )
    assert run(capsys, "grant", "--config", str(cfg), "--subject", "x", "--key", "k")[0] == 0
    assert (tmp_path / "data" / "consent.db").exists()
    _, out, _ = run(capsys, "show", "--config", str(cfg), "--subject", "x", "--json")
    assert json.loads(out)["consent"][0]["status"] == "given"
    assert run(capsys, "migrate", "--config", str(cfg))[0] == 0


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", f"sqlite:///{tmp_path}/c.db"]
    unset = ("--store-key", "env:VEIL_TEST_UNSET_KEY")
    code, _, err = run(capsys, "grant", *store, *unset, "--subject", "s", "--key", "k")
    assert code == 1 and "VEIL_TEST_UNSET_KEY" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "grant", *store, "--subject", "s", "--key", "k")
    assert code == 2 and "--store-key" in err
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 200)
    code, _, err = run(capsys, "migrate", "--store", f"sqlite:///{bad}")
    assert code == 1 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "show", "--store", "mysql://x", "--store-key", "env:X", "--subject", "s")
    assert code == 1 and "sqlite:///" in err


@pytest.mark.postgres
def test_migrate_postgres(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "migrate", "--store", pg_url)[0] == 0
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    args = ["--store", pg_url, "--store-key", f"env:{KEY_ENV}"]
    assert run(capsys, "grant", *args, "--subject", "s", "--key", "k")[0] == 0
    _, out, _ = run(capsys, "show", *args, "--subject", "s", "--json")
    assert json.loads(out)["consent"][0]["status"] == "given"


def test_postgres_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "migrate", "--store", "postgresql://postgres@127.0.0.1:1/test")
    assert code == 1 and "unreachable" in err and len(err.strip().splitlines()) == 1
