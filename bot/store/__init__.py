"""Everything the bot keeps in its database, on SQLite or on PostgreSQL, and the migrations that build it.

One module per backend behind one interface, as Red-DiscordBot lays out its storage drivers:

- ``base``: backend-neutral: the errors, the records (:class:`Contribution`, :class:`Carrier`) and
  :class:`Store`, the interface callers annotate with, whose everyday queries (settings,
  contributions, listening channels, opt-outs) are written once on a few primitives;
- ``schema``: the tables, as the ordered migrations both backends apply;
- ``sqlite``: the store in a SQLite file (aiosqlite), for one machine;
- ``postgres``: the store on a PostgreSQL server (asyncpg), for bots on several machines;
- ``jobs``: the fine-tuning jobs and versions, over either backend through :class:`Store`.

:func:`open_store` is the one way in: it picks the backend from what it is given.
"""

from __future__ import annotations

from pathlib import Path

from bot.config import is_postgres_url
from bot.store.base import SOURCES, Carrier, Contribution, DatabaseLocked, Store, StoreError, utc_now
from bot.store.schema import MIGRATIONS
from bot.store.sqlite import SQLiteStore


async def open_store(url_or_path: str | Path, busy_timeout_s: float = 5.0) -> Store:
    """Open (creating if needed) and migrate the database at ``url_or_path``: a ``postgresql://``
    URL opens it on that server, anything else is a SQLite file. The one way callers open a
    store, so none of them names a backend."""
    if is_postgres_url(url_or_path):
        # Imported here so that asyncpg loads only where a PostgreSQL database is used.
        from bot.store.postgres import PostgresStore

        return await PostgresStore.open(str(url_or_path), busy_timeout_s)
    return await SQLiteStore.open(url_or_path, busy_timeout_s)


__all__ = ["MIGRATIONS", "SOURCES", "Carrier", "Contribution", "DatabaseLocked", "Store", "StoreError", "open_store",
           "utc_now"]
