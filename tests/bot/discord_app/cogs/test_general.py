"""/temp, /model and /help end to end."""

from __future__ import annotations

import hashlib

from tests.bot.e2e_bot import BotUnderTest


async def test_temp_shows_sets_refuses_and_resets_privately(world: BotUnderTest) -> None:
    guild, bob = world.guild, int(world.fake.member.id)
    answer = world.private_answer(await world.run("temp"))
    assert "no default temperature" in answer

    answer = world.private_answer(await world.run("temp", {"value": 1.2}))
    assert "now 1.2" in answer
    assert await world.store.get_temperature(guild, bob) == 1.2
    assert "is 1.2" in world.private_answer(await world.run("temp"))

    for bad in (2.01, -1, 1e9):
        answer = world.private_answer(await world.run("temp", {"value": bad}))
        assert "from 0 to 2" in answer
    assert await world.store.get_temperature(guild, bob) == 1.2, "a refused value must not replace the old one"

    answer = world.private_answer(await world.run("temp", {"reset": True}))
    assert "cleared" in answer
    assert await world.store.get_temperature(guild, bob) is None


async def test_temp_is_per_person(world: BotUnderTest) -> None:
    await world.run("temp", {"value": 0.3})
    answer = world.private_answer(await world.run("temp", user=world.fake.other_member))
    assert "no default temperature" in answer


async def test_model_names_each_checkpoint_version_quality_and_size(world: BotUnderTest) -> None:
    answer = world.private_answer(await world.run("model"))
    lines = answer.splitlines()
    assert len(lines) == 3
    for line, (corpus, path) in zip(lines, world.checkpoints.items(), strict=True):
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert line.startswith(f"**{corpus}**")
        assert version in line
        assert "bits/char" in line and "on cpu in " in line
        assert line.endswith(world.bot.models.engines[corpus].precision)  # what the engine computes in
    assert "3.250 bits/char" in lines[0]


async def test_help_lists_the_commands(world: BotUnderTest) -> None:
    answer = world.private_answer(await world.run("help"))
    for command in ("/tale", "/faq", "/novel", "/temp", "/model", "/contribute", "/forget", "/optout", "/listen"):
        assert command in answer
