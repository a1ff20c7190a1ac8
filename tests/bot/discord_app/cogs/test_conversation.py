"""Talking with the bot end to end through the fake Discord: mentions, reply chains, buttons, the
message menu, a persona per channel, chiming in, and the silences that keep it from looping."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from bot.core.conversation import EXPIRED, NOT_MINE, NOTHING_TO_CONTINUE, ONLY_ASKER, custom_id
from bot.store.conversation import ConversationStore
from tests.bot.e2e_bot import BotUnderTest, bot_on_fake
from tests.helpers import eventually

CONTINUE, ANOTHER = custom_id("continue"), custom_id("another")


def button_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row.get("components", [])]


def never_pings(message: dict) -> None:
    allowed = message.get("allowed_mentions") or {}
    assert allowed.get("parse") == [] and not allowed.get("replied_user"), allowed


async def mention(world: BotUnderTest, text: str, **kw) -> dict:
    return await world.fake.post_message(f"{world.fake.mention(world.fake.bot_user)} {text}", **kw)


async def kept_for(world: BotUnderTest, message: dict):
    """What the store keeps for a reply's buttons (written just after its final edit)."""
    store = ConversationStore(world.store)
    return await eventually(lambda: store.reply(int(message["id"])), what=f"the record of message {message['id']}")


async def quiet(world: BotUnderTest, seconds: float = 1.0) -> list[dict]:
    """The bot's messages after giving it ``seconds`` to answer (for the cases it must not)."""
    await asyncio.sleep(seconds)
    return world.fake.bot_messages()


async def test_a_mention_is_answered_as_a_reply_in_the_channels_persona_without_pinging(world: BotUnderTest):
    reply = await world.ask("Once upon a time there was a fox")
    assert reply["content"].startswith("**Once upon a time there was a fox**")  # the mention itself is gone
    assert reply["message_reference"]["message_id"] and reply["type"] == 19
    never_pings(reply)
    assert button_ids(reply) == [CONTINUE, ANOTHER]
    kept = await kept_for(world, reply)
    assert (kept.corpus, kept.made_by, kept.prompt) == ("tale", "mention", "Once upon a time there was a fox")


async def test_replying_to_the_bot_continues_the_conversation_from_the_chain(world: BotUnderTest):
    fake = world.fake
    first = await world.ask("A fox and a crow")
    answer = await fake.post_message("and then the crow sang", reply_to=first)
    second = await fake.wait_settled(await fake.wait_for_reply(answer))
    assert second["content"].startswith("**and then the crow sang**")
    kept = await kept_for(world, second)
    assert kept.made_by == "reply" and "A fox and a crow" in kept.context  # the chain primed it


async def test_a_reply_to_a_deleted_bot_message_falls_back_to_the_persons_words(world: BotUnderTest):
    fake = world.fake
    first = await world.ask("A fox")
    await fake.delete_message(first)
    answer = await fake.post_message("what happened next", reply_to=first["id"])
    second = await fake.wait_settled(await fake.wait_for_reply(answer))
    assert second["content"].startswith("**what happened next**")
    assert (await kept_for(world, second)).context == ""


async def test_continue_is_for_anyone_and_another_only_for_the_asker(world: BotUnderTest):
    fake = world.fake
    reply = await world.ask("A fox")
    others = await world.press(reply, ANOTHER, user=fake.other_member)
    assert world.private_answer(others) == ONLY_ASKER
    before = len(fake.bot_messages())
    await world.press(reply, CONTINUE, user=fake.other_member)
    await fake.wait_until(lambda: len(fake.bot_messages()) > before, what="the continuation")
    follow = await fake.wait_settled(fake.bot_messages()[-1])
    assert button_ids(follow) == [CONTINUE, ANOTHER] and not follow["content"].startswith("**")
    kept = await kept_for(world, follow)
    assert kept.made_by == "button" and kept.asker_id == int(fake.other_member.id)
    old_text = reply["content"]
    await world.press(reply, ANOTHER)  # the asker: the same words again, in place
    rewritten = await fake.wait_for_message(lambda m: m["id"] == reply["id"] and m["content"] != old_text)
    assert rewritten["content"].startswith("**A fox**")


