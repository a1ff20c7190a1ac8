"""The personas table and its texts, on SQLite and on PostgreSQL (each test runs on both): a persona and
its text are written together or not at all, a name is taken once per server, and deleting one leaves
nothing of it in the database."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import open_store, utc_now
from bot.store.conversation import ChannelSettings, ConversationStore, PostedReply
from bot.store.jobs import FinetuneStore, VersionRow
from bot.store.personas import PersonaExists, PersonaStore, Upload

GUILD, OTHER_GUILD = 1_146_439_104_567_410_688, 42
ADMIN, CHANNEL = 987_654_321_098_765_432, 1_200_000_000_000_000_001
KEY = f"g{GUILD}-rules"
UPLOADS = [Upload("rules.txt", "The ferry leaves at nine.\n" * 40), Upload("faq.md", "Ask the harbour master.\n" * 30)]


def version(n: int) -> VersionRow:
    return VersionRow(KEY, n, f"/state/versions/{KEY}/v{n:04d}.safetensors", None, "/base", None, "discord:1", 2,
                      1000, 100, {}, utc_now(), True, False)


async def table_rows(store, table: str, key: str = KEY) -> int:
    column = "name" if table == "personas" else "corpus"
    value = "rules" if table == "personas" else key
    (n,) = await store.fetchone(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (value,))
    return int(n)


async def test_a_persona_and_its_texts_are_recorded_together(database):
    async with await open_store(database) as store:
        rows = PersonaStore(store)
        row = await rows.create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal")
        assert (row.guild_id, row.name, row.style, row.created_by) == (GUILD, "rules", "faq", ADMIN)
        assert row.key == KEY and row.files == ["rules.txt", "faq.md"] and row.chars == 26 * 40 + 24 * 30
        assert await rows.get(GUILD, "rules") == row
        assert await rows.get(OTHER_GUILD, "rules") is None
        assert await rows.of_guild(GUILD) == [row] and await rows.of_guild(OTHER_GUILD) == []
        texts = await store.contributions(corpus=KEY)
        assert [(c.guild_id, c.channel_id, c.user_id, c.text, c.source) for c in texts] == [
            (GUILD, CHANNEL, ADMIN, u.text, "modal") for u in UPLOADS]
        names = await store.fetchall("SELECT filename FROM contributions WHERE corpus = ? ORDER BY id", (KEY,))
        assert [n for (n,) in names] == ["rules.txt", "faq.md"]
        assert await rows.text_chars(KEY) == row.chars
        # The texts are the persona's training data, like any contribution.
        texts_for_training, _ = await FinetuneStore(store).training_texts(KEY)
        assert texts_for_training == [u.text for u in UPLOADS]


async def test_if_any_text_cannot_be_written_the_persona_is_not_recorded_either(database):
    async with await open_store(database) as store:
        rows = PersonaStore(store)
        with pytest.raises(Exception):  # noqa: B017 (the backend's own error: a CHECK on the text's source)
            await rows.create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "carrier-pigeon")
        assert await rows.get(GUILD, "rules") is None
        assert await rows.every() == [] and await store.contributions() == []


async def test_a_name_is_taken_once_per_server_and_two_servers_may_share_it(database):
    async with await open_store(database) as store:
        rows = PersonaStore(store)
        await rows.create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal")
        with pytest.raises(PersonaExists):
            await rows.create(GUILD, "rules", "story", ADMIN + 1, CHANNEL, UPLOADS[:1], "cli")
        assert len(await store.contributions(corpus=KEY)) == 2  # the refused one added no text
        other = await rows.create(OTHER_GUILD, "rules", "story", ADMIN, 7, UPLOADS[:1], "cli")
        assert other.key == "g42-rules"
        assert [(r.guild_id, r.name) for r in await rows.every()] == [(42, "rules"), (GUILD, "rules")]


async def test_two_processes_creating_one_name_at_once_get_one_persona_and_one_refusal(database):
    """The second writer's insert fails on the primary key; it is told the name is taken, not a database error."""
    async with await open_store(database) as a, await open_store(database) as b:
        got = await asyncio.gather(
            PersonaStore(a).create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal"),
            PersonaStore(b).create(GUILD, "rules", "prose", ADMIN + 1, CHANNEL, UPLOADS[:1], "cli"),
            return_exceptions=True,
        )
        assert sorted(type(g).__name__ for g in got) == ["PersonaExists", "PersonaRow"]
        (kept,) = [g for g in got if not isinstance(g, Exception)]
        assert len(await a.contributions(corpus=KEY)) == len(kept.files)


