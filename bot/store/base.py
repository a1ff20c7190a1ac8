"""What every store backend shares: its errors, its records and its interface.

:class:`Store` is the interface callers annotate with. It holds the bot's everyday queries
(settings, contributions, listening channels, opt-outs) written once, in SQLite's dialect, on a
few primitives each backend implements: :meth:`Store.fetchall`, :meth:`Store.write`,
:meth:`Store.close` and, after a deletion, :meth:`Store._scrub`. :mod:`bot.store.sqlite` runs the
SQL as written, :mod:`bot.store.postgres` translates it, so a query is never written twice. Text
is cleaned (:mod:`bot.core.sanitise`) before it is stored. Nothing here imports a database
driver: code that only annotates a store loads neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from bot.core.sanitise import storable_text
from bot.core.verbatim import shingles

# How a text arrived: through a Discord command (typed in the modal, or a file uploaded with /persona),
# collected in a listening channel, or given on the command line.
SOURCES = ("modal", "listen", "cli")


class StoreError(Exception):
    """The database cannot be used; the message says which file and what to do."""


class DatabaseLocked(StoreError):
    """Another connection held the database longer than the busy timeout."""


@dataclass(frozen=True)
class Contribution:
    """One stored text offered for a corpus."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    corpus: str
    text: str
    created: str
    source: str


@dataclass(frozen=True)
class Carrier:
    """A kept checkpoint version that learned from ``texts`` of one member's contributions."""

    corpus: str
    version: int
    served: bool
    texts: int


UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now(seconds_ago: float = 0.0) -> str:
    """ISO 8601 UTC timestamp with seconds, sortable as text (``seconds_ago`` before now)."""
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).strftime(UTC_FORMAT)


def parse_utc(stamp: str) -> datetime:
    """A timestamp :func:`utc_now` wrote, as an aware datetime."""
    return datetime.strptime(stamp, UTC_FORMAT).replace(tzinfo=timezone.utc)