async def test_buttons_keep_working_after_the_cog_restarts(world: BotUnderTest):
    reply = await world.ask("A fox")
    await world.bot.reload_extension("bot.discord_app.cogs.conversation")  # nothing kept in memory survives
    await asyncio.sleep(1.2)  # and discord.py's own record of the buttons has timed out
    before = len(world.fake.bot_messages())
    await world.press(reply, CONTINUE)
    await world.fake.wait_until(lambda: len(world.fake.bot_messages()) > before, what="the continuation")


async def test_tampered_expired_and_deleted_presses_get_a_private_explanation(world: BotUnderTest):
    fake = world.fake
    reply = await world.ask("A fox")
    forged_id = "charbot:delete_everything"  # a crafted request: no client shows such a button
    forged = {**reply, "id": fake.ids.next(), "components": [{"type": 1, "components": [
        {"type": 2, "style": 1, "label": "Delete", "custom_id": forged_id}]}]}
    assert world.private_answer(await world.press(forged, forged_id)) == NOT_MINE
    await world.store.write([("UPDATE posted_replies SET created = ?", ("2020-01-01T00:00:00Z",))])
    expired = world.private_answer(await world.press(reply, CONTINUE))
    assert expired == EXPIRED.format(hours=world.config.limits.button_hours)
    gone = await world.ask("A crow")
    await fake.delete_message(gone)
    await world.store.write([("DELETE FROM posted_replies", ())])
    assert "expired" in world.private_answer(await world.press(gone, ANOTHER))


async def test_the_message_menu_continues_any_message(world: BotUnderTest):
    fake = world.fake
    said = await fake.post_message("The old tree by the river", author=fake.other_member)
    inter = await world.context_menu("Continue this", said)
    assert world.final(inter).startswith("**The old tree by the river**")
    kept = await kept_for(world, inter.original)
    assert kept.made_by == "menu" and kept.prompt is None  # someone else's words are never kept


async def test_an_admin_sets_the_channels_persona_and_help_shows_it(world: BotUnderTest):
    fake = world.fake
    refused = await world.run("channel", {"persona": "novel"})
    assert "admins" in world.private_answer(refused).lower() or "manage server" in world.private_answer(refused).lower()
    done = await world.run("channel", {"persona": "novel"}, user=fake.admin)
    assert "I speak as **novel**" in world.public_answer(done)
    reply = await world.ask("Anna looked at him")
    assert (await kept_for(world, reply)).corpus == "novel"
    assert "I speak as **novel**" in world.private_answer(await world.run("help"))


async def test_mentions_can_be_turned_off_and_chiming_in_is_off_until_an_admin_opens_it(world: BotUnderTest):
    fake = world.fake
    await fake.post_message("just chatting here")
    assert await quiet(world) == []
    await world.run("channel", {"mentions": False}, user=fake.admin)
    await mention(world, "hello?")
    assert len(await quiet(world)) == 1  # only the /channel answer
    await world.run("channel", {"mentions": True, "chime": 50, "chime_every": 1}, user=fake.admin)
    cog = world.bot.get_cog("Conversation")
    cog.chimes.last.clear()
    import bot.discord_app.cogs.conversation as module

    rolls = iter([0.9, 0.1])  # the first roll misses 50%, the second joins in
    original = module.random.random
    module.random.random = lambda: next(rolls)
    try:
        before = len(fake.bot_messages())
        missed = await fake.post_message("the weather is nice")
        assert len(await quiet(world)) == before and fake.bot_reply_to(missed) is None
        hit = await fake.post_message("the weather is nice today")
        chimed = await fake.wait_settled(await fake.wait_for_reply(hit))
        assert (await kept_for(world, chimed)).made_by == "chime"
        third = await fake.post_message("another ordinary message")  # within the minute: never twice
        await quiet(world)
        assert fake.bot_reply_to(third) is None
    finally:
        module.random.random = original


