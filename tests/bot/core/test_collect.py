"""Which messages in listening channels are kept: people's own prose, unless they opted out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import Limits
from bot.core.collect import collect, usable_text
from bot.core.heard import Heard
from bot.store import open_store

LIMITS = Limits(max_contribution_chars=50)
G, LISTENING, QUIET, AUTHOR = 1, 10, 11, 100
PROSE = Heard(guild_id=G, channel_id=LISTENING, author_id=AUTHOR, content="The snow queen came at night.")


@pytest.fixture
async def store(tmp_path):
    s = await open_store(tmp_path / "bot.db")
    await s.listen(G, LISTENING, "tale")
    yield s
    await s.close()


async def test_a_persons_message_in_a_listening_channel_is_stored_for_its_corpus(store):
    cid = await collect(store, PROSE, LIMITS)
    (c,) = await store.contributions()
    assert c.id == cid
    assert (c.guild_id, c.channel_id, c.user_id, c.corpus, c.text, c.source) == (
        G,
        LISTENING,
        AUTHOR,
        "tale",
        "The snow queen came at night.",
        "listen",
    )


@pytest.mark.parametrize(
    "message",
    [
        replace(PROSE, channel_id=QUIET),
        replace(PROSE, author_is_bot=True),
        replace(PROSE, is_webhook=True),
        replace(PROSE, is_system=True),
        replace(PROSE, guild_id=None),
        replace(PROSE, content="/tale once upon a time"),
        replace(PROSE, content="!play some music"),
        replace(PROSE, content="   "),
        replace(PROSE, content=""),
    ],
    ids=[
        "quiet channel",
        "bot",
        "webhook",
        "system",
        "direct message",
        "slash typed",
        "prefix command",
        "blank",
        "attachment only",
    ],
)
async def test_everything_else_is_skipped(store, message):
    assert await collect(store, message, LIMITS) is None
    assert await store.contributions() == []


async def test_people_who_opted_out_are_skipped_in_that_server_only(store):
    await store.set_opt_out(G, AUTHOR, True)
    assert await collect(store, PROSE, LIMITS) is None
    await store.listen(2, LISTENING, "faq")
    assert await collect(store, replace(PROSE, guild_id=2), LIMITS) is not None
    assert [c.guild_id for c in await store.contributions()] == [2]


async def test_unlistening_stops_collection(store):
    await store.unlisten(G, LISTENING)
    assert await collect(store, PROSE, LIMITS) is None


def test_long_messages_are_kept_up_to_the_limit():
    text = usable_text(replace(PROSE, content="  " + "a" * 80 + "  "), LIMITS)
    assert text == "a" * 50
