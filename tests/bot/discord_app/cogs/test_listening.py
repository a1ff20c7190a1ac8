"""/listen, /unlisten and the messages a listening channel keeps, end to end."""

from __future__ import annotations

from pathlib import Path

from bot.bench.fake_discord import MANAGE_GUILD
from tests.bot.e2e_bot import BotUnderTest, bot_on_fake
from tests.helpers import eventually

ADMIN_ONLY = "Only server admins"


async def stored_texts(world: BotUnderTest) -> list[str]:
    return [c.text for c in await world.store.contributions(world.guild)]


async def test_listen_and_unlisten_are_registered_for_admins_and_refused_to_others(world: BotUnderTest) -> None:
    for name in ("listen", "unlisten"):
        assert world.fake._find_command(name)["default_member_permissions"] == str(MANAGE_GUILD)
    stories = world.channel("stories")

    # Discord hides the commands from members, but a server can override that: the bot checks for itself.
    refused = await world.run("listen", {"corpus": "tale"}, channel="stories")
    assert ADMIN_ONLY in world.private_answer(refused)
    assert await world.store.listening_corpus(world.guild, stories) is None

    done = await world.run("listen", {"corpus": "tale"}, channel="stories", user=world.fake.admin)
    assert "stored for **tale**" in world.public_answer(done)
    assert await world.store.listening_corpus(world.guild, stories) == "tale"

    refused = await world.run("unlisten", channel="stories")
    assert ADMIN_ONLY in world.private_answer(refused)
    assert await world.store.listening_corpus(world.guild, stories) == "tale"

    done = await world.run("unlisten", channel="stories", user=world.fake.admin)
    assert "Stopped collecting" in world.public_answer(done)
    assert await world.store.listening_corpus(world.guild, stories) is None


async def test_listening_again_switches_the_corpus(world: BotUnderTest) -> None:
    await world.run("listen", {"corpus": "tale"}, channel="stories", user=world.fake.admin)
    switched = await world.run("listen", {"corpus": "novel"}, channel="stories", user=world.fake.admin)
    assert "instead of tale" in world.public_answer(switched)


async def test_configured_admins_may_listen_without_manage_server(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path, env=lambda fake: {"CHARBOT_ADMINS": fake.other_member.id}) as world:
        done = await world.run("listen", {"corpus": "faq"}, user=world.fake.other_member)
        assert "stored for **faq**" in world.public_answer(done)
        refused = await world.run("unlisten", user=world.fake.member)
        assert ADMIN_ONLY in world.private_answer(refused)


async def test_people_s_messages_in_a_listening_channel_are_kept_and_nothing_else(world: BotUnderTest) -> None:
    fake = world.fake
    await world.run("listen", {"corpus": "tale"}, channel="stories", user=fake.admin)
    await world.run("optout", user=fake.other_member)

    await fake.post_message("Once upon a time there was a frog.", channel="stories")
    await eventually(lambda: stored_texts(world), what="the first message to be stored")

    await fake.post_message("the bot's own words", channel="stories", author=fake.bot_user)
    await fake.post_message("another bot's words", channel="stories", author=fake.other_bot)
    await fake.post_message("I opted out, leave me be", channel="stories", author=fake.other_member)
    await fake.post_message("!roll d20", channel="stories")
    await fake.post_message("/tale not a real command", channel="stories")
    await fake.post_message("   ", channel="stories")
    await fake.post_message("said somewhere nobody listens", channel="general")
    await fake.post_message("@everyone meet <@123> 🐉 Ünïcödé", channel="stories", author=fake.admin)

    async def two_stored() -> list[str]:
        texts = await stored_texts(world)
        return texts if len(texts) >= 2 else []

    # Messages are handled in order, so once the last one is stored every earlier one has been decided.
    texts = await eventually(two_stored, what="the last message to be stored")
    assert texts == ["Once upon a time there was a frog.", "@everyone meet <@123> 🐉 Ünïcödé"]
    stored = await world.store.contributions(world.guild)
    assert {(c.corpus, c.source, c.channel_id) for c in stored} == {("tale", "listen", world.channel("stories"))}
    assert [c.user_id for c in stored] == [int(fake.member.id), int(fake.admin.id)]
    posted = [r for r in fake.requests if r.route == "POST /channels/{channel_id}/messages"]
    assert posted == [], "listening must be silent: the bot never answers or echoes a stored message"


async def test_after_unlisten_messages_are_no_longer_kept(world: BotUnderTest) -> None:
    fake = world.fake
    await world.run("listen", {"corpus": "novel"}, channel="stories", user=fake.admin)
    await fake.post_message("kept", channel="stories")
    await eventually(lambda: stored_texts(world), what="the message to be stored")
    await world.run("unlisten", channel="stories", user=fake.admin)
    await fake.post_message("not kept", channel="stories")
    await world.run("listen", {"corpus": "novel"}, channel="general", user=fake.admin)
    await fake.post_message("kept in general", channel="general")

    async def two_stored() -> list[str]:
        texts = await stored_texts(world)
        return texts if len(texts) >= 2 else []

    assert await eventually(two_stored, what="the message in general to be stored") == ["kept", "kept in general"]
