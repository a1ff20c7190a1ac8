"""When the bot answers outside slash commands, and what it continues."""

from __future__ import annotations

import pytest

from bot.config import Limits
from bot.core import conversation as conv
from bot.core.conversation import ChimeClock, Link
from bot.core.heard import Heard
from bot.core.refusals import Refusal
from bot.core.render import render_reply
from bot.core.replies import ReplyUpdate
from bot.store.conversation import ChannelSettings, PostedReply
from model.sample import Finish, Generation

ME = 555
LIMITS = Limits(cooldown_s=0.0)
PERSON = Heard(guild_id=1, channel_id=2, author_id=3, content="hello there")
ON = ChannelSettings()
CHIMING = ChannelSettings(chime_chance=0.5)


def never() -> bool:
    raise AssertionError("the dice were rolled for a message the bot must not answer")


@pytest.mark.parametrize("heard,trigger", [
    (PERSON, None),
    (Heard(1, 2, 3, "<@555> once upon a time", mentions_me=True), "mention"),
    (Heard(1, 2, 3, "and then?", replies_to_me=True), "reply"),
    (Heard(None, 2, 3, "a fox"), "mention"),  # a direct message is addressed to the bot
    (Heard(1, 2, ME, "<@555> me", mentions_me=True), None),  # never itself
    (Heard(1, 2, 3, "<@555> hi", author_is_bot=True, mentions_me=True), None),  # never a bot: no ping-pong
    (Heard(1, 2, 3, "<@555> hi", is_webhook=True, mentions_me=True, replies_to_me=True), None),
    (Heard(1, 2, 3, "pinned", is_system=True, mentions_me=True), None),
])
def test_who_gets_an_answer(heard, trigger):
    assert conv.trigger_for(heard, ME, ON, never) == trigger


def test_an_admin_can_turn_mentions_off_in_a_channel():
    off = ChannelSettings(mentions=False)
    assert conv.trigger_for(Heard(1, 2, 3, "<@555> hi", mentions_me=True), ME, off, never) is None
    assert conv.trigger_for(Heard(1, 2, 3, "more", replies_to_me=True), ME, off, never) is None


def test_chiming_in_rolls_only_for_ordinary_words_in_a_chime_channel():
    assert conv.trigger_for(PERSON, ME, CHIMING, lambda: True) == "chime"
    assert conv.trigger_for(PERSON, ME, CHIMING, lambda: False) is None
    assert conv.trigger_for(Heard(1, 2, 3, "<@&1> <:cat:2>"), ME, CHIMING, never) is None  # no words
    assert conv.trigger_for(PERSON, ME, ON, never) is None  # off by default


def test_the_chime_clock_keeps_the_interval_per_channel():
    clock = ChimeClock()
    assert clock.ready(2, 60, now=0)
    clock.chimed(2, now=0)
    assert not clock.ready(2, 60, now=59) and clock.ready(2, 60, now=60) and clock.ready(3, 60, now=1)


def test_words_drop_discord_markup_and_hostile_characters_and_keep_the_end():
    text = "<@555> <@!555> once\u200b upon\u202e a <@&9> <#7> <:fox:12> time @everyone"
    assert conv.words_of(text, ME) == "once upon a time @everyone"  # @everyone is defused when rendered
    long = "word " * 3000
    kept = conv.words_of(long, ME, limit=500)
    assert len(kept) <= 500 and kept.startswith("word") and kept.endswith("word")
    assert conv.words_of("<@555>", ME) == ""


def test_plain_undoes_what_render_adds():
    posted = render_reply("tale", "Once upon a *time*", " there was a fox_ who ran.", Finish.SENTENCE)
    assert conv.plain(posted) == "Once upon a *time* there was a fox_ who ran."
    grounded = render_reply("faq", "Masks?", "Wear one indoors.", Finish.SENTENCE, source="Face coverings...")
    assert conv.plain(grounded) == "Masks?\nWear one indoors."


