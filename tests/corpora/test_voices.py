"""Who can speak: persona names and keys, the styles a persona borrows, and which server owns which."""

from __future__ import annotations

import pytest

from corpora import voices
from corpora.registry import CORPORA
from corpora.voices import (
    RESERVED,
    STYLES,
    TEMPLATES,
    BadName,
    add_persona,
    check_name,
    display_name,
    drop_persona,
    is_voice,
    owner,
    parse_key,
    persona_corpus,
    persona_key,
    personas_of,
    voice,
)

GUILD_A, GUILD_B = 1_146_439_104_567_410_688, 42


@pytest.fixture(autouse=True)
def no_registered_personas(monkeypatch):
    """Each test starts with no persona registered, and leaves none behind for the next."""
    monkeypatch.setattr(voices, "_personas", {})


@pytest.mark.parametrize("name, clean", [("rules", "rules"), ("  Rules ", "rules"), ("ab", "ab"),
                                         ("a" * 32, "a" * 32), ("house-rules_2", "house-rules_2")])
def test_a_name_is_trimmed_and_lower_cased(name, clean):
    assert check_name(name) == clean


@pytest.mark.parametrize("name", ["", "a", "a" * 33, "2rules", "-rules", "house rules", "règles", "rules!",
                                  "g1-rules/..", None, 7])
def test_a_name_that_cannot_name_a_persona_says_what_would(name):
    with pytest.raises(BadName, match="2 to 32 characters: lower-case letters, digits, - and _, starting with a"):
        check_name(name)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_the_built_in_corpora_and_the_command_words_are_reserved(name):
    with pytest.raises(BadName, match="taken by charbot itself"):
        check_name(name.upper())


def test_reserved_holds_every_corpus_the_base_and_the_subcommands():
    assert set(CORPORA) | {"base", "create", "delete", "list", "info", "help"} <= RESERVED


def test_a_key_names_the_server_and_the_clean_name_and_parses_back():
    key = persona_key(GUILD_A, " Rules ")
    assert key == f"g{GUILD_A}-rules"
    assert parse_key(key) == (GUILD_A, "rules")
    assert owner(key) == GUILD_A and display_name(key) == "rules"


@pytest.mark.parametrize("guild", [0, -1, None, True, "42", 4.2])
def test_a_key_needs_a_real_server_id(guild):
    with pytest.raises(ValueError, match="a persona belongs to a server"):
        persona_key(guild, "rules")


def test_a_key_refuses_a_bad_name():
    with pytest.raises(BadName):
        persona_key(GUILD_B, "tale")


@pytest.mark.parametrize("key", ["tale", "faq", "novel", "base", "g-rules", "gx-rules", "g42-", "g42-Rules",
                                 "g42-2rules", "42-rules", "g42_rules", f"g{'1' * 21}-rules", "g42-rules\n"])
def test_anything_else_is_not_a_persona_key(key):
    assert parse_key(key) is None and owner(key) is None and display_name(key) == key


@pytest.mark.parametrize("style", STYLES)
def test_each_style_borrows_its_templates_framing_stop_and_grounding(style):
    template = CORPORA[TEMPLATES[style]]
    c = persona_corpus(GUILD_B, "Rules", style)
    assert c.name == "g42-rules" and c.title == "rules"
    assert (c.frame, c.stop, c.grounded, c.clean, c.best_of) == (template.frame, template.stop, template.grounded,
                                                                  template.clean, template.best_of)
    assert c.default_temperature == template.default_temperature
    assert c.style.layout == template.style.layout and c.style.prompt_required == template.style.prompt_required
    assert c.prime("How do I join?") == template.prime("How do I join?")
    assert c.filename == "" and c.downloads == () and c.target_val_bpc is None  # nothing to fetch or train
    assert style in c.description and c.notes and c.example_prompt


def test_the_styles_are_story_faq_and_prose_from_tale_faq_and_novel():
    assert TEMPLATES == {"story": "tale", "faq": "faq", "prose": "novel"}
    assert CORPORA["faq"].grounded and not CORPORA["tale"].grounded and not CORPORA["novel"].grounded


def test_a_grounded_persona_quotes_its_own_text_under_its_own_name():
    faq = persona_corpus(GUILD_B, "rules", "faq")
    assert faq.grounded and faq.style.source_label == "From rules"
    assert faq.example_prompt == "How do I join?"
    story = persona_corpus(GUILD_B, "rules", "story")
    assert story.style.source_label == CORPORA["tale"].style.source_label


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style must be one of story, faq, prose"):
        persona_corpus(GUILD_B, "rules", "poem")  # type: ignore[arg-type]


def test_voice_finds_the_built_in_corpora_and_only_registered_personas():
    key = persona_key(GUILD_B, "rules")
    assert voice("tale") is CORPORA["tale"] and is_voice("faq")
    assert not is_voice(key)
    with pytest.raises(KeyError, match="unknown corpus or persona 'g42-rules'"):
        voice(key)
    add_persona(persona_corpus(GUILD_B, "rules", "faq"))
    assert is_voice(key) and voice(key).name == key and voice(key).grounded
    drop_persona(key)
    drop_persona(key)  # twice is harmless
    assert not is_voice(key)
    assert not is_voice(None) and not is_voice(3)


def test_only_a_persona_can_be_registered_as_one():
    with pytest.raises(ValueError, match="not a persona key"):
        add_persona(CORPORA["tale"])


def test_two_servers_may_use_one_name_and_each_sees_only_its_own():
    add_persona(persona_corpus(GUILD_A, "rules", "faq"))
    add_persona(persona_corpus(GUILD_B, "rules", "story"))
    add_persona(persona_corpus(GUILD_B, "bard", "prose"))
    a, b = personas_of(GUILD_A), personas_of(GUILD_B)
    assert list(a) == ["rules"] and a["rules"].name == f"g{GUILD_A}-rules" and a["rules"].grounded
    assert list(b) == ["bard", "rules"] and b["rules"].name == "g42-rules" and not b["rules"].grounded
    assert owner(a["rules"].name) == GUILD_A and owner(b["rules"].name) == GUILD_B
    assert personas_of(7) == {}
    assert personas_of(None) == {}  # a DM has no personas: they belong to servers
