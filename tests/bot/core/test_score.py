"""The reply score best-of-n posts by: fluent, real words, a clean end, no loops, on topic."""

from __future__ import annotations

from bot.core.score import Grounding, best, content_words, debris_end, repeated_share, score_reply
from bot.core.words import Lexicon

LEX = Lexicon.from_text("The little mermaid swam to the prince.")


def flat(text: str, lp: float = -1.0) -> list[float]:
    return [lp] * len(text)


def test_a_candidate_without_invented_words_wins_even_when_slightly_less_likely():
    real = "The little mermaid swam to the shore."
    made_up = "The little mermaid swam to the cledge."
    scores = [score_reply(made_up, flat(made_up, -1.0), LEX), score_reply(real, flat(real, -1.1), LEX)]
    assert scores[0].invented_words == ("cledge",) and scores[1].invented_words == ()
    assert best(scores) == 1


def test_an_unclean_ending_and_repeated_phrases_cost():
    clean = "She swam to the prince."
    cut = "She swam to the prince and"
    assert score_reply(clean, flat(clean), LEX).total > score_reply(cut, flat(cut), LEX).total
    loop = "and the little boy and the little boy and the little boy."
    assert repeated_share(loop) > 0.3
    assert score_reply(loop, flat(loop), LEX).repetition < 0


def test_likelihood_decides_between_otherwise_equal_candidates_and_ties_go_to_the_first():
    a, b = "She swam.", "She swam."
    assert best([score_reply(a, flat(a, -1.5), LEX), score_reply(b, flat(b, -0.9), LEX)]) == 1
    assert best([score_reply(a, flat(a), LEX), score_reply(b, flat(b), LEX)]) == 0


def test_faq_answers_on_the_question_topic_score_higher():
    g = Grounding("Do I need a face covering in class?", "Face coverings are required indoors.")
    on = "Face coverings are required in every class."
    off = "The parking office is open on weekdays."
    on_topic, off_topic = (score_reply(t, flat(t), LEX, grounding=g) for t in (on, off))
    assert on_topic.grounding > off_topic.grounding
    assert content_words("Do I need a face covering in class?") == {"need", "face", "covering", "class"}


def test_a_short_reply_and_a_debris_opening_cost_and_debris_can_be_cut():
    short, full = "Yes.", "Yes. " + "You must test twice weekly at a campus site. " * 4
    assert score_reply(short, flat(short), LEX, target_chars=200).short < 0
    assert score_reply(full.strip(), flat(full.strip()), LEX, target_chars=200).short == 0
    debris = "-b hours) you test. You must test twice weekly at a campus site."
    assert score_reply(debris, flat(debris), LEX, fresh_start=True).opening < 0
    assert debris[debris_end(debris):] == "You must test twice weekly at a campus site."
    assert debris_end("You are fine.") == 0
    assert debris_end('"You are fine," she said.') == 0
    assert debris_end("(Yes: see the form.)") == 0
    stray = "(but there are not spread off-campus. Under some rules you test weekly at a campus site."
    assert stray[debris_end(stray):] == "Under some rules you test weekly at a campus site."