class Written(Protocol):
    """What one statement of a write did, as callers read it: sqlite3's cursor has these two."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...


class Store(ABC):
    """One open database, whichever backend: ``await open_store(...)``, then ``await store.close()``.

    ``path`` names the database in every error (a file, or a URL without its password);
    ``busy_timeout_s`` bounds how long a write waits for a lock, read at each write.
    """

    journal_mode: str  # how the backend keeps acknowledged writes: "wal" on SQLite, "postgresql"

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing: the errors every backend raises alike ----------------------------------

    def _locked(self, waited_s: float) -> DatabaseLocked:
        return DatabaseLocked(
            f"{self.path}: the database is locked by another program (is a second charbot using it?); "
            f"gave up after {waited_s:g} s, try again"
        )

    def _too_new(self, version: int, known: int) -> StoreError:
        """A database migrated by a newer charbot (``known``: how many migrations this one has)."""
        return StoreError(
            f"{self.path}: database schema version {version} is newer than this charbot knows "
            f"({known}); upgrade charbot"
        )

    # ---- primitives: what a backend implements ------------------------------------------

    @abstractmethod
    async def close(self) -> None:
        """Release the connections (the end of an ``async with`` block calls it)."""

    @abstractmethod
    async def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one read (SQLite's dialect, ``?`` placeholders), never behind a waiting write.

        A database error, or a value the database cannot take, becomes a :class:`StoreError` naming it.
        """

    @abstractmethod
    async def write(self, statements: list[tuple[str, tuple]], wait_s: float | None = None) -> Sequence[Written]:
        """Run statements in one committed transaction; return what each did.

        Waits at most ``wait_s`` (default: the busy timeout) for the locks, then raises
        :class:`DatabaseLocked`. The transaction always ends: whatever is raised (a bad value, a
        cancelled task), it is rolled back before the exception leaves, so the next write, from
        anyone, works.
        """

    @abstractmethod
    async def _scrub(self) -> None:
        """After a deletion: leave as little of the deleted text on disk as the backend can, best effort."""

    # ---- queries: the only way in for this class and its companions (bot.store.jobs) ----

    async def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT version FROM schema_version WHERE id = 1")
        return int(row[0]) if row else 0

    # ---- settings ---------------------------------------------------------------------

    async def get_temperature(self, guild_id: int, user_id: int) -> float | None:
        row = await self.fetchone(
            "SELECT temperature FROM user_settings WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return None if row is None or row[0] is None else float(row[0])

    async def set_temperature(self, guild_id: int, user_id: int, value: float | None) -> None:
        """Set (or with None, clear) the user's default temperature in this server."""
        await self.write([(
            "INSERT INTO user_settings (guild_id, user_id, temperature) VALUES (?, ?, ?) "
            "ON CONFLICT (guild_id, user_id) DO UPDATE SET temperature = excluded.temperature",
            (guild_id, user_id, value),
        )])

    # ---- contributions ----------------------------------------------------------------

    async def add_contribution(
        self, guild_id: int, channel_id: int, user_id: int, corpus: str, text: str, source: str
    ) -> int:
        """Store a contribution and return its id once it is committed to disk."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        text = storable_text(text)
        (cur,) = await self.write([(
            "INSERT INTO contributions (guild_id, channel_id, user_id, corpus, text, created, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (guild_id, channel_id, user_id, corpus, text, utc_now(), source),
        )])
        return int(cur.lastrowid)

    async def contributions(
        self, guild_id: int | None = None, corpus: str | None = None, user_id: int | None = None
    ) -> list[Contribution]:
        """Contributions matching every filter given, oldest first."""
        where, params = [], []
        for column, value in (("guild_id", guild_id), ("corpus", corpus), ("user_id", user_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT id, guild_id, channel_id, user_id, corpus, text, created, source FROM contributions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.fetchall(sql + " ORDER BY id", tuple(params))
        return [Contribution(*row) for row in rows]

    async def count_contributions(self, guild_id: int, user_id: int) -> int:
        row = await self.fetchone(
            "SELECT COUNT(*) FROM contributions WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return int(row[0])

    async def learned_from(self, guild_id: int, user_id: int) -> list[Carrier]:
        """The kept versions (not pruned) that learned from this member's texts in this server,
        whether or not the texts are still stored: what /forget cannot delete by itself."""
        rows = await self.fetchall(
            "SELECT v.corpus, v.version, v.served, COUNT(*) FROM version_provenance p "
            "JOIN checkpoint_versions v ON v.corpus = p.corpus AND v.version = p.version "
            "WHERE p.guild_id = ? AND p.user_id = ? AND v.pruned = 0 "
            "GROUP BY v.corpus, v.version, v.served ORDER BY v.corpus, v.version",
            (guild_id, user_id),
        )
        return [Carrier(str(c), int(v), bool(s), int(n)) for c, v, s, n in rows]

    async def forget(self, guild_id: int, user_id: int) -> int:
        """Delete the user's contributions in this server, and the words of theirs kept for the buttons
        under the bot's replies (bot.store.conversation); return how many contributions were deleted.

        Each deleted text's windows are kept as one-way hashes (:func:`bot.core.verbatim.shingles`) in
        the same transaction, so the verbatim-copy guard keeps replies from reciting it."""
        rows = await self.fetchall(
            "SELECT id, corpus, text FROM contributions WHERE guild_id = ? AND user_id = ? ORDER BY id",
            (guild_id, user_id),
        )
        hashed = sorted({(str(corpus), h) for _, corpus, text in rows for h in shingles(str(text))})
        statements = [
            ("INSERT OR IGNORE INTO forgotten_shingles (corpus, hash) VALUES " + ", ".join(["(?, ?)"] * len(chunk)),
             tuple(v for pair in chunk for v in pair))
            for chunk in (hashed[i : i + 400] for i in range(0, len(hashed), 400))
        ]
        statements.append(("DELETE FROM posted_replies WHERE guild_id = ? AND asker_id = ?", (guild_id, user_id)))
        statements.append(("DELETE FROM contributions WHERE guild_id = ? AND user_id = ? AND id <= ?",
                           (guild_id, user_id, int(rows[-1][0]) if rows else 0)))
        cur = (await self.write(statements))[-1]
        if cur.rowcount:
            await self._scrub()
        return int(cur.rowcount)

    async def texts_since(self, after_id: int) -> list[tuple[int, str, str]]:
        """(id, corpus, text) of the contributions stored after ``after_id``: what the guard adds."""
        rows = await self.fetchall("SELECT id, corpus, text FROM contributions WHERE id > ? ORDER BY id", (after_id,))
        return [(int(i), str(c), str(t)) for i, c, t in rows]

    async def count_forgotten_shingles(self) -> int:
        row = await self.fetchone("SELECT COUNT(*) FROM forgotten_shingles")
        return int(row[0]) if row else 0

    async def forgotten_shingles(self) -> list[tuple[str, int]]:
        rows = await self.fetchall("SELECT corpus, hash FROM forgotten_shingles")
        return [(str(c), int(h)) for c, h in rows]


    # ---- listening channels -----------------------------------------------------------

    async def listen(self, guild_id: int, channel_id: int, corpus: str) -> str | None:
        """Collect this channel's messages for ``corpus``; return the corpus it collected for before."""
        previous = await self.listening_corpus(guild_id, channel_id)
        await self.write([(
            "INSERT INTO listening_channels (guild_id, channel_id, corpus) VALUES (?, ?, ?) "
            "ON CONFLICT (guild_id, channel_id) DO UPDATE SET corpus = excluded.corpus",
            (guild_id, channel_id, corpus),
        )])
        return previous

    async def unlisten(self, guild_id: int, channel_id: int) -> str | None:
        """Stop collecting in this channel; return the corpus it collected for, or None if it did not."""
        previous = await self.listening_corpus(guild_id, channel_id)
        await self.write([
            ("DELETE FROM listening_channels WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)),
        ])
        return previous

    async def listening_corpus(self, guild_id: int, channel_id: int) -> str | None:
        row = await self.fetchone(
            "SELECT corpus FROM listening_channels WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        )
        return None if row is None else str(row[0])

    async def listening_channels(self, guild_id: int) -> dict[int, str]:
        rows = await self.fetchall(
            "SELECT channel_id, corpus FROM listening_channels WHERE guild_id = ? ORDER BY channel_id", (guild_id,)
        )
        return {int(c): str(k) for c, k in rows}

    # ---- opt-outs ---------------------------------------------------------------------

    async def is_opted_out(self, guild_id: int, user_id: int) -> bool:
        row = await self.fetchone(
            "SELECT 1 FROM opt_outs WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return row is not None

    async def set_opt_out(self, guild_id: int, user_id: int, opted_out: bool) -> bool:
        """Record the user's choice; return True if it changed anything."""
        if not opted_out:
            sql = "DELETE FROM opt_outs WHERE guild_id = ? AND user_id = ?"
            (cur,) = await self.write([(sql, (guild_id, user_id))])
            return cur.rowcount > 0
        cur, _ = await self.write([
            ("INSERT OR IGNORE INTO opt_outs (guild_id, user_id, created) VALUES (?, ?, ?)",
             (guild_id, user_id, utc_now())),
            ("UPDATE posted_replies SET prompt = NULL, context = NULL WHERE guild_id = ? AND asker_id = ?",
             (guild_id, user_id)),  # from now on their words are not kept, the ones kept before neither
        ])
        return cur.rowcount > 0

