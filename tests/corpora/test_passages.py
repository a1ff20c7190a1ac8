"""FAQ grounding: passages, BM25 retrieval built once, the grounded prime and the quote a reader sees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from corpora.passages import PRIME_PASSAGE_CHARS, PassageIndex, grounded_prime, quote, split_passages
from corpora.prompts import faq_prime
from corpora.registry import CorpusMissing, load_corpus

FAQ = """Testing on campus

Students living in residence halls must test twice weekly at a campus site.

Face coverings
Face coverings are required in all indoor public spaces on campus.

Vaccination records
Upload your vaccination record in MyUHS using your NetID. It takes a week to show.
"""


def faq_text() -> str:
    try:
        return load_corpus("faq").text
    except CorpusMissing as exc:
        pytest.skip(f"the faq corpus is not on this machine: {exc}")


def test_a_lone_heading_joins_the_answer_after_it():
    assert split_passages(FAQ) == [
        "Testing on campus\nStudents living in residence halls must test twice weekly at a campus site.",
        "Face coverings\nFace coverings are required in all indoor public spaces on campus.",
        "Vaccination records\nUpload your vaccination record in MyUHS using your NetID. It takes a week to show.",
    ]


def test_questions_as_people_ask_them_find_the_right_passage():
    index = PassageIndex.from_text(FAQ)
    assert index.search("do I have to wear a face covering?")[0].passage.index == 1
    assert index.search("where do I upload my vaccination records")[0].passage.index == 2
    assert index.search("how often do I get tested")[0].passage.index == 0  # "tested" finds "test" (stemmed)
    assert index.search("?!") == [] and index.search("the weather in Paris") == []


def test_contributed_text_joins_the_index():
    index = PassageIndex.from_text(FAQ, extra=["Parking\nThe Lot 60 parking permits are sold online."])
    assert len(index) == 4
    assert "Lot 60" in index.search("where can I buy a parking permit")[0].passage.text


def test_questions_written_from_the_faqs_own_headings_find_their_passage():
    text = faq_text()
    index = PassageIndex.from_text(text)
    headed = [p for p in index.passages if "\n" in p.text and len(p.text.split("\n")[0].split()) <= 8]
    assert len(headed) >= 5
    found = 0
    for p in headed:
        heading = p.text.split("\n")[0]
        hits = index.search(heading, 3)
        found += any(h.passage.index == p.index for h in hits)
    assert found >= 0.8 * len(headed)


def test_the_grounded_prime_reads_the_passage_then_asks_the_question_as_the_next_entry():
    prime = grounded_prime("Face coverings\nFace coverings are required.", faq_prime("Do I need a mask?"))
    assert prime == "Face coverings\nFace coverings are required.\n\nDo I need a mask\n"
    long = grounded_prime("A sentence that goes on. " * 100, "Q\n")
    assert len(long) <= PRIME_PASSAGE_CHARS + 3 and long.endswith(".\n\nQ\n")


def test_the_quote_is_short_and_ends_at_a_sentence_or_word():
    assert quote("Short.\nAnswer.") == "Short. Answer."
    text = "The first sentence is long enough to stand alone. " + "word " * 200
    assert quote(text, 100) == "The first sentence is long enough to stand alone."
    cut = quote("word " * 200, 100)
    assert cut.endswith("\u2026") and len(cut) <= 101 and "wor\u2026" not in cut


@pytest.mark.slow
def test_importing_the_index_keeps_jax_off_the_gpu_unless_the_operator_chose():
    """bm25s runs JAX at import when JAX is installed, and JAX would take most of the GPU's memory."""
    show = "import os, corpora.passages; print(os.environ['JAX_PLATFORMS'])"
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    assert subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "cpu"
    chosen = subprocess.run([sys.executable, "-c", show], env={**env, "JAX_PLATFORMS": "cuda"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "cuda"
