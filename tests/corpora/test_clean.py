"""Cleaning: the Gutenberg header, credits and licence footer go, the story stays, line endings unify."""

from __future__ import annotations

import pytest

from corpora.clean import clean_gutenberg, clean_plain
from corpora.registry import CORPORA, SHARED_DIR, load_corpus

needs_shared = pytest.mark.skipif(not SHARED_DIR.is_dir(), reason=f"the team's corpora are not at {SHARED_DIR}")

STORY = ("THE KETTLE\r\n\r\nThere was once a kettle that sang.\r\nIt sang all day.\r\n\r\n\r\n"
         "THE END OF IT\r\n\r\nNo more.\r\n")
HEADER = (
    "\ufeffThe Project Gutenberg eBook of The Kettle\r\n\r\nThis ebook is for the use of anyone anywhere in the "
    "United States\r\n\r\nRelease date: May 1, 2001 [eBook #99999]\r\n\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK THE KETTLE ***\r\n\r\n\r\n"
    "Produced by A. Volunteer and the Online Distributed\r\nProofreading Team\r\n\r\n\r\n"
)
FOOTER = (
    "\r\n\r\nEnd of the Project Gutenberg EBook of The Kettle\r\n\r\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK THE KETTLE ***\r\n\r\n"
    "Updated editions will replace the previous one.\r\nSection 1. General Terms of Use and Redistributing "
    "Project Gutenberg-tm electronic works\r\n"
)
CLEAN_STORY = "THE KETTLE\n\nThere was once a kettle that sang.\nIt sang all day.\n\n\nTHE END OF IT\n\nNo more.\n"


def test_canonical_gutenberg_file_loses_header_credits_and_licence():
    text = HEADER.removeprefix("\ufeff") + STORY + FOOTER
    assert clean_gutenberg(text) == CLEAN_STORY


def test_mirror_without_header_loses_only_the_footer():
    mirror_footer = ("\r\n\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK THE KETTLE ***\r\n\r\n"
                     "A Word from Project Gutenberg\r\n")
    assert clean_gutenberg(STORY + mirror_footer) == CLEAN_STORY


def test_text_without_markers_keeps_everything_but_line_endings():
    assert clean_gutenberg(STORY) == CLEAN_STORY
    assert clean_plain("\r\n\r\nQ\rA\r\n\r\n") == "Q\nA\n"


def test_a_story_line_that_mentions_gutenberg_is_not_a_marker():
    story = "THE PRINTER\n\nHe spoke of Project Gutenberg and of the end of the project gutenberg ebook.\n"
    assert clean_gutenberg(story) == story


@needs_shared
def test_anna_karenina_loses_its_licence_footer_and_keeps_the_novel():
    raw = (SHARED_DIR / "anna.txt").read_text(encoding="utf-8")
    assert "*** END OF THIS PROJECT GUTENBERG EBOOK ANNA KARENINA ***" in raw
    text = load_corpus("novel").text
    assert "gutenberg" not in text.lower() and "\r" not in text
    assert text.startswith("Chapter 1\n\n\nHappy families are all alike;")
    assert text.endswith("which I have the power to put into\nit.\"\n")
    assert "PART EIGHT" in text


@needs_shared
def test_fairy_tales_keep_every_tale_from_first_to_last():
    text = load_corpus("tale").text
    assert "gutenberg" not in text.lower() and "\r" not in text
    assert text.startswith("FAIRY TALES OF HANS CHRISTIAN ANDERSEN\n")
    assert "\n\n\n\n\nA STORY\n\nIn the garden all the apple-trees were in blossom." in text
    assert text.endswith("it is not according to the calendar, therefore, it\nmust be all wrong.\"\n")


@needs_shared
@pytest.mark.parametrize("name,text_sha256", [
    ("tale", "c58e5b450a5fb0a6ade840c496f1b5a171612c9f06fcf230edd2ec7b7f81fa47"),
    ("novel", "4e2a70c8a0c90dc0b445cf47565c34bb43e6b6d5c1133d06a5dd30828aca44d5"),
    ("faq", "ba7d8279ab979ea44d4e8ca0ff6eb5fe93054dd67dfe902cd2c720363673754d"),
])
def test_cleaned_text_is_the_one_the_checkpoints_were_trained_on(name, text_sha256):
    """Checkpoints and resumable runs record this sha256; a cleaning change must not alter it silently."""
    assert load_corpus(name).text_sha256 == text_sha256


@needs_shared
@pytest.mark.parametrize("name", ["tale", "novel"])
def test_a_canonical_gutenberg_download_of_the_same_book_cleans_to_the_same_text(name):
    """Wrapped in a Gutenberg header and licence, the mirror's book cleans to the mirror's text and
    is recognised as the Gutenberg edition by the content check."""
    corpus = CORPORA[name]
    raw = (SHARED_DIR / corpus.filename).read_text(encoding="utf-8")
    book = corpus.clean(raw)
    canonical = (HEADER.replace("THE KETTLE", "THE BOOK") + book.replace("\n", "\r\n") + FOOTER
                 + "Project Gutenberg licence text. " * 500)
    assert corpus.clean(canonical) == book
    match = corpus.identify(canonical.encode("utf-8"))
    assert match is not None and match.id == "gutenberg"


@needs_shared
def test_a_truncated_book_is_not_recognised():
    corpus = CORPORA["novel"]
    raw = (SHARED_DIR / corpus.filename).read_bytes()
    assert corpus.identify(raw).id == "mirror"
    assert corpus.identify(raw[: len(raw) // 2]) is None
    wrapped_half = (HEADER + raw[: len(raw) // 2].decode() + FOOTER).encode()
    assert corpus.identify(wrapped_half) is None
