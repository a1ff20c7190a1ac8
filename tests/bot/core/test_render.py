"""How replies look: the user's words set apart, markdown and mentions made harmless, never over 2000."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.render import (
    CUT_SHORT,
    ZWSP,
    escape_markdown,
    prime_continues,
    render_reply,
)
from bot.core.sanitise import clean_text, neutralize_mentions
from bot.discord_limits import MESSAGE_CHARS
from corpora.registry import CORPORA


def test_continued_words_are_bold_and_the_story_is_glued_to_them():
    assert render_reply("tale", "Once upon a time", " there was a king.", "stop") == \
        "**Once upon a time** there was a king."


def test_a_title_or_fresh_start_puts_the_story_on_the_next_line():
    text = render_reply("tale", "the brave tin soldier", "\n\nThere were once five and twenty.", "stop",
                        continues=False)
    assert text == "**the brave tin soldier**\nThere were once five and twenty."


def test_faq_quotes_the_question_then_answers():
    assert render_reply("faq", "  Do I need a mask? ", "Yes, indoors.\n", "stop", continues=False) == \
        "> **Do I need a mask?**\nYes, indoors."


def test_no_prompt_means_just_the_story():
    assert render_reply("tale", "   ", "\n\nTHE FIR TREE\n\nFar down", "stop", continues=False) == \
        "THE FIR TREE\n\nFar down"


def test_finish_is_visible_to_the_reader():
    assert render_reply("novel", "Anna", " smiled", None).endswith(" smiled \u2026")  # still writing
    assert render_reply("novel", "Anna", " smiled and", "length").endswith(" smiled and\u2026")  # cut at length
    assert render_reply("novel", "Anna", " smiled.", "stop").endswith(" smiled.")  # ended on its own
    assert render_reply("novel", "Anna", " smiled", "cancelled").endswith(" smiled" + CUT_SHORT)


def test_an_empty_generation_still_says_something():
    text = render_reply("faq", "Question", "", "stop", continues=False)
    assert text.startswith("> **Question**\n") and "no words came" in text


def test_markdown_in_the_prompt_and_the_story_shows_as_typed():
    text = render_reply("tale", "a **bold** _claim_", " with `code` and ~~strike~~ ||spoiler||", "stop")
    assert text == r"**a \*\*bold\*\* \_claim\_** with \`code\` and \~\~strike\~\~ \|\|spoiler\|\|"


def test_block_markup_is_escaped_only_at_line_starts():
    assert escape_markdown("# title\n- item\n> quote\n1. one\na - b # c") == \
        "\\# title\n\\- item\n\\> quote\n1\\. one\na - b # c"
    paragraph = render_reply("novel", "He said", "\n\n# not a heading", "stop")
    assert paragraph == "**He said**\n\n\\# not a heading"
    assert render_reply("novel", "x", "# glued on", "stop") == "**x**# glued on"


def test_mentions_in_prompt_and_story_cannot_ping():
    text = render_reply("tale", "hey @everyone", " and @here, <@123456789012345678> <@!1234> <@&987654> <#555>", "stop")
    assert "@everyone" not in text and "@here" not in text
    for raw in ("<@1", "<@!1", "<@&9", "<#5"):
        assert raw not in text
    assert f"@{ZWSP}everyone" in text and f"<@{ZWSP}123456789012345678>" in text
    assert neutralize_mentions("mail me at a@b.c") == "mail me at a@b.c"


def test_prime_continues_only_when_the_model_continues_the_words():
    assert prime_continues("Once upon a time")
    assert not prime_continues("THE FIR TREE\n\n")
    assert not prime_continues("")
    assert not prime_continues("Do I need a mask\n")


@settings(max_examples=200, deadline=None)
@given(
    corpus=st.sampled_from(["tale", "faq", "novel"]),
    prompt=st.text(min_size=0, max_size=1000),
    continuation=st.text(min_size=0, max_size=3000),
    finish=st.sampled_from([None, "stop", "length", "cancelled"]),
    continues=st.booleans(),
)
def test_never_over_discords_limit_and_the_prompt_is_always_shown(corpus, prompt, continuation, finish, continues):
    text = render_reply(corpus, prompt, continuation, finish, continues=continues)
    assert len(text) <= MESSAGE_CHARS
    assert text.strip()
    shown = clean_text(prompt)[0]  # controls, bidi overrides and lone surrogates are never posted
    if shown.strip() and len(shown) < 50 and not set(shown) & set("\\*_~`|>#-@<\n:]"):
        assert shown.strip() in text


def test_worst_case_markup_is_cut_to_fit():
    text = render_reply("tale", "*" * 1000, "@everyone " * 400, "stop")
    assert len(text) <= MESSAGE_CHARS
    assert text.endswith("\u2026")


def test_an_unfinished_reply_that_already_overflows_still_says_more_is_coming() -> None:
    from bot.core.render import WORKING

    text = render_reply("novel", "Anna looked at him", "and she smiled. " * 300, finish=None)
    assert len(text) <= 2000
    assert text.endswith(WORKING)


def test_the_layout_is_the_one_the_corpus_carries(monkeypatch):
    """No table of corpus names here: a corpus registered with the question style is laid out as one."""
    monkeypatch.setitem(CORPORA, "quiz", replace(CORPORA["tale"], name="quiz", style=CORPORA["faq"].style))
    quiz = render_reply("quiz", "  Why? ", "Because.", None, continues=False)
    assert quiz == render_reply("faq", "  Why? ", "Because.", None, continues=False)
    assert quiz.startswith("> **Why?**\n")
    assert quiz != render_reply("tale", "  Why? ", "Because.", None, continues=False)


# ---- layout, clean endings and the quoted source ----------------------------------------------


def test_a_continuation_follows_the_bold_prompt_on_the_same_line_and_hard_wraps_are_joined():
    assert render_reply("novel", "Anna looked at him", "\nwith a smile, and\nsaid nothing.", "sentence") == \
        "**Anna looked at him** with a smile, and said nothing."
    assert render_reply("novel", "Anna looked at him", ".\n\nLevin came in.", "sentence") == \
        "**Anna looked at him**.\n\nLevin came in."
    assert render_reply("novel", "Anna looked at him", "\n\nLevin came in.", "sentence") == \
        "**Anna looked at him**\n\nLevin came in."
    assert render_reply("faq", "Is it open?", "Yes.\nThe hours are online.", "stop", continues=False) == \
        "> **Is it open?**\nYes.\nThe hours are online."


def test_an_ellipsis_only_when_the_text_does_not_end_a_sentence():
    assert render_reply("tale", "Once", " upon a time she slept.", "length") == "**Once** upon a time she slept."
    assert render_reply("tale", "Once", " upon a time she", "length") == "**Once** upon a time she\u2026"
    assert render_reply("tale", "Once", " upon a time she slept.", "sentence") == "**Once** upon a time she slept."


def test_the_source_quote_is_marked_trimmed_safe_markdown_and_never_pings():
    passage = ("Ask @everyone at <@123456789> or <#42>: see https://example.com and [here](https://evil.example). "
               "**Bold** _claims_ `code`\n# heading\n- list. " + "More words follow here. " * 40)
    text = render_reply("faq", "Where?", "At the clinic.", "stop", continues=False, source=passage)
    body, quoted = text.split("\n\n> *From the FAQ:* ")
    assert body == "> **Where?**\nAt the clinic."
    assert quoted.startswith("\u201c") and quoted.endswith("\u201d") and "\n" not in quoted
    assert len(quoted) < 2 * 300
    assert "@everyone" not in quoted and "<@1" not in quoted and "<#4" not in quoted
    assert "https://" not in quoted and "](" not in quoted
    assert "\\*\\*Bold\\*\\*" in quoted and "\\_claims\\_" in quoted and "\\`code\\`" in quoted
    assert render_reply("faq", "Where?", "At the clinic.", None, continues=False, source=passage).endswith(" \u2026")
    big = render_reply("faq", "Where?", "x " * 1500, "length", continues=False, source=passage)
    assert len(big) <= MESSAGE_CHARS and "*From the FAQ:*" in big
