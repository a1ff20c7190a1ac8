"""The SQLite store (bot.store.sqlite): migrations, WAL, durability of acknowledged writes, clear errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from bot.store import DatabaseLocked, StoreError, open_store
from bot.store import sqlite as store_module
from tests.helpers import write_lock_held


async def test_migrations_apply_once_and_reopening_changes_nothing(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        assert await s.schema_version() == len(store_module.MIGRATIONS)
        await s.add_contribution(1, 2, 3, "tale", "kept across reopen", "modal")
    async with await open_store(path) as s:
        assert await s.schema_version() == len(store_module.MIGRATIONS)
        assert [c.text for c in await s.contributions()] == ["kept across reopen"]
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    names = [t[0] for t in tables]
    for table in ("schema_version", "user_settings", "contributions", "listening_channels", "opt_outs"):
        assert names.count(table) == 1


async def test_database_is_in_wal_mode(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        assert s.journal_mode == "wal"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_acknowledged_contribution_is_visible_to_another_connection_at_once(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        cid = await s.add_contribution(10, 20, 30, "faq", "Masks are required.", "listen")
        other = sqlite3.connect(path)
        row = other.execute("SELECT guild_id, channel_id, user_id, corpus, text, source, created "
                            "FROM contributions WHERE id = ?", (cid,)).fetchone()
        other.close()
    assert row[:6] == (10, 20, 30, "faq", "Masks are required.", "listen")
    assert row[6].endswith("Z") and "T" in row[6]


async def test_text_is_stored_verbatim_never_interpreted_as_sql(tmp_path):
    evil = "x'); DROP TABLE contributions; --"
    async with await open_store(tmp_path / "bot.db") as s:
        await s.add_contribution(1, 1, 1, "tale", evil, "cli")
        assert [c.text for c in await s.contributions()] == [evil]


async def test_a_locked_database_gives_a_clear_error_and_loses_nothing(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path, busy_timeout_s=0.1) as s:
        await s.set_temperature(1, 2, 0.5)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseLocked) as err:
            await s.set_temperature(1, 2, 1.5)
        message = str(err.value)
        assert "locked" in message and str(path) in message and "\n" not in message
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await s.get_temperature(1, 2) == 0.5
        await s.set_temperature(1, 2, 1.5)
        assert await s.get_temperature(1, 2) == 1.5


async def test_a_database_from_a_newer_charbot_is_refused(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path):
        pass
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 999")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer than this charbot"):
        await open_store(path)


async def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        await s.add_contribution(1, 1, 1, "tale", "precious", "modal")
    bad = "CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, bad])
    with pytest.raises(StoreError, match=f"migration {len(store_module.MIGRATIONS)} failed"):
        await open_store(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == len(store_module.MIGRATIONS) - 1
    assert not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchall()
    assert con.execute("SELECT text FROM contributions").fetchall() == [("precious",)]


async def test_files_that_are_not_databases_and_missing_folders_are_named(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a charbot database"):
        await open_store(junk)
    with pytest.raises(StoreError, match="does not exist"):
        await open_store(tmp_path / "no" / "such" / "bot.db")


async def test_settings_listening_and_opt_outs_are_per_server(tmp_path):
    async with await open_store(tmp_path / "bot.db") as s:
        await s.set_temperature(1, 7, 0.3)
        assert await s.get_temperature(2, 7) is None
        assert await s.listen(1, 100, "tale") is None
        assert await s.listen(1, 100, "faq") == "tale"
        assert await s.listening_corpus(1, 100) == "faq"
        assert await s.listening_corpus(2, 100) is None
        assert await s.listening_channels(1) == {100: "faq"}
        assert await s.unlisten(1, 100) == "faq"
        assert await s.unlisten(1, 100) is None
        assert await s.set_opt_out(1, 7, True) is True
        assert await s.set_opt_out(1, 7, True) is False
        assert await s.is_opted_out(1, 7) and not await s.is_opted_out(2, 7)
        assert await s.set_opt_out(1, 7, False) is True
        assert not await s.is_opted_out(1, 7)


async def test_unknown_contribution_source_is_rejected(tmp_path):
    async with await open_store(tmp_path / "bot.db") as s:
        with pytest.raises(ValueError, match="source"):
            await s.add_contribution(1, 1, 1, "tale", "x", "telepathy")
        assert await s.contributions() == []


def another_program_can_write(path) -> bool:
    """Whether a second connection gets the write lock at once (no transaction left open here)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


@pytest.mark.parametrize("bad", ["A tale \udcff of the \ud800 broken bytes", 2**70], ids=["surrogate", "huge"])
async def test_a_value_sqlite_cannot_take_ends_its_transaction_and_the_next_write_works(tmp_path, bad):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        with pytest.raises(StoreError, match="cannot store that value") as err:
            await s.write([("INSERT INTO opt_outs (guild_id, user_id, created) VALUES (1, ?, 'now')", (bad,))])
        assert "\n" not in str(err.value)
        assert another_program_can_write(path), "the failed write left the database write-locked"
        await s.set_temperature(1, 2, 0.5)  # "cannot start a transaction within a transaction" before the fix
        assert await s.get_temperature(1, 2) == 0.5


async def test_a_contribution_with_lone_surrogates_and_controls_is_stored_without_them(tmp_path):
    async with await open_store(tmp_path / "bot.db") as s:
        await s.add_contribution(1, 1, 1, "tale", "A tale \udcff of the \ud800 broken\x00 bytes \U0001f409", "modal")
        assert [c.text for c in await s.contributions()] == ["A tale  of the  broken bytes \U0001f409"]


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_nothing_open(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path, busy_timeout_s=30) as s:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(s.set_temperature(1, 2, 0.5))
        await asyncio.sleep(0.2)  # queued behind the other program's lock
        write.cancel()
        blocker.execute("ROLLBACK")  # the BEGIN already on the worker thread now succeeds...
        blocker.close()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert another_program_can_write(path), "...and must have been rolled back"
        await s.set_temperature(1, 2, 1.0)
        assert await s.get_temperature(1, 2) == 1.0


@pytest.mark.slow
async def test_a_write_waits_only_as_long_as_it_is_told_and_reads_never_wait_behind_it(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path, busy_timeout_s=60) as s:
        await s.set_temperature(1, 2, 0.5)
        async with write_lock_held(path):
            with pytest.raises(DatabaseLocked, match="gave up after 0.2 s"):
                await s.write([("UPDATE user_settings SET temperature = 1.0", ())], wait_s=0.2)
            waiting = asyncio.create_task(s.set_temperature(1, 3, 1.5))  # waits up to 60 s on the writer
            await asyncio.sleep(0.1)
            assert await s.get_temperature(1, 2) == 0.5  # read while another program and our own write wait
            assert not waiting.done()
        await waiting  # the lock is gone: the waiting write went through, nothing lost
        assert await s.get_temperature(1, 3) == 1.5


async def test_a_database_that_cannot_be_opened_is_one_error_and_leaves_no_worker_behind(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    before = set(threading.enumerate())
    with pytest.raises(StoreError, match="cannot open the database") as err:
        await open_store(folder)  # a folder where the file should be: SQLite cannot open it
    assert "\n" not in str(err.value)
    workers = [t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio_")]
    assert workers == [], "aiosqlite's worker outlived the error (it then reports to a closed event loop)"
