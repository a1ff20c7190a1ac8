"""Channel settings and the replies whose buttons still work, on SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

from bot.store import open_store, utc_now
from bot.store.conversation import ChannelSettings, ConversationStore, PostedReply

REPLY = PostedReply(message_id=9_000_000_000_000_000_001, guild_id=1, channel_id=2, asker_id=3, corpus="tale",
                    made_by="mention", prompt="Once upon a time", context="", tail="and they lived.", seed=7,
                    created="")


async def test_a_channel_setting_is_shared_by_every_store_on_the_database(database):
    async with await open_store(database) as one, await open_store(database) as two:
        assert await ConversationStore(two).channel(1, 2) == ChannelSettings()  # an admin never set it
        wanted = ChannelSettings(persona="novel", mentions=False, chime_chance=0.05, chime_every_s=120)
        await ConversationStore(one).set_channel(1, 2, wanted, by=99)
        assert await ConversationStore(two).channel(1, 2) == wanted
        assert await ConversationStore(two).channels(1) == {2: wanted}
        assert await ConversationStore(two).channel(None, 2) == ChannelSettings()  # a direct message


async def test_a_posted_reply_is_kept_until_its_buttons_expire(database):
    async with await open_store(database) as s:
        conv = ConversationStore(s)
        await conv.record_reply(replace(REPLY, created=utc_now()), keep_for_s=3600)
        kept = await conv.reply(REPLY.message_id)
        assert kept is not None and kept.prompt == "Once upon a time" and kept.seed == 7 and kept.age_s() < 60
        old = replace(REPLY, message_id=5, created=utc_now(7200))
        await conv.record_reply(old, keep_for_s=3600)  # the write itself sweeps expired rows, this one too
        assert await conv.reply(5) is None and await conv.reply(REPLY.message_id) is not None


async def test_forget_and_opting_out_reach_the_words_kept_for_buttons(database):
    async with await open_store(database) as s:
        conv = ConversationStore(s)
        await conv.record_reply(replace(REPLY, created=utc_now()), keep_for_s=3600)
        await conv.record_reply(replace(REPLY, message_id=6, asker_id=4, created=utc_now()), keep_for_s=3600)
        await s.set_opt_out(1, 3, True)
        words_gone = await conv.reply(REPLY.message_id)
        assert words_gone.prompt is None and words_gone.context is None and words_gone.tail == "and they lived."
        await s.forget(1, 3)
        assert await conv.reply(REPLY.message_id) is None
        assert (await conv.reply(6)).prompt == "Once upon a time"  # someone else's reply stays
