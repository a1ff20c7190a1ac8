"""The store in a SQLite file, for one machine: :class:`SQLiteStore`.

SQLite through aiosqlite so the event loop never blocks on disk. WAL lets readers and the
writer proceed together, so reads go through their own connection (its own worker thread):
a write waiting for another program's lock never holds up a read such as the temperature a
reply needs. Every write is one transaction that always ends, committed or rolled back
whatever is raised, and waits at most a bounded time for the lock. ``synchronous=FULL`` means
a contribution the bot has acknowledged is on disk even if the machine loses power right after.
The migrations (:mod:`bot.store.schema`) run as written, each in its own transaction. All
queries are parameterized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path

import aiosqlite

from bot.store.base import DatabaseLocked, Store, StoreError
from bot.store.schema import MIGRATIONS, SCHEMA_VERSION_TABLE

log = logging.getLogger(__name__)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore(Store):
    """:class:`Store` in a SQLite file: ``await open_store(path)`` (:func:`bot.store.open_store`) returns one."""

    def __init__(
        self, db: aiosqlite.Connection, path: str, busy_timeout_s: float, reader: aiosqlite.Connection | None = None
    ) -> None:
        super().__init__(path, busy_timeout_s)
        self._db = db
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._busy_ms = int(busy_timeout_s * 1000)

    @classmethod
    async def open(cls, path: str | Path, busy_timeout_s: float = 5.0) -> SQLiteStore:
        """Open (creating if needed) and migrate the database file at ``path``."""
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

    # ---- plumbing ---------------------------------------------------------------------

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

    # ---- reads, set-up and migrations, writes -------------------------------------------

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

    async def _migrate(self) -> None:
        """Apply the migrations not yet applied, each atomically with its version bump."""
        while True:
            version = await self.schema_version()
            if version > len(MIGRATIONS):
                raise self._too_new(version, len(MIGRATIONS))
            if version == len(MIGRATIONS):
                return
            script = MIGRATIONS[version]
            try:
                bump = f"UPDATE schema_version SET version = {version + 1} WHERE id = 1"
                await self._db.executescript(f"BEGIN IMMEDIATE;\n{script}\n;{bump};\nCOMMIT;")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                if await self.schema_version() > version:
                    continue  # another process applied it while we waited
                raise StoreError(f"{self.path}: migration {version + 1} failed: {exc}") from None

    async def write(self, statements: list[tuple[str, tuple]], wait_s: float | None = None) -> list[aiosqlite.Cursor]:
        """Run statements in one committed transaction; return their cursors (see :meth:`Store.write`).

        The wait is for the write lock, this connection's and other programs' together.
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