async def test_deleting_a_persona_removes_its_row_texts_versions_and_traces_and_nothing_else(database):
    async with await open_store(database) as store:
        rows, jobs, conversation = PersonaStore(store), FinetuneStore(store), ConversationStore(store)
        await rows.create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal")
        await rows.create(OTHER_GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal")
        await store.add_contribution(GUILD, CHANNEL, ADMIN, "tale", "A tale contributed here.", "modal")
        sources = (await jobs.training_contributions(KEY))[1]
        await jobs.record_version(None, version(1), sources=sources)
        job = await jobs.create_job(KEY, "discord:1", {"minutes": 1}, GUILD, CHANNEL)
        await jobs.finish_job(job, "failed", "it did not get better")
        await store.write([(
            "INSERT INTO job_queue (corpus, started_by, guild_id, channel_id, minutes, forced, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (KEY, "discord:1", GUILD, CHANNEL, 1.0, 0, utc_now()))])
        await conversation.set_channel(GUILD, CHANNEL, ChannelSettings(persona=KEY), ADMIN)
        await conversation.set_channel(GUILD, CHANNEL + 1, ChannelSettings(persona="faq", mentions=False), ADMIN)
        await conversation.record_reply(PostedReply(5, GUILD, CHANNEL, ADMIN, KEY, "slash", "When?", None,
                                                    "At nine.", 1, utc_now()), 3600)
        await store.write([("INSERT INTO forgotten_shingles (corpus, hash) VALUES (?, ?)", (KEY, 123))])
        for table in ("personas", "contributions", "checkpoint_versions", "version_provenance", "jobs",
                      "job_queue", "posted_replies", "forgotten_shingles"):
            assert await table_rows(store, table) >= 1, table

        assert await rows.delete(GUILD, "rules") is True
        for table in ("contributions", "checkpoint_versions", "version_provenance", "jobs", "job_queue",
                      "posted_replies", "forgotten_shingles"):
            assert await table_rows(store, table) == 0, table
        assert await rows.get(GUILD, "rules") is None and await rows.text_chars(KEY) == 0
        assert (await conversation.channel(GUILD, CHANNEL)).persona is None  # the channel speaks as the default
        assert await conversation.channel(GUILD, CHANNEL + 1) == ChannelSettings(persona="faq", mentions=False)
        # The other server's persona of the same name, and other texts, are untouched.
        assert (await rows.get(OTHER_GUILD, "rules")) is not None
        assert len(await store.contributions(corpus="g42-rules")) == 2
        assert [c.text for c in await store.contributions(corpus="tale")] == ["A tale contributed here."]
        assert await rows.delete(GUILD, "rules") is False  # gone already


async def test_a_running_job_of_a_deleted_persona_stays_on_record_for_its_process_to_end(database):
    async with await open_store(database) as store:
        rows, jobs = PersonaStore(store), FinetuneStore(store)
        await rows.create(GUILD, "rules", "faq", ADMIN, CHANNEL, UPLOADS, "modal")
        job = await jobs.create_job(KEY, "discord:1", {"minutes": 1}, GUILD, CHANNEL)
        await rows.delete(GUILD, "rules")
        assert (await jobs.job(job)).state == "running"
