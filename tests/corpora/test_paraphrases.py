"""The paraphrase set: enough questions, each naming a passage of the FAQ, none using its answer's distinctive words."""

from __future__ import annotations

from collections import Counter

import pytest

from corpora.paraphrases import FAQ_PARAPHRASES, MASK_QUESTION, Paraphrase
from corpora.passages import PassageIndex, terms
from corpora.registry import CorpusMissing, load_corpus

# A word found in at least this share of the FAQ's passages says "COVID-19 on campus", not which
# passage answers (test, campus, vaccine, need, get...); a question may share only such words.
GENERIC_SHARE = 0.1


@pytest.fixture(scope="module")
def faq_passages() -> list[str]:
    try:
        text = load_corpus("faq").text
    except CorpusMissing as exc:
        pytest.skip(f"the faq corpus is not on this machine: {exc}")
    return [p.text for p in PassageIndex.from_text(text).passages]


def test_a_passage_answers_when_it_contains_a_phrase_whatever_its_line_breaks():
    q = Paraphrase("Is a mask required?", ("Face coverings are required", "masks are mandatory"))
    assert q.answered_by("Face coverings\nFace coverings are\nrequired in all indoor spaces.")
    assert not q.answered_by("Face coverings are optional.")


def test_there_are_enough_questions_and_each_is_asked_once():
    questions = [q.question for q in FAQ_PARAPHRASES]
    assert len(questions) >= 20 and len(set(questions)) == len(questions)
    assert MASK_QUESTION.question not in questions


def test_every_question_names_passages_of_the_faq(faq_passages):
    for q in (*FAQ_PARAPHRASES, MASK_QUESTION):
        assert any(q.answered_by(p) for p in faq_passages), f"no FAQ passage contains an answer to {q.question!r}"
        for phrase in q.answers:  # each phrase names a passage, none is a typo that would never match
            assert any(phrase in " ".join(p.split()) for p in faq_passages), phrase


def test_no_question_uses_a_distinctive_word_of_its_answer(faq_passages):
    """Stemmed content words, as BM25 matches them: any word shared with an answer is common to the FAQ."""
    df: Counter[str] = Counter()
    for p in faq_passages:
        df.update(set(terms(p)))
    generic = {w for w, n in df.items() if n >= GENERIC_SHARE * len(faq_passages)}
    for q in FAQ_PARAPHRASES:
        answer_words = {w for p in faq_passages if q.answered_by(p) for w in terms(p)}
        distinctive = (set(terms(q.question)) & answer_words) - generic
        assert not distinctive, f"{q.question!r} uses its answer's words {sorted(distinctive)}"
