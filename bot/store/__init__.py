"""Everything the bot keeps in its database, and the schema migrations that build it.

``sqlite`` holds the connection, the migrations and the bot's everyday tables (settings,
contributions, listening channels, opt-outs); ``finetune`` the fine-tuning jobs and versions;
``postgres`` the same store on PostgreSQL (``Store.open("postgresql://…")``), for several machines.
"""

from __future__ import annotations

from pathlib import Path

from bot.store.schema import MIGRATIONS
from bot.store.sqlite import (
    SOURCES,
    Carrier,
    Contribution,
    DatabaseLocked,
    Store,
    StoreError,
    utc_now,
)


async def open_store(url_or_path: str | Path, busy_timeout_s: float = 5.0) -> Store:
    """Open (creating if needed) and migrate the database at ``url_or_path``: a SQLite file, or a
    ``postgresql://`` URL. The one way callers open a store, so none of them names a backend."""
    return await Store.open(url_or_path, busy_timeout_s)


__all__ = ["MIGRATIONS", "SOURCES", "Carrier", "Contribution", "DatabaseLocked", "Store", "StoreError", "open_store",
           "utc_now"]
