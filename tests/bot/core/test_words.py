"""Invented words: what is neither the corpus's own word nor English (wordfreq)."""

from __future__ import annotations

from bot.core.words import ENGLISH_MIN_ZIPF, Lexicon, english_words, words


def test_english_comes_from_wordfreq_and_leaves_out_misspellings():
    english = english_words()
    assert len(english) > 50_000  # a maintained list, not a hand-written one
    assert {"mermaid", "gossamer", "vaccinated", "the"} <= english
    assert "seperation" not in english and "infeded" not in english
    assert ENGLISH_MIN_ZIPF > 0


def test_the_corpus_own_words_count_as_real():
    lex = Lexicon.from_text("Klaus met Vronsky at the NetID office.")
    assert lex.invented("Klaus and Vronsky used their netid") == []
    assert lex.invented("The infeded mermaid promined a cledge myment") == ["infeded", "promined", "cledge", "myment"]


def test_possessives_contractions_and_hyphens():
    lex = Lexicon.from_text("Gerda")
    assert lex.invented("Gerda's king's don't it\u2019s sister-in-law") == []
    assert words("sister-in-law, don't") == ["sister", "in", "law", "don't"]
