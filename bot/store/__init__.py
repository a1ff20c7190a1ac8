"""Everything the bot keeps in its database, and the schema migrations that build it.

``sqlite`` holds the connection, the migrations and the bot's everyday tables (settings,
contributions, listening channels, opt-outs); ``finetune`` the fine-tuning jobs and versions;
``postgres`` the same store on PostgreSQL (``Store.open("postgresql://…")``), for several machines.
"""

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

__all__ = ["MIGRATIONS", "SOURCES", "Carrier", "Contribution", "DatabaseLocked", "Store", "StoreError", "utc_now"]
