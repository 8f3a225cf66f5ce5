"""Decision-log store fixtures: a per-test PostgreSQL schema (tests/consent/conftest.py: skipped when
the local server is unreachable, failed under CI=true), keys, and a helper that writes a local log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.consent.conftest import PG_URL, pg_schema  # noqa: F401  (fixture)
from veil.audit import AuditLog
from veil.audit.store import AuditStore
from veil.keys import KeyRing, generate_key


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "k1")


@pytest.fixture
def store_url(pg_schema: str) -> str:  # noqa: F811
    return f"{PG_URL}?schema={pg_schema}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AuditStore]:
    s = await AuditStore.connect(store_url, timeout=10)
    await s.migrate("month")
    yield s
    await s.close()


def decision(i: int, subject: str = "a" * 32, **extra: Any) -> dict[str, Any]:
    return {"id": f"d{i}", "time": f"2025-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
            "caller": "storefront", "purpose": "personalize.recommendations", "route": "GET /customers/{id}",
            "decision": "allow", "reason": "ok", "subject": subject, "categories": ["profile"], **extra}


async def write_log(path: Path, ring: KeyRing, n: int, *, chain_id: str = "main", start: int = 0,
                    **kw: Any) -> AuditLog:
    """n decision records appended and the log closed; returns the (closed) log."""
    log = AuditLog(path, ring, chain_id=chain_id, flush_interval=0, **kw)
    await log.start()
    for i in range(start, start + n):
        await log.append(decision(i))
    await log.close()
    return log


class SQL:
    def __init__(self, url: str, schema: str) -> None:
        self.url, self.s = url.split("?")[0], f'"{schema}"'

    async def __call__(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetch(sql.replace("{s}", self.s), *args)
        finally:
            await conn.close()

    async def line(self, replica: str, seq: int) -> str:
        rows = await self("SELECT r.line FROM {s}.audit_records r JOIN {s}.audit_chains c USING (chain_no) "
                          "WHERE c.replica = $1 AND r.seq = $2", replica, seq)
        return str(rows[0]["line"])

    async def chain_no(self, replica: str) -> int:
        return int((await self("SELECT chain_no FROM {s}.audit_chains WHERE replica = $1", replica))[0]["chain_no"])


@pytest.fixture
def sql(store_url: str, pg_schema: str) -> SQL:  # noqa: F811
    return SQL(store_url, pg_schema)
