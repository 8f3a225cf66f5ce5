from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from veil.consent.importer import ImportInvalid, import_file, validate_file
from veil.consent.postgres import PostgresConsentStore
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, Status, SubjectHasher
from veil.errors import VeilError

HEADER = "subject,consent_key,action,at,source,method,notice_version,expires_at,jurisdiction,purposes\n"


def write_csv(path: Path, n: int, *, bad: dict[int, str] | None = None) -> Path:
    lines = [HEADER]
    for i in range(n):
        action = "withdrawn" if i % 10 == 9 else "given"
        lines.append(
            f"user-{i},personalization,{action},2024-01-{1 + i % 28:02d}T10:00:00Z,crm,web-form,3,"
            f"2026-01-01,EU,recs;email\n"
        )
    for idx, line in (bad or {}).items():
        lines[idx] = line
    path.write_text("".join(lines))
    return path


class Interrupt(Exception):
    pass


async def test_csv_import(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        seen: list[tuple[int, int]] = []
        path = write_csv(tmp_path / "in.csv", 25)
        result = await import_file(store, path, batch_size=10, progress=lambda r, ln: seen.append((r, ln)))
        assert result.rows == 25 and result.last_line == 26
        assert seen == [(10, 11), (20, 21), (25, 26)]
        got = await store.current([f"user-{i}" for i in range(25)], ["personalization"])
        assert got[("user-0", "personalization")].status is Status.GIVEN
        assert got[("user-9", "personalization")].status is Status.WITHDRAWN
        proof = await store.proof("user-0")
        e = proof[0].event
        assert e.purposes == ("recs", "email") and e.notice_version == 3 and e.source == "crm"
        assert e.expires_at == datetime(2026, 1, 1, tzinfo=UTC) and e.jurisdiction == "EU"
    finally:
        await store.close()


async def test_jsonl_import(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = tmp_path / "in.jsonl"
    rows = [
        {"subject": "a", "consent_key": "k", "action": "given", "at": "2024-02-01T00:00:00+01:00",
         "purposes": ["x", "y"], "notice_version": 2},
        {"subject": 42, "consent_key": "k", "action": "WITHDRAWN", "at": "2024-02-01"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        result = await import_file(store, path)
        assert result.rows == 2
        [a] = await store.history("a")
        assert a.at == datetime(2024, 1, 31, 23, 0, tzinfo=UTC) and a.purposes == ("x", "y")
        assert a.action is Action.GIVEN and a.method == "unspecified" and a.source == "import"
        assert (await store.current(["42"], ["k"]))[("42", "k")].status is Status.WITHDRAWN
    finally:
        await store.close()


async def test_bad_rows_block_the_whole_import(tmp_path: Path, hasher: SubjectHasher) -> None:
    bad = {
        3: "secret-subject-1,personalization,maybe,2024-01-01T00:00:00Z,,,,,,\n",
        5: "secret-subject-2,personalization,given,not-a-date,,,x3,,,\n",
        7: ",personalization,given,2024-01-01,,,,,,\n",
        8: "only,three,fields\n",
    }
    path = write_csv(tmp_path / "in.csv", 20, bad=bad)
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        with pytest.raises(ImportInvalid) as info:
            await import_file(store, path, batch_size=2)
        text = info.value.render() + str(info.value)
        assert [(e.line, e.column) for e in info.value.errors] == [
            (4, "action"), (6, "at"), (6, "notice_version"), (8, "subject"), (9, "row"),
        ]
        for secret in ("secret-subject", "maybe", "not-a-date", "x3", "only", "three"):
            assert secret not in text
        assert await store.history("user-0") == []
        assert await store.import_mark("x") is None
    finally:
        await store.close()


def test_header_problems(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("subject,consent_key,at,colour\nx,k,2024-01-01,red\n")
    with pytest.raises(ImportInvalid) as info:
        validate_file(path, "csv")
    assert {str(e) for e in info.value.errors} == {
        "line 1: header: unknown column 'colour'", "line 1: header: missing column 'action'",
    }


def test_rows_found_by_fuzzing_are_row_errors(tmp_path: Path) -> None:
    """tests/fuzz (consent_import): JSON nested deeper than the parser goes raised RecursionError, and
    a date at the edge of the calendar with an offset raised OverflowError once converted to UTC."""
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "\n")
    with pytest.raises(ImportInvalid) as info:
        validate_file(deep, "jsonl")
    assert [str(e) for e in info.value.errors] == ["line 1: row: not valid JSON"]
    edge = tmp_path / "edge.csv"
    edge.write_text("subject,consent_key,action,at,expires_at\n"
                    "a,k,given,0001-01-01T00:00:00+14:00,\nb,k,given,2024-01-01,9999-12-31T23:59:59-14:00\n")
    with pytest.raises(ImportInvalid) as info:
        validate_file(edge, "csv")
    assert [str(e) for e in info.value.errors] == [
        "line 2: at: is out of range once converted to UTC",
        "line 3: expires_at: is out of range once converted to UTC",
    ]


async def test_interrupted_import_resumes(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = write_csv(tmp_path / "in.csv", 35)
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        def crash(rows: int, line: int) -> None:
            if rows >= 20:
                raise Interrupt

        with pytest.raises(Interrupt):
            await import_file(store, path, batch_size=10, progress=crash)
        with pytest.raises(VeilError, match="--resume"):
            await import_file(store, path, batch_size=10)
        result = await import_file(store, path, batch_size=10, resume=True)
        assert (result.rows, result.skipped) == (15, 20)
        for i in (0, 19, 20, 34):
            assert len(await store.history(f"user-{i}")) == 1
        again = await import_file(store, path, resume=True)
        assert again.already_done and again.rows == 0
        restarted = await import_file(store, path, restart=True)
        assert restarted.rows == 35
        assert len(await store.history("user-0")) == 2
    finally:
        await store.close()


def test_format_detection(tmp_path: Path, hasher: SubjectHasher) -> None:
    from veil.consent.importer import detect_format

    assert detect_format(Path("a.CSV"), None) == "csv"
    assert detect_format(Path("a.ndjson"), None) == "jsonl"
    assert detect_format(Path("a.txt"), "jsonl") == "jsonl"
    with pytest.raises(VeilError, match="--format"):
        detect_format(Path("a.txt"), None)


@pytest.mark.postgres
async def test_postgres_import_and_resume(
    tmp_path: Path, pg_store: Callable[..., Awaitable[PostgresConsentStore]]
) -> None:
    store = await pg_store(listen=False)
    path = write_csv(tmp_path / "in.csv", 2500)

    def crash(rows: int, line: int) -> None:
        if rows >= 1000:
            raise Interrupt

    with pytest.raises(Interrupt):
        await import_file(store, path, batch_size=1000, progress=crash)
    result = await import_file(store, path, batch_size=1000, resume=True)
    assert (result.rows, result.skipped) == (1500, 1000)
    subjects = [f"user-{i}" for i in range(2500)]
    got = await store.current(subjects, ["personalization"])
    assert len(got) == 2500
    assert got[("user-2499", "personalization")].status is Status.WITHDRAWN
    assert len(await store.history("user-999")) == 1 and len(await store.history("user-1000")) == 1
    [e] = await store.history("user-5")
    assert e.purposes == ("recs", "email") and e.expires_at == datetime(2026, 1, 1, tzinfo=UTC)
