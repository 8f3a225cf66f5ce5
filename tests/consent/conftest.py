"""Consent store fixtures: a subject hasher, SQLite paths, and per-test PostgreSQL schemas.

PostgreSQL tests skip when the local server (127.0.0.1:5432, database `test`, user `postgres`) is
unreachable, except under CI=true, where they fail. Each test gets its own schema (dropped after), so
parallel runs do not collide.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache

import asyncpg
import pytest

from veil.consent.postgres import PostgresConsentStore
from veil.consent.store import SubjectHasher
from veil.keys import KeyRing

PG_URL = os.environ.get("VEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
STORE_KEY = "7f" * 32


@cache
def pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


def require_pg() -> None:
    if not pg_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required under CI=true")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")


@pytest.fixture
def hasher() -> SubjectHasher:
    return SubjectHasher(KeyRing.single(bytes.fromhex(STORE_KEY)))


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema name; dropped (with everything in it) after the test."""
    require_pg()
    name = f"veil_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield name
    conn = await asyncpg.connect(PG_URL, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_admin_url() -> str:
    """The test database itself (no schema selected), for checks from outside the store."""
    require_pg()
    return PG_URL


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    return f"{PG_URL}?schema={pg_schema}"


PgFactory = Callable[..., Awaitable[PostgresConsentStore]]


@pytest.fixture
async def pg_store(pg_url: str, hasher: SubjectHasher) -> AsyncIterator[PgFactory]:
    """Factory: open (and migrate) stores on the test's schema; all are closed after the test."""
    opened: list[PostgresConsentStore] = []

    async def make(*, listen: bool = True, migrate: bool = True) -> PostgresConsentStore:
        store = await PostgresConsentStore.connect(pg_url, hasher, listen=listen)
        opened.append(store)
        if migrate:
            await store.migrate()
        return store

    yield make
    for store in opened:
        await store.close()