async def test_bots_webhooks_and_itself_never_get_an_answer_so_two_bots_cannot_loop(tmp_path: Path):
    async with bot_on_fake(tmp_path, fake_options={"echo_bot_messages": True}) as world:
        fake = world.fake
        other_bot = fake.other_bot
        me = fake.mention(fake.bot_user)
        await fake.post_message(f"{me} ping", author=other_bot)
        await fake.post_message(f"{me} from a hook", webhook_name="hook")
        assert await quiet(world) == []
        reply = await world.ask("one tale please")  # its own reply reaches it too (echo) and is ignored
        await quiet(world)
        assert fake.bot_messages() == [fake.find_message(reply["id"])] or len(fake.bot_messages()) == 1
        forged = await fake.post_message("not for you", reply_to=await fake.post_message("hi", author=other_bot))
        await quiet(world, 0.5)
        assert fake.bot_reply_to(forged) is None


async def test_hostile_messages_get_a_clear_answer_or_silence_and_never_a_ping(world: BotUnderTest):
    fake = world.fake
    only = await mention(world, "")
    refusal = await fake.wait_for_reply(only)
    assert refusal["content"] == NOTHING_TO_CONTINUE.format(me=fake.bot_user.username)
    never_pings(refusal)
    huge = await world.ask("word " * 2000 + "the end")  # 10,000 characters: the end is what is continued
    assert "the end" in huge["content"] and len(huge["content"]) <= 2000
    pings = await world.ask("@everyone <@&123> \u202etxet\u200b <@42> hello")
    never_pings(pings)
    assert "@everyone" not in pings["content"].replace("@\u200beveryone", "") and "<@&123>" not in pings["content"]


async def test_a_direct_message_is_answered_in_the_dm(world: BotUnderTest):
    fake = world.fake
    sent = await fake.post_dm("Once upon a time")
    reply = await fake.wait_settled(await fake.wait_for_reply(sent))
    assert reply["channel_id"] == fake.dm_channel(fake.member)
    assert reply["content"].startswith("**Once upon a time**")


async def test_cooldowns_are_shared_between_slash_commands_and_mentions(tmp_path: Path):
    async with bot_on_fake(tmp_path, env={"CHARBOT_COOLDOWN": "60"}) as world:
        await world.run("tale", {"prompt": "A fox"})
        sent = await mention(world, "and another")
        refusal = await world.fake.wait_for_reply(sent)
        assert "Slow down" in refusal["content"]


async def test_the_cli_prints_what_the_bot_posts_for_a_mention_and_a_continue(tmp_path: Path, capsys, monkeypatch):
    """Same words, same persona, same seed: the same messages in Discord and in ``charbot chat``."""
    import bot.core.conversation as core

    seeds = iter([3, 4])
    made, pressed = core.message_request, core.press_request
    monkeypatch.setattr(core, "message_request", lambda *a, **kw: made(*a, **{**kw, "seed": next(seeds)}))
    monkeypatch.setattr(core, "press_request", lambda row, action, presser, limits, seed, *a, **kw: pressed(
        row, action, presser, limits, next(seeds), *a, **kw))
    async with bot_on_fake(tmp_path / "bot", env={"CHARBOT_PRECISION": "fp32"}) as world:
        reply = await world.ask("Once upon a time")
        before = len(world.fake.bot_messages())
        await world.press(reply, CONTINUE)
        await world.fake.wait_until(lambda: len(world.fake.bot_messages()) > before, what="the continuation")
        follow = await world.fake.wait_settled(world.fake.bot_messages()[-1])
        folder = str(next(iter(world.checkpoints.values())).parent)
    monkeypatch.setattr(core, "message_request", made)
    monkeypatch.setattr(core, "press_request", pressed)
    from bot.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("@bot Once upon a time --seed 3\n/continue --seed 4\n"))
    argv = ["chat", "--checkpoints", folder, "--db", str(tmp_path / "cli.db"), "--precision", "fp32"]
    assert await asyncio.to_thread(main, argv) == 0  # the CLI runs its own event loop
    printed = capsys.readouterr().out
    assert printed == reply["content"] + "\n" + follow["content"] + "\n"
