"""The bot's database: migrations, WAL, durability of acknowledged writes, clear errors."""

from __future__ import annotations

import sqlite3

import pytest

from bot.store import DatabaseLocked, Store, StoreError
from bot.store import database as store_module


async def test_migrations_apply_once_and_reopening_changes_nothing(tmp_path):
    path = tmp_path / "bot.db"
    async with await Store.open(path) as s:
        assert await s.schema_version() == len(store_module.MIGRATIONS)
        await s.add_contribution(1, 2, 3, "tale", "kept across reopen", "modal")
    async with await Store.open(path) as s:
        assert await s.schema_version() == len(store_module.MIGRATIONS)
        assert [c.text for c in await s.contributions()] == ["kept across reopen"]
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    names = [t[0] for t in tables]
    for table in ("schema_version", "user_settings", "contributions", "listening_channels", "opt_outs"):
        assert names.count(table) == 1


async def test_database_is_in_wal_mode(tmp_path):
    path = tmp_path / "bot.db"
    async with await Store.open(path) as s:
        assert s.journal_mode == "wal"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_acknowledged_contribution_is_visible_to_another_connection_at_once(tmp_path):
    path = tmp_path / "bot.db"
    async with await Store.open(path) as s:
        cid = await s.add_contribution(10, 20, 30, "faq", "Masks are required.", "listen")
        other = sqlite3.connect(path)
        row = other.execute("SELECT guild_id, channel_id, user_id, corpus, text, source, created "
                            "FROM contributions WHERE id = ?", (cid,)).fetchone()
        other.close()
    assert row[:6] == (10, 20, 30, "faq", "Masks are required.", "listen")
    assert row[6].endswith("Z") and "T" in row[6]


async def test_text_is_stored_verbatim_never_interpreted_as_sql(tmp_path):
    evil = "x'); DROP TABLE contributions; --"
    async with await Store.open(tmp_path / "bot.db") as s:
        await s.add_contribution(1, 1, 1, "tale", evil, "cli")
        assert [c.text for c in await s.contributions()] == [evil]


async def test_a_locked_database_gives_a_clear_error_and_loses_nothing(tmp_path):
    path = tmp_path / "bot.db"
    async with await Store.open(path, busy_timeout_s=0.1) as s:
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
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 999")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer than this charbot"):
        await Store.open(path)


async def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "bot.db"
    async with await Store.open(path) as s:
        await s.add_contribution(1, 1, 1, "tale", "precious", "modal")
    bad = "CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, bad])
    with pytest.raises(StoreError, match=f"migration {len(store_module.MIGRATIONS)} failed"):
        await Store.open(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == len(store_module.MIGRATIONS) - 1
    assert not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchall()
    assert con.execute("SELECT text FROM contributions").fetchall() == [("precious",)]


async def test_files_that_are_not_databases_and_missing_folders_are_named(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a charbot database"):
        await Store.open(junk)
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(tmp_path / "no" / "such" / "bot.db")


async def test_settings_listening_and_opt_outs_are_per_server(tmp_path):
    async with await Store.open(tmp_path / "bot.db") as s:
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
    async with await Store.open(tmp_path / "bot.db") as s:
        with pytest.raises(ValueError, match="source"):
            await s.add_contribution(1, 1, 1, "tale", "x", "telepathy")
        assert await s.contributions() == []
