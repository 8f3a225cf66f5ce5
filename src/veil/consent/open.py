"""Open the consent store a URL names: `sqlite:///path` (embedded) or `postgresql://…` (scale-out)."""

from __future__ import annotations

from veil.consent.cache import CachedConsentStore
from veil.consent.postgres import PostgresConsentStore
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import ConsentStore, SubjectHasher
from veil.errors import VeilError

StoreImpl = SqliteConsentStore | PostgresConsentStore


def check_url(url: str) -> str:
    """The URL, if it names a kind of store veil has; otherwise a one-line error."""
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return url
    raise VeilError("consent store URL must start with sqlite:/// or postgresql://", code="config_invalid")


async def open_raw_store(
    url: str, hasher: SubjectHasher, *, migrate: bool = True, listen: bool = True
) -> StoreImpl:
    """The store itself, without cache (the CLI and the importer use this)."""
    if check_url(url).startswith("sqlite:///"):
        return SqliteConsentStore(url[len("sqlite:///"):], hasher)
    store = await PostgresConsentStore.connect(url, hasher, listen=listen)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
    return store


async def open_store(
    url: str, hasher: SubjectHasher, *, cache_ttl: float, cache_size: int, migrate: bool = True
) -> ConsentStore:
    """The store wrapped in its cache; PostgreSQL change notifications invalidate the cache."""
    inner = await open_raw_store(url, hasher, migrate=migrate)
    return CachedConsentStore(inner, cache_ttl, cache_size)
