"""/contribute (modal), /forget and /optout end to end, checked against what the database then holds."""

from __future__ import annotations

import pytest

from bot.bench.fake_discord import CALLBACK_MODAL, DiscordClientRefused, FakeInteraction
from tests.bot.e2e_bot import BotUnderTest


async def open_modal(world: BotUnderTest, corpus: str = "tale", **kwargs: object) -> FakeInteraction:
    opened = await world.run("contribute", {"corpus": corpus}, **kwargs)  # type: ignore[arg-type]
    assert [c.json["type"] for c in opened.callbacks] == [CALLBACK_MODAL]
    assert opened.callbacks[0].status == 200
    return opened


async def test_contribute_opens_a_modal_and_stores_exactly_what_was_submitted(world: BotUnderTest) -> None:
    opened = await open_modal(world, "faq")
    modal = opened.callbacks[0].json["data"]
    assert modal["title"] == "Teach the faq model"
    text = "Q: Can I bring my dragon 🐉 to class?\nA: Only @everyone's favourite <@123>, Ünïcödé and all."
    answer = world.private_answer(await world.submit(opened, [text]))
    assert "Thank you" in answer and "faq" in answer
    stored = await world.store.contributions(world.guild)
    assert [(c.text, c.corpus, c.user_id, c.source) for c in stored] == [
        (text, "faq", int(world.fake.member.id), "modal")
    ]


async def test_the_longest_text_the_box_takes_is_stored_and_longer_is_stopped_by_discord(
    world: BotUnderTest,
) -> None:
    longest = ("All work and no play. " * 200)[:4000]
    await world.submit(await open_modal(world), [longest])
    assert [c.text for c in await world.store.contributions(world.guild)] == [longest]
    with pytest.raises(DiscordClientRefused):
        await world.fake.submit_modal(await open_modal(world), ["x" * 4001])
    with pytest.raises(DiscordClientRefused):
        await world.fake.submit_modal(await open_modal(world), [""])


@pytest.mark.parametrize("text, reason", [("   \n  ", "no text"), ("🐉🐉 ✨", "plain letters")])
async def test_texts_with_nothing_to_learn_are_refused_privately_and_not_stored(
    world: BotUnderTest, text: str, reason: str
) -> None:
    answer = world.private_answer(await world.submit(await open_modal(world), [text]))
    assert reason in answer
    assert await world.store.contributions(world.guild) == []


async def test_only_registered_corpora_can_be_chosen(world: BotUnderTest) -> None:
    with pytest.raises(DiscordClientRefused):
        await world.fake.slash("contribute", {"corpus": "poetry"})


async def test_forget_deletes_only_the_callers_contributions(world: BotUnderTest) -> None:
    await world.submit(await open_modal(world), ["mine, one"])
    await world.submit(await open_modal(world, "novel"), ["mine, two"])
    await world.submit(await open_modal(world, user=world.fake.other_member), ["theirs"])

    answer = world.private_answer(await world.run("forget"))
    assert "Deleted 2 contributions" in answer
    assert [c.text for c in await world.store.contributions(world.guild)] == ["theirs"]
    answer = world.private_answer(await world.run("forget"))
    assert "nothing to delete" in answer


async def test_optout_and_undo_are_remembered(world: BotUnderTest) -> None:
    bob = int(world.fake.member.id)
    answer = world.private_answer(await world.run("optout"))
    assert "won't store your messages" in answer
    assert await world.store.is_opted_out(world.guild, bob)
    assert "already opted out" in world.private_answer(await world.run("optout"))
    answer = world.private_answer(await world.run("optout", {"undo": True}))
    assert "opted back in" in answer
    assert not await world.store.is_opted_out(world.guild, bob)


async def test_a_form_submitted_after_the_bot_forgot_it_is_still_saved(world: BotUnderTest) -> None:
    opened = await open_modal(world, "novel")
    cog = world.bot.get_cog("Contributions")
    for form in list(cog.forms.values()):  # what a restart (or the form's 15-minute timeout) does
        form.stop()
    cog.forms.clear()
    answer = world.private_answer(await world.submit(opened, ["Typed before the restart, sent after it."]))
    assert "Thank you" in answer and "novel" in answer
    assert [(c.text, c.corpus) for c in await world.store.contributions(world.guild)] == [
        ("Typed before the restart, sent after it.", "novel")
    ]
