"""Primes look like the corpus at the spot where a reply starts; stop rules end where the corpus's units end."""

from __future__ import annotations

import re

import pytest

from corpora.registry import CORPORA, SHARED_DIR, load_corpus

needs_shared = pytest.mark.skipif(not SHARED_DIR.is_dir(), reason=f"the team's corpora are not at {SHARED_DIR}")

tale, faq, novel = CORPORA["tale"], CORPORA["faq"], CORPORA["novel"]


@pytest.mark.parametrize("prompt,prime", [
    ("the brave tin soldier", "THE BRAVE TIN SOLDIER\n\n"),
    ("Tell me a story about the moon!", "THE MOON\n\n"),
    ("please write me a fairy tale about an old oak tree.", "AN OLD OAK TREE\n\n"),
    ("The Story of the Year", "THE STORY OF THE YEAR\n\n"),
    ("Once upon a time there was a little mermaid", "Once upon a time there was a little mermaid"),
    ("The girl walked  into\nthe dark wood, and", "The girl walked into the dark wood, and"),
    ("tell me a story", ""),
    ("   ", ""),
])
def test_tale_prime_makes_a_title_of_a_topic_and_continues_prose(prompt, prime):
    assert tale.prime(prompt) == prime


@pytest.mark.parametrize("question,prime", [
    ("Do I need to wear a mask on campus?", "Do I need to wear a mask on campus\n"),
    ("how much   does testing cost??", "How much does testing cost\n"),
    ("When can I go back to work? Do I need a test?", "When can I go back to work. Do I need a test\n"),
    ("???", ""),
])
def test_faq_prime_writes_the_question_as_a_heading_line(question, prime):
    assert faq.prime(question) == prime


def test_novel_prime_continues_the_words_as_written():
    assert novel.prime("Anna looked\n at him") == "Anna looked at him"


@needs_shared
def test_faq_primes_use_only_characters_the_faq_corpus_contains():
    """The FAQ has no question marks; a prime with one would start the model somewhere it has never been."""
    text = load_corpus("faq").text
    assert "?" not in text
    for q in ["Do I need to wear a mask on campus?", "Is testing free?", "What if I test positive? Who do I call?"]:
        assert set(faq.prime(q)) <= set(text)


@needs_shared
def test_faq_headings_are_short_lines_followed_by_their_answer():
    """The layout the faq prime copies: a short line with no end punctuation, then the answer."""
    text = load_corpus("faq").text
    headings = re.findall(r"(?<=\n)([A-Z][^\n.:;!]{3,60})\n(?=[A-Z\n])", text)
    assert {"Student Accommodations", "When to call a health care provider",
            "What to expect after getting a COVID-19 vaccine"} <= set(headings)


@needs_shared
def test_faq_answers_end_at_a_blank_line():
    text = load_corpus("faq").text
    entries = [e for e in text.split(faq.stop[0]) if e.strip()]
    assert len(entries) > 200
    assert all(not e.startswith("\n") and not e.endswith("\n") for e in entries[:-1])


@needs_shared
def test_tale_stop_comes_only_at_the_end_of_a_tale():
    """Every place the stop string occurs, the next thing is a new tale's title (capitals, blank line)."""
    text = load_corpus("tale").text
    stop = tale.stop[0]
    starts = [text[m.end() : m.end() + 80] for m in re.finditer(re.escape(stop) + "\n*", text)]
    assert len(starts) > 100
    assert all(re.match(r"[^a-z\n]+\n\n[^\n]", start) for start in starts), "a tale starts TITLE, blank line"
    assert re.fullmatch(r"[^a-z\n]+\n\n", tale.prime("the old lighthouse"))


@needs_shared
def test_novel_stop_comes_only_around_chapter_headings():
    """Three newlines end a chapter (before its successor's heading) or follow a heading; nowhere else."""
    text = load_corpus("novel").text
    heading = re.compile(r"Chapter \d+|PART [A-Z]+")
    matches = list(re.finditer(re.escape(novel.stop[0]) + "\n*", text))
    assert len(matches) > 200
    for m in matches:
        after = text[m.end():].split("\n", 1)[0]
        before = text[: m.start()].rsplit("\n", 1)[-1]
        assert heading.fullmatch(after) or heading.fullmatch(before), (before, after)
