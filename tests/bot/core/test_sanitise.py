"""The one sanitiser: what may be stored and what may be posted, and what the bot really posts end to end."""

from __future__ import annotations

import pytest

from bot.core.sanitise import BIDI_CONTROLS, ZWSP, clean_text, defuse_links, neutralize_mentions, public_text, quote
from tests.bot.e2e_bot import BotUnderTest

HOSTILE_PROMPT = (
    "Once \u202eupon\x00 a \udcff time [click here](https://example.com) see https://evil.example/x "
    "and <https://a.example> @everyone <@123>\x1b[31m\u2066isolated"
)


def test_controls_surrogates_and_bidi_are_left_out_and_counted():
    text, dropped = clean_text("a\x00b\x07c\u202ed\u2066e\u2069f\udcffg\tkeep\nlines\r\nand\rends")
    assert text == "abcdefg\tkeep\nlines\nand\nends"
    assert dropped == 6
    assert clean_text("split pair \ud83d\ude00 joined")[0] == "split pair \U0001f600 joined"


def test_what_text_needs_is_kept():
    kept = "Ünïcödé 中文 עברית \u200f marks \U0001f468\u200d\U0001f469\u200d\U0001f467 zwj families"
    assert clean_text(kept) == (kept, 0)


def test_links_are_defused_but_read_the_same():
    text = defuse_links("[click here](https://example.com) and http://x.y and ftp://z")
    assert "](" not in text and "://" not in text
    assert text.replace(ZWSP, "") == "[click here](https://example.com) and http://x.y and ftp://z"


def test_mentions_are_neutralised():
    text = neutralize_mentions("@everyone @here <@1> <@!2> <@&3> <#4> </tale:5>")
    for raw in ("@everyone", "@here", "<@1", "<@!2", "<@&3", "<#4", "</tale"):
        assert raw not in text


def test_public_text_and_quotes_carry_nothing_unsafe():
    posted = public_text(HOSTILE_PROMPT)
    assert not set(posted) & BIDI_CONTROLS and "\x00" not in posted and "\udcff" not in posted
    quoted = quote(HOSTILE_PROMPT)
    assert quoted.startswith("`") and quoted.endswith("`") and len(quoted) <= 50
    assert quote("`") != "```" and quote("\x00") == "(nothing)"


@pytest.mark.parametrize("command", ["tale", "faq", "novel"])
async def test_what_the_bot_posts_from_a_hostile_prompt_is_safe(world: BotUnderTest, command: str) -> None:
    prompt_option = "question" if command == "faq" else "prompt"
    inter = await world.run(command, {prompt_option: HOSTILE_PROMPT})
    posted = [r.message_data().get("content") or "" for r in inter.requests if r.sends_message]
    assert posted, "nothing was posted"
    for text in posted:
        assert not set(text) & BIDI_CONTROLS, "a direction override reached the channel"
        assert "\x00" not in text and "\x1b" not in text and "\udcff" not in text
        assert "](" not in text, "a masked link reached the channel"
        assert "https://" not in text, "a link from the prompt reached the channel"
        assert "@everyone" not in text and "<@123>" not in text
    assert "upon" in posted[-1] and "click here" in posted[-1]  # the words themselves are still shown
