"""The store's interface behaves the same on SQLite and on PostgreSQL (each test runs on both).

Two stores on one database stand for two bot processes or two machines: what one writes the
other reads, and one fine-tuning job per corpus runs across them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.store import MIGRATIONS, DatabaseLocked, Store, StoreError, open_store, utc_now
from bot.store.jobs import FinetuneStore, JobConflict, VersionRow
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SQLiteStore


async def test_open_store_picks_the_backend_from_what_it_is_given(database):
    on_postgres = database.startswith("postgresql")
    async with await open_store(database) as s:
        assert type(s) is (PostgresStore if on_postgres else SQLiteStore)
        assert s.journal_mode == ("postgresql" if on_postgres else "wal")
    # the other spellings: libpq's short scheme, and a SQLite path given as a Path
    other = database.replace("postgresql://", "postgres://", 1) if on_postgres else Path(database)
    async with await open_store(other) as s:
        assert type(s) is (PostgresStore if on_postgres else SQLiteStore)


def test_the_interface_is_abstract_so_a_backend_must_implement_its_primitives():
    with pytest.raises(TypeError, match="abstract"):
        Store("nowhere", 1.0)


async def test_migrations_apply_once_and_reopening_keeps_everything(database):
    async with await open_store(database) as s:
        assert await s.schema_version() == len(MIGRATIONS)
        await s.add_contribution(1, 2, 3, "tale", "kept across reopen", "modal")
    async with await open_store(database) as s:
        assert await s.schema_version() == len(MIGRATIONS)
        assert [c.text for c in await s.contributions()] == ["kept across reopen"]


async def test_a_database_from_a_newer_charbot_is_refused(database):
    async with await open_store(database) as s:
        await s.write([("UPDATE schema_version SET version = ? WHERE id = 1", (len(MIGRATIONS) + 1,))])
    with pytest.raises(StoreError, match="newer than this charbot knows"):
        await open_store(database)


async def test_settings_listening_and_opt_outs_are_per_server_with_discord_sized_ids(database):
    guild, user, channel = 1_146_439_104_567_410_688, 987_654_321_098_765_432, 1_200_000_000_000_000_001
    async with await open_store(database) as s:
        await s.set_temperature(guild, user, 0.3)
        assert await s.get_temperature(guild, user) == 0.3
        assert await s.get_temperature(2, user) is None
        await s.set_temperature(guild, user, None)
        assert await s.get_temperature(guild, user) is None
        assert await s.listen(guild, channel, "tale") is None
        assert await s.listen(guild, channel, "faq") == "tale"
        assert await s.listening_channels(guild) == {channel: "faq"}
        assert await s.unlisten(guild, channel) == "faq"
        assert await s.unlisten(guild, channel) is None
        assert await s.set_opt_out(guild, user, True) is True
        assert await s.set_opt_out(guild, user, True) is False
        assert await s.is_opted_out(guild, user) and not await s.is_opted_out(2, user)
        assert await s.set_opt_out(guild, user, False) is True


async def test_contributions_are_stored_verbatim_counted_and_forgotten(database):
    evil = "x'); DROP TABLE contributions; -- ? $1"
    async with await open_store(database) as s:
        first = await s.add_contribution(1, 5, 7, "tale", evil, "cli")
        second = await s.add_contribution(1, 5, 7, "faq", "A question?", "modal")
        assert second > first
        await s.add_contribution(2, 5, 7, "tale", "elsewhere", "listen")
        assert [c.text for c in await s.contributions(guild_id=1)] == [evil, "A question?"]
        assert [c.id for c in await s.contributions(corpus="tale")] == [first, first + 2]
        assert await s.count_contributions(1, 7) == 2
        assert await s.forget(1, 7) == 2
        assert await s.forget(1, 7) == 0
        with pytest.raises(StoreError, match="cannot store that value"):
            await s.write([("INSERT INTO opt_outs (guild_id, user_id, created) VALUES (1, ?, 'now')", (2**70,))])
        await s.set_temperature(1, 2, 0.5)  # the failed write ended its transaction
        assert await s.get_temperature(1, 2) == 0.5


async def test_two_stores_on_one_database_see_each_others_writes_and_share_the_job_lock(database):
    async with await open_store(database) as one, await open_store(database) as two:
        await one.set_temperature(1, 2, 1.25)
        await one.set_opt_out(1, 3, True)
        await one.add_contribution(1, 4, 5, "tale", "from process one", "modal")
        assert await two.get_temperature(1, 2) == 1.25 and await two.is_opted_out(1, 3)
        assert [c.text for c in await two.contributions()] == ["from process one"]

        jobs_one, jobs_two = FinetuneStore(one), FinetuneStore(two)
        tried = await asyncio.gather(*(j.create_job("tale", who, {}) for j, who in ((jobs_one, "one"),
                                                                                   (jobs_two, "two"))),
                                     return_exceptions=True)
        assert sum(isinstance(t, int) for t in tried) == 1, tried
        assert sum(isinstance(t, JobConflict) for t in tried) == 1, tried
        job = next(t for t in tried if isinstance(t, int))
        with pytest.raises(JobConflict, match=f"job {job}"):
            await jobs_two.create_job("tale", "two", {})
        await jobs_one.finish_job(job, "cancelled", "changed my mind")
        again = await jobs_two.create_job("tale", "two", {"minutes": 1})
        assert (await jobs_one.running_job("tale")).id == again


async def test_versions_are_recorded_served_and_rolled_back_for_every_store(database):
    def row(n: int) -> VersionRow:
        return VersionRow("tale", n, f"/versions/tale/v{n:04d}.safetensors", n - 1 or None, "/base", None, "admin",
                          3, 1000, 100, {"before": {"contributed": 2.0}}, "2026-01-01T00:00:00Z", True, False)

    async with await open_store(database) as one, await open_store(database) as two:
        a, b = FinetuneStore(one), FinetuneStore(two)
        job = await a.create_job("tale", "admin", {})
        await a.record_version(job, row(1), {"ok": True})
        assert (await b.job(job)).state == "done" and (await b.job(job)).version == 1
        await a.record_version(None, row(2))
        assert (await b.served("tale")).version == 2 and await b.max_version("tale") == 2
        await b.set_served("tale", 1)
        assert (await a.served("tale")).version == 1
        await b.set_served("tale", 0)
        assert await a.served("tale") is None
        await a.mark_pruned("tale", [2])
        assert [v.version for v in await b.versions("tale")] == [1]
        assert (await b.version("tale", 1)).losses == {"before": {"contributed": 2.0}}
        await one.add_contribution(1, 1, 9, "tale", "collected", "listen")
        await one.add_contribution(1, 1, 8, "tale", "sent", "modal")
        await one.set_opt_out(1, 9, True)
        assert await b.training_texts("tale") == (["sent"], 1)


async def test_a_write_blocked_by_another_connection_gives_up_within_its_bound(database):
    async with await open_store(database, busy_timeout_s=0.2) as one, await open_store(database) as two:
        await one.set_temperature(1, 2, 0.5)
        hold = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:  # another program: a long transaction holding the row
            if database.startswith("postgresql"):
                import asyncpg

                con = await asyncpg.connect(database)
                try:
                    async with con.transaction():
                        await con.execute("SELECT * FROM user_settings WHERE guild_id = 1 FOR UPDATE")
                        hold.set()
                        await release.wait()
                finally:
                    await con.close()
            else:
                import sqlite3

                con = sqlite3.connect(database, isolation_level=None)
                con.execute("BEGIN IMMEDIATE")
                hold.set()
                await release.wait()
                con.execute("ROLLBACK")
                con.close()

        task = asyncio.ensure_future(holder())
        await hold.wait()
        try:
            with pytest.raises(DatabaseLocked, match="gave up after 0.2 s"):
                await one.set_temperature(1, 2, 0.9)
            assert await two.get_temperature(1, 2) == 0.5  # reads never wait behind it
        finally:
            release.set()
            await task
        await one.set_temperature(1, 2, 0.9)
        assert await two.get_temperature(1, 2) == 0.9


async def test_a_job_held_by_another_machine_is_released_only_once_past_its_time_budget(database):
    async def job_of_another_machine(created: str) -> int:
        await one.write([(
            "INSERT INTO jobs (corpus, state, started_by, owner_pid, owner_host, params, created) "
            "VALUES ('tale', 'running', 'machine b', 4242, 'machine-b.example', ?, ?)",
            ('{"minutes": 10}', created),
        )])
        return (await jobs.running_job("tale")).id

    async with await open_store(database) as one:
        jobs = FinetuneStore(one)
        recent = await job_of_another_machine(utc_now())
        with pytest.raises(JobConflict):  # its pid means nothing here, and it may well be training
            await jobs.create_job("tale", "machine a", {})
        assert await jobs.fail_interrupted() == []
        await jobs.finish_job(recent, "cancelled")

        stale = await job_of_another_machine("2026-01-01T00:00:00Z")  # 10 minutes then, long over
        mine = await jobs.create_job("tale", "machine a", {})
        assert (await jobs.job(stale)).state == "failed" and (await jobs.running_job("tale")).id == mine