async def test_a_chain_is_walked_back_oldest_first_and_bounded():
    messages = {i: Link(f"message {i}", i - 1 if i > 1 else None) for i in range(1, 10)}

    async def fetch(i: int) -> Link | None:
        return messages.get(i)

    assert await conv.chain_context(3, fetch, 6, 600) == "message 1\n\nmessage 2\n\nmessage 3"
    assert await conv.chain_context(9, fetch, 2, 600) == "message 8\n\nmessage 9"
    bounded = await conv.chain_context(9, fetch, 9, 25)
    assert len(bounded) <= 25 and bounded.endswith("message 9")


async def test_a_deleted_message_or_a_forged_loop_ends_the_chain():
    async def gone(i: int) -> Link | None:
        return {3: Link("latest", 2)}.get(i)

    assert await conv.chain_context(3, gone, 6, 600) == "latest"
    calls = []

    async def loop(i: int) -> Link | None:
        calls.append(i)
        return Link(f"m{i}", 2 if i == 1 else 1)  # 1 -> 2 -> 1 -> ...

    assert await conv.chain_context(1, loop, 50, 600) == "m2\n\nm1" and calls == [1, 2]


def test_a_mention_becomes_a_request_from_the_channels_persona():
    heard = Heard(1, 2, 3, "<@555> Once upon a time", mentions_me=True)
    request = conv.message_request("mention", heard, ME, "charbot", "novel", LIMITS)
    assert (request.corpus, request.prompt, request.user, request.channel, request.trigger) == (
        "novel", "Once upon a time", 3, 2, "mention")
    with pytest.raises(Refusal, match="Mention me with some words"):
        conv.message_request("mention", Heard(1, 2, 3, "<@555>", mentions_me=True), ME, "charbot", "tale", LIMITS)
    chained = conv.message_request("reply", Heard(1, 2, 3, ""), ME, "charbot", "faq", LIMITS, context="Earlier.")
    assert chained.context == "Earlier." and chained.prompt == ""  # a faq reply may carry on without a question


def test_buttons_carry_an_action_and_nothing_else():
    assert conv.button_action(conv.custom_id("continue")) == "continue"
    for forged in ["charbot:delete", "charbot:another:999", "other:continue", "", None, 5]:
        with pytest.raises(Refusal, match="isn't one of mine"):
            conv.button_action(forged)


ROW = PostedReply(message_id=1, guild_id=1, channel_id=2, asker_id=3, corpus="tale", made_by="mention",
                  prompt="A fox", context="", tail="ran away.", seed=1, created="2026-12-03T00:00:00Z")


def test_presses_anyone_may_continue_only_the_asker_gets_another_and_both_expire():
    assert conv.check_press(ROW, "continue", 42, LIMITS, age_s=10) is ROW
    assert conv.check_press(ROW, "another", 3, LIMITS, age_s=10) is ROW
    with pytest.raises(Refusal, match="Only the person who asked") as err:
        conv.check_press(ROW, "another", 42, LIMITS, age_s=10)
    assert err.value.kind == "not_allowed"
    for row, age in [(ROW, 25 * 3600), (None, 0)]:
        with pytest.raises(Refusal, match="expired"):
            conv.check_press(row, "continue", 3, LIMITS, age_s=age)
    from dataclasses import replace
    with pytest.raises(Refusal, match="don't keep the words"):
        conv.check_press(replace(ROW, prompt=None), "another", 3, LIMITS, age_s=10)


def test_continue_carries_on_from_the_tail_and_another_repeats_the_words_with_a_new_seed():
    go_on = conv.press_request(ROW, "continue", 42, LIMITS, seed=9)
    assert (go_on.prompt, go_on.context, go_on.user, go_on.trigger, go_on.seed) == ("", "ran away.", 42, "button", 9)
    again = conv.press_request(ROW, "another", 3, LIMITS, seed=10)
    assert (again.prompt, again.context, again.seed) == ("A fox", "", 10)


