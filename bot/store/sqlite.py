"""The bot's database: per-user settings, contributions, listening channels and opt-outs.

SQLite through aiosqlite so the event loop never blocks on disk. WAL lets readers and the
writer proceed together, so reads go through their own connection (its own worker thread):
a write waiting for another program's lock never holds up a read such as the temperature a
reply needs. Every write is one transaction that always ends, committed or rolled back
whatever is raised, and waits at most a bounded time for the lock; text is cleaned
(:mod:`bot.core.sanitise`) before it is stored. ``synchronous=FULL`` means a contribution the bot
has acknowledged is on disk even if the machine loses power right after. The migrations
(:mod:`bot.store.schema`) run as written, each in its own transaction. All queries are parameterized.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiosqlite

from bot.config import is_postgres_url
from bot.core.sanitise import storable_text
from bot.core.verbatim import shingles
from bot.store.schema import MIGRATIONS, SCHEMA_VERSION_TABLE

SOURCES = ("modal", "listen", "cli")

log = logging.getLogger(__name__)


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


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, sortable as text."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class Store:
    """One open database. Use ``await Store.open(path)`` and ``await store.close()``."""

    def __init__(
        self, db: aiosqlite.Connection, path: str, busy_timeout_s: float, reader: aiosqlite.Connection | None = None
    ) -> None:
        self._db = db
        self._reader = reader
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._write_lock = asyncio.Lock()
        self._busy_ms = int(busy_timeout_s * 1000)

    @classmethod
    async def open(cls, path: str | Path, busy_timeout_s: float = 5.0) -> Store:
        """Open (creating if needed) and migrate the database at ``path``.

        A ``postgresql://`` URL opens the same store on PostgreSQL (:mod:`bot.store.postgres`).
        """
        if is_postgres_url(path):
            from bot.store.postgres import PostgresStore

            return await PostgresStore.open(str(path), busy_timeout_s)
        path = str(path)
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"{path}: cannot create the database, folder {parent} does not exist")
        db = await _connect(path, busy_timeout_s)
        store = cls(db, path, busy_timeout_s)
        try:
            await store._prepare()
            if path != ":memory:":  # a second in-memory connection would be a different database
                store._reader = await _connect(path, busy_timeout_s)
                await store._configure(store._reader, reader=True)
        except BaseException:
            await store.close()
            raise
        return store

    async def _prepare(self) -> None:
        """Configure and migrate, retrying within the busy bound while another process does the same.

        Two bots opening a new database at once race to create it: in SQLite's rollback mode
        (before WAL is on) a statement that must turn its read lock into a write lock while the
        other holds one fails at once instead of waiting (waiting could deadlock), so the
        busy timeout alone does not cover start-up.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                await self._configure(self._db)
                await self._migrate()
                return
            except DatabaseLocked:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for db in (self._reader, self._db):
            if db is not None:
                await db.close()
        self._reader = None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing ---------------------------------------------------------------------

    def _locked(self, waited_s: float) -> DatabaseLocked:
        return DatabaseLocked(
            f"{self.path}: the database is locked by another program (is a second charbot using it?); "
            f"gave up after {waited_s:g} s, try again"
        )

    def _error(self, exc: sqlite3.Error, waited_s: float | None = None) -> StoreError:
        if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
            return self._locked(self.busy_timeout_s if waited_s is None else waited_s)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return StoreError(f"{self.path}: this file is not a charbot database (not SQLite)")
        return StoreError(f"{self.path}: database error: {exc}")

    async def _execute(self, sql: str, params: tuple = (), db: aiosqlite.Connection | None = None) -> aiosqlite.Cursor:
        try:
            return await (db or self._db).execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # ---- queries: the only way in for this class and its companions (bot.store.jobs) ----

    async def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one read (on the reading connection, so never behind a waiting write).

        A database error, or a value SQLite cannot take, becomes a :class:`StoreError` naming the file.
        """
        try:
            async with (self._reader or self._db).execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        except (OverflowError, UnicodeError) as exc:
            raise StoreError(f"{self.path}: cannot look that up: {exc}") from None

    async def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def _configure(self, db: aiosqlite.Connection, reader: bool = False) -> None:
        await self._execute(f"PRAGMA busy_timeout = {self._busy_ms}", db=db)
        if reader:
            await self._execute("PRAGMA query_only = ON", db=db)
            return
        cur = await self._execute("PRAGMA journal_mode = WAL", db=db)
        row = await cur.fetchone()
        self.journal_mode = str(row[0]).lower() if row else "unknown"
        await self._execute("PRAGMA synchronous = FULL", db=db)
        await self._execute("PRAGMA secure_delete = ON", db=db)  # a deleted text is zeroed, not left in a free page
        await self._execute("PRAGMA foreign_keys = ON", db=db)
        await self._execute(SCHEMA_VERSION_TABLE, db=db)
        await self._execute("INSERT OR IGNORE INTO schema_version (id, version) VALUES (1, 0)", db=db)

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT version FROM schema_version WHERE id = 1")
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        """Apply the migrations not yet applied, each atomically with its version bump."""
        while True:
            version = await self.schema_version()
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path}: database schema version {version} is newer than this charbot knows "
                    f"({len(MIGRATIONS)}); upgrade charbot"
                )
            if version == len(MIGRATIONS):
                return
            script = MIGRATIONS[version]
            try:
                bump = f"UPDATE schema_version SET version = {version + 1} WHERE id = 1"
                await self._db.executescript(f"BEGIN IMMEDIATE;\n{script}\n;{bump};\nCOMMIT;")
            except sqlite3.Error as exc:
                try:
                    await self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if await self.schema_version() > version:
                    continue  # another process applied it while we waited
                raise StoreError(f"{self.path}: migration {version + 1} failed: {exc}") from None

    async def write(self, statements: list[tuple[str, tuple]], wait_s: float | None = None) -> list[aiosqlite.Cursor]:
        """Run statements in one committed transaction; return their cursors.

        Waits at most ``wait_s`` (default: the busy timeout) for the write lock, this
        connection's and other programs' together, then raises :class:`DatabaseLocked`. The
        transaction always ends: whatever is raised (a bad value, a cancelled task), it is
        rolled back before the exception leaves, so the next write, from anyone, works.
        """
        bound = self.busy_timeout_s if wait_s is None else max(0.0, wait_s)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._write_lock.acquire(), timeout=bound)
        except asyncio.TimeoutError:
            raise self._locked(bound) from None
        try:
            ms = max(1, int((bound - (time.monotonic() - started)) * 1000))
            if ms != self._busy_ms:
                await self._execute(f"PRAGMA busy_timeout = {ms}")
                self._busy_ms = ms
            await self._db.execute("BEGIN IMMEDIATE")
            cursors = [await self._db.execute(sql, params) for sql, params in statements]
            await self._db.execute("COMMIT")
            return cursors
        except BaseException as exc:
            # Even when cancelled, the statements already queued still run on the worker thread
            # (BEGIN included); the ROLLBACK queued after them ends whatever they opened.
            await self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, bound) from None
            if isinstance(exc, (OverflowError, UnicodeError)):
                raise StoreError(f"{self.path}: cannot store that value: {exc}") from None
            raise
        finally:
            self._write_lock.release()

    async def _rollback(self) -> None:
        """End the open transaction, even while the task is being cancelled."""
        task = asyncio.ensure_future(self._db.execute("ROLLBACK"))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task})  # the ROLLBACK still runs; wait for it, then let the cancel go on
            if not task.cancelled():
                task.exception()  # seen: a failed ROLLBACK only means nothing was open
            raise
        except sqlite3.Error:
            pass  # nothing was open (COMMIT had finished, or SQLite rolled back by itself)

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
        """Delete the user's contributions in this server; return how many were deleted.

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

    async def _scrub(self) -> None:
        """After a deletion: leave no copy of the deleted text on disk. ``secure_delete`` zeroed it
        in the database's pages; the write-ahead log still holds the pages as they were, so it is
        copied back and truncated now. Best effort: a reader of another process in the middle of a
        read keeps it until the next checkpoint, which SQLite makes by itself soon after."""
        async with self._write_lock:
            try:
                cur = await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                row = await cur.fetchone()
            except sqlite3.Error as exc:
                log.warning("%s: could not clear the write-ahead log after a deletion: %s", self.path, exc)
                return
        if row and row[0]:
            log.warning("%s: the write-ahead log is in use; deleted text stays in it until the next checkpoint",
                        self.path)

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
        if opted_out:
            sql = "INSERT OR IGNORE INTO opt_outs (guild_id, user_id, created) VALUES (?, ?, ?)"
            params: tuple = (guild_id, user_id, utc_now())
        else:
            sql, params = "DELETE FROM opt_outs WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        (cur,) = await self.write([(sql, params)])
        return cur.rowcount > 0


async def _connect(path: str, busy_timeout_s: float) -> aiosqlite.Connection:
    """An aiosqlite connection, or a one-line :class:`StoreError`.

    When SQLite cannot open the file, aiosqlite's worker thread is still shutting down as the
    error arrives; it is waited for here, or it could report to an event loop that the failed
    start-up has already closed ("Event loop is closed" printed after the one-line error).
    """
    pending = aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_s)
    try:
        return await pending
    except sqlite3.Error as exc:
        worker = getattr(pending, "_thread", None)
        if isinstance(worker, threading.Thread) and worker.is_alive():
            await asyncio.to_thread(worker.join, 5.0)
        hint = " (does the folder exist, and may charbot write there?)" if "unable to open" in str(exc) else ""
        raise StoreError(f"{path}: cannot open the database: {exc}{hint}") from None
