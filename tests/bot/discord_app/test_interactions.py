"""Interactions as Discord may really send them, end to end: from direct messages, with permissions given
by Administrator alone, and with options a stale client or a crafted request can carry. Each gets one
clear private answer, never an unhandled exception or silence (the e2e world fails on any logged error).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot.bench.fake_discord import (
    ADMINISTRATOR,
    MEMBER_PERMISSIONS,
    OPT_BOOLEAN,
    OPT_INTEGER,
    OPT_NUMBER,
    OPT_STRING,
    OPT_SUB_COMMAND,
    FakeInteraction,
    FakeUser,
)
from tests.bot.e2e_bot import BotUnderTest, bot_on_fake

SERVERS_ONLY = "works in servers only"
GUILD_ONLY = [
    ("temp", {"value": 0.5}),
    ("temp", {}),
    ("contribute", {"corpus": "tale"}),
    ("forget", {}),
    ("optout", {}),
    ("listen", {"corpus": "tale"}),
    ("unlisten", {}),
    ("model", {}),
    ("tale", {"prompt": "Once upon a time"}),
    ("finetune status", {}),
    ("rollback", {"corpus": "tale"}),
]


@pytest.mark.parametrize(("command", "options"), GUILD_ONLY, ids=[c for c, _ in GUILD_ONLY])
async def test_guild_only_commands_from_a_direct_message_say_so_and_store_nothing(
    world: BotUnderTest, command: str, options: dict
) -> None:
    inter = await world.fake.slash(command, options, dm=True, user=world.fake.admin)
    answer = world.private_answer(await world.settled(inter))
    assert SERVERS_ONLY in answer
    assert await world.store.fetchall("SELECT * FROM user_settings") == []
    assert await world.store.fetchall("SELECT * FROM opt_outs") == []
    assert await world.store.fetchall("SELECT * FROM listening_channels") == []


async def test_help_works_in_a_direct_message(world: BotUnderTest) -> None:
    inter = await world.settled(await world.fake.slash("help", dm=True))
    assert "/tale" in world.private_answer(inter)


async def test_a_contribution_form_submitted_without_a_server_is_refused_and_not_stored(world: BotUnderTest) -> None:
    opened = await world.run("contribute", {"corpus": "tale"})
    submitted = await world.fake.submit_modal(opened, ["words from nowhere"], dm=True)
    assert SERVERS_ONLY in world.private_answer(await world.settled(submitted))
    assert await world.store.contributions() == []


async def test_administrator_alone_is_enough_to_listen_and_unlisten(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path) as world:
        root = FakeUser(world.fake.ids.next(), "root", permissions=ADMINISTRATOR | MEMBER_PERMISSIONS)
        assert not root.permissions & (1 << 5), "no Manage Server bit of its own"
        assert "stored for **tale**" in world.public_answer(await world.run("listen", {"corpus": "tale"}, user=root))
        assert await world.store.listening_corpus(world.guild, world.channel()) == "tale"
        assert "Stopped collecting" in world.public_answer(await world.run("unlisten", user=root))


async def command(world: BotUnderTest, name: str, options: list[dict], **kwargs: object) -> FakeInteraction:
    """Send ``/name`` with exactly these raw options and wait for the answer."""
    registered = world.fake._find_command(name)
    data = {"name": name, "options": options, **({"id": registered["id"]} if registered else {"id": "1"})}
    return await world.settled(await world.fake.command(data, **kwargs))  # type: ignore[arg-type]


HOSTILE = "@everyone <@123> [click](https://evil.example)"
MALFORMED = [
    ("temp", [{"name": "value", "type": OPT_NUMBER, "value": HOSTILE}], "**value** option must be a number"),
    ("temp", [{"name": "value", "type": OPT_NUMBER, "value": math.inf}], "**value** option must be a number"),
    ("temp", [{"name": "value", "type": OPT_NUMBER, "value": True}], "**value** option must be a number"),
    ("temp", [{"name": "reset", "type": OPT_BOOLEAN, "value": HOSTILE}], "**reset** option must be true or false"),
    ("tale", [{"name": "prompt", "type": OPT_STRING, "value": 12345}], "**prompt** option must be text"),
    ("tale", [{"name": "length", "type": OPT_INTEGER, "value": 10}], "**prompt** option is required"),
    ("tale", [{"name": "prompt", "type": OPT_STRING, "value": "x"},
              {"name": "length", "type": OPT_INTEGER, "value": 10**9}], "**length** option must be from 1 to"),
    ("tale", [{"name": "prompt", "type": OPT_STRING, "value": "x"},
              {"name": "length", "type": OPT_INTEGER, "value": HOSTILE}], "**length** option must be a whole number"),
    ("tale", [{"name": "prompt", "type": OPT_STRING, "value": "x" * 5000}], "**prompt** option must be from 1 to"),
    ("contribute", [{"name": "corpus", "type": OPT_STRING, "value": HOSTILE}], "**corpus** option must be one of"),
    ("contribute", [], "**corpus** option is required"),
    ("forget", [{"name": "everything", "type": OPT_BOOLEAN, "value": True}], "older version of this command"),
    ("finetune", [{"name": "bogus", "type": OPT_SUB_COMMAND, "options": []}], "older version of this command"),
    ("no-such-command", [], "older version of this command"),
]


@pytest.mark.parametrize(
    ("name", "options", "expected"), MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)]
)
async def test_malformed_options_get_one_clear_private_answer_that_never_echoes_them(
    world: BotUnderTest, name: str, options: list[dict], expected: str
) -> None:
    inter = await command(world, name, options, user=world.fake.admin)
    answer = world.private_answer(inter)
    assert expected in answer
    for echoed in ("@everyone", "<@123>", "https://", "12345"):
        assert echoed not in answer
    assert await world.store.fetchall("SELECT * FROM user_settings") == []
    assert await world.store.contributions() == []


async def test_a_refusal_quoting_a_value_shows_it_harmlessly(world: BotUnderTest) -> None:
    from bot.core.answers import check_corpus
    from bot.core.refusals import Refusal

    with pytest.raises(Refusal) as refused:
        check_corpus("@everyone <@123> [x](https://evil.example)\u202e")
    message = refused.value.message
    for raw in ("@everyone", "<@123>", "https://", "](", "\u202e"):
        assert raw not in message