def test_what_is_kept_of_a_posted_reply():
    request = conv.message_request("mention", Heard(1, 2, 3, "<@555> A fox", mentions_me=True), ME, "c", "tale",
                                   LIMITS)
    update = ReplyUpdate("**A fox** ran.", True, Generation("A fox", " ran." * 400, Finish.SENTENCE, 4), seed=4)
    kept = conv.posted_reply(77, 1, request, update, keep_words=True, limits=LIMITS)
    assert (kept.prompt, kept.asker_id, kept.seed, kept.made_by) == ("A fox", 3, 4, "mention")
    assert len(kept.tail) <= LIMITS.chain_chars and kept.tail.endswith("ran.")
    assert conv.posted_reply(77, 1, request, update, keep_words=False, limits=LIMITS).prompt is None


def test_who_speaks_the_reply_answered_then_the_channel_then_the_first_served():
    served = ["tale", "faq", "novel"]
    assert conv.persona_for(ChannelSettings(), served) == "tale"
    assert conv.persona_for(ChannelSettings(persona="novel"), served) == "novel"
    assert conv.persona_for(ChannelSettings(persona="novel"), served, ROW) == "tale"  # the chain keeps its voice
    assert conv.persona_for(ChannelSettings(persona="gone"), served) == "tale"  # no longer served


@pytest.fixture
def personas():
    """Two servers' personas registered in this process, dropped afterwards."""
    from corpora.voices import add_persona, drop_persona, persona_corpus

    made = [persona_corpus(1, "rules", "faq"), persona_corpus(1, "bard", "story"), persona_corpus(2, "rules", "faq")]
    for corpus in made:
        add_persona(corpus)
    yield [c.name for c in made]
    for corpus in made:
        drop_persona(corpus.name)


def test_who_may_speak_in_a_server_is_the_corpora_and_its_own_personas_only(personas):
    loaded = ["tale", "faq", "novel", "g2-rules"]  # another server's persona may be loaded in the process
    assert conv.speakers(1, loaded) == ["tale", "faq", "novel", "g1-bard", "g1-rules"]
    assert conv.speakers(2, loaded) == ["tale", "faq", "novel", "g2-rules"]
    assert conv.speakers(None, loaded) == ["tale", "faq", "novel"]  # a DM: no server, no personas
    served = conv.speakers(1, loaded)
    assert conv.voice_named("novel", 1, served) == "novel"
    assert conv.voice_named(" Novel", 1, served) == "novel"
    assert conv.voice_named("Rules", 1, served) == "g1-rules"
    assert conv.voice_named("g1-rules", 1, served) == "g1-rules"
    for name in ("g2-rules", "nosuch", "", "x" * 200):  # another server's key is not this server's
        assert conv.voice_named(name, 1, served) is None
    assert conv.voice_named("rules", None, conv.speakers(None, loaded)) is None
    assert conv.persona_for(ChannelSettings(persona="g1-rules"), served) == "g1-rules"
    assert conv.persona_for(ChannelSettings(persona="g2-rules"), served) == "tale"


def test_a_persona_answers_messages_and_presses_from_its_own_server_only(personas):
    mine = Heard(1, 2, 3, "<@555> How do I join?", mentions_me=True)
    assert conv.message_request("mention", mine, ME, "c", "g1-rules", LIMITS).corpus == "g1-rules"
    for heard in (Heard(2, 2, 3, "<@555> How do I join?", mentions_me=True), Heard(None, 2, 3, "How do I join?")):
        with pytest.raises(Refusal, match="I don't know the corpus or persona `rules`"):
            conv.message_request("mention", heard, ME, "c", "g1-rules", LIMITS)
    from dataclasses import replace
    row = replace(ROW, corpus="g1-rules", prompt="How do I join?")
    assert conv.press_request(row, "another", 3, LIMITS, seed=1).corpus == "g1-rules"  # the reply's own server
    assert conv.press_request(row, "continue", 3, LIMITS, seed=1, guild=1).corpus == "g1-rules"
    with pytest.raises(Refusal, match="I don't know the corpus or persona"):
        conv.press_request(row, "continue", 3, LIMITS, seed=1, guild=2)  # a press sent from another server


def test_a_channel_names_its_persona_by_its_name(personas):
    text = conv.describe_channel(ChannelSettings(persona="g1-rules"), "g1-rules")
    assert text.startswith("In this channel I speak as **rules** and") and "g1" not in text
