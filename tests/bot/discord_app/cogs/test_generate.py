"""/tale, /faq and /novel end to end: what the person sees in Discord, request by request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.bench.fake_discord import CALLBACK_DEFERRED, EPHEMERAL, LOADING, DiscordClientRefused, FakeInteraction
from tests.bot.e2e_bot import BotUnderTest, bot_on_fake

WORKING = " \u2026"  # what an unfinished reply ends with while it is still being written


def edits(inter: FakeInteraction) -> list[str]:
    return [r.json["content"] for r in inter.requests if r.method == "PATCH"]


def assert_deferred_then_edited(inter: FakeInteraction) -> str:
    """The public reply pattern: a "thinking" deferral, edits that grow, a final message; returns the final text."""
    assert all(r.status == 200 for r in inter.requests), [(r.key, r.status, r.response) for r in inter.requests]
    assert [c.json["type"] for c in inter.callbacks] == [CALLBACK_DEFERRED]
    assert not (inter.callbacks[0].json.get("data") or {}).get("flags", 0) & EPHEMERAL, "a story should be public"
    texts = edits(inter)
    assert texts, "the deferred message was never filled in"
    assert all(t.endswith(WORKING) for t in texts[:-1]), "unfinished edits should show that more is coming"
    assert not texts[-1].endswith(WORKING), "the final message still says it is being written"
    assert all(len(t) <= 2000 for t in texts)
    assert inter.original is not None and inter.original["content"] == texts[-1]
    assert not inter.original["flags"] & (LOADING | EPHEMERAL)
    assert not inter.followups
    return texts[-1]


async def test_tale_defers_streams_and_finishes_with_the_prompt_set_apart(world: BotUnderTest) -> None:
    inter = await world.run("tale", {"prompt": "Once upon a time", "length": 600})
    final = assert_deferred_then_edited(inter)
    assert final.startswith("**Once upon a time**")
    assert len(final) > len("**Once upon a time**")


async def test_faq_quotes_the_question_then_answers(world: BotUnderTest) -> None:
    inter = await world.run("faq", {"question": "Is the library open?"})
    final = assert_deferred_then_edited(inter)
    assert final.startswith("> **Is the library open?**\n")


async def test_novel_continues_the_prompt(world: BotUnderTest) -> None:
    inter = await world.run("novel", {"prompt": "Happy families are all alike", "temperature": 0.5})
    final = assert_deferred_then_edited(inter)
    assert final.startswith("**Happy families are all alike**")


async def test_the_longest_prompt_full_of_markdown_and_the_longest_reply_fit_one_message(
    world: BotUnderTest,
) -> None:
    limit = world.config.limits
    prompt = ("*_~`|> # - @everyone <@123> " * 40)[: limit.max_prompt_chars]  # escaping roughly doubles it
    inter = await world.run("novel", {"prompt": prompt, "length": limit.max_length})
    final = assert_deferred_then_edited(inter)
    assert len(final) <= 2000
    assert final.startswith("**\\*\\_\\~\\`\\|")  # shown as typed, not as formatting


async def test_mentions_in_a_prompt_are_shown_but_ping_nobody(world: BotUnderTest) -> None:
    inter = await world.run("tale", {"prompt": "@everyone and @here meet <@123>, <@&456> in <#789>"})
    final = assert_deferred_then_edited(inter)
    for raw in ("@everyone", "@here", "<@123>", "<@&456>", "<#789>"):
        assert raw not in final
    for request in inter.requests[1:]:
        assert request.json["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize(
    "prompt",
    [
        "Ünïcödé façade — “quotes” and ‘more’",
        "🐉 a dragon 👨‍👩‍👧 family",
        "中文 русский ελληνικά עברית",
        "e\u0301 combining, \u200bzero width, \u202eright-to-left",
        "   spaces around   ",
    ],
)
async def test_odd_unicode_prompts_are_shown_as_typed_and_answered(world: BotUnderTest, prompt: str) -> None:
    inter = await world.run("tale", {"prompt": prompt})
    final = assert_deferred_then_edited(inter)
    first_word = prompt.split()[0]
    assert first_word in final


async def test_a_question_with_nothing_the_model_can_read_is_refused_privately(world: BotUnderTest) -> None:
    inter = await world.run("faq", {"question": "🐉🐉🐉"})
    assert "plain letters" in world.private_answer(inter)
    inter = await world.run("faq", {"question": "   "})
    assert "Ask me a question" in world.private_answer(inter)


async def test_an_emoji_only_story_prompt_still_gets_a_story(world: BotUnderTest) -> None:
    inter = await world.run("tale", {"prompt": "🐉"})
    final = assert_deferred_then_edited(inter)
    assert final.startswith("**🐉**")


async def test_empty_and_oversized_options_are_stopped_by_the_declared_limits(world: BotUnderTest) -> None:
    limit = world.config.limits
    prompt_option = next(o for o in world.fake._find_command("tale")["options"] if o["name"] == "prompt")
    assert (prompt_option["min_length"], prompt_option["max_length"]) == (1, limit.max_prompt_chars)
    with pytest.raises(DiscordClientRefused):
        await world.fake.slash("tale", {"prompt": ""})
    with pytest.raises(DiscordClientRefused):
        await world.fake.slash("tale", {"prompt": "x" * (limit.max_prompt_chars + 1)})
    with pytest.raises(DiscordClientRefused):
        await world.fake.slash("tale", {"prompt": "x", "length": limit.max_length + 1})
    with pytest.raises(DiscordClientRefused):
        await world.fake.slash("tale", {"length": 10})


@pytest.mark.parametrize("temperature", [2.5, -0.1, 1e9])
async def test_out_of_range_temperature_is_refused_privately_before_anything_public(
    world: BotUnderTest, temperature: float
) -> None:
    inter = await world.run("tale", {"prompt": "Once", "temperature": temperature})
    answer = world.private_answer(inter)
    assert "from 0 to 2" in answer


async def test_temperature_zero_gives_the_same_story_twice(world: BotUnderTest) -> None:
    first = await world.run("tale", {"prompt": "The king", "temperature": 0, "length": 200})
    second = await world.run("tale", {"prompt": "The king", "temperature": 0, "length": 200})
    assert assert_deferred_then_edited(first) == assert_deferred_then_edited(second)


async def test_a_temp_default_of_zero_applies_to_later_stories(world: BotUnderTest) -> None:
    await world.run("temp", {"value": 0})
    explicit = await world.run("tale", {"prompt": "The queen", "temperature": 0, "length": 200})
    by_default = await world.run("tale", {"prompt": "The queen", "length": 200})
    other_person = await world.run("tale", {"prompt": "The queen", "length": 200}, user=world.fake.other_member)
    assert assert_deferred_then_edited(by_default) == assert_deferred_then_edited(explicit)
    assert assert_deferred_then_edited(other_person) != assert_deferred_then_edited(explicit)


async def test_several_people_at_once_each_get_their_own_reply(world: BotUnderTest) -> None:
    people = [world.fake.member, world.fake.other_member, world.fake.admin]
    inters = await asyncio.gather(*(world.run("tale", {"prompt": f"Story for {p.username}"}, user=p) for p in people))
    for person, inter in zip(people, inters, strict=True):
        assert assert_deferred_then_edited(inter).startswith(f"**Story for {person.username}**")


async def test_asking_again_too_soon_is_refused_privately_but_others_may_ask(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path, env={"CHARBOT_COOLDOWN": "60"}) as world:
        assert_deferred_then_edited(await world.run("tale", {"prompt": "First"}))
        again = await world.run("tale", {"prompt": "Second"})
        assert "Slow down" in world.private_answer(again)
        other = await world.run("tale", {"prompt": "Mine"}, user=world.fake.other_member)
        assert assert_deferred_then_edited(other).startswith("**Mine**")
