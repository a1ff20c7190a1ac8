"""The guard: a result is served only if it learned the new text and kept the corpus."""

from __future__ import annotations

from bot.jobs.guard import judge
from model.finetune import FinetuneReport, Losses


def report(contributed: tuple[float, float], corpus: tuple[float, float] | None, note: str | None = None):
    before = Losses(contributed[0], corpus[0] if corpus else None)
    after = Losses(contributed[1], corpus[1] if corpus else None)
    return FinetuneReport("faq", "base", "new", 7000, 6000, 1000, 8000 if corpus else 0, note, before, after, 80,
                          "early-stop", 30.0)


def test_better_on_the_new_text_and_within_the_bound_passes():
    verdict = judge(report((4.4, 1.2), (0.99, 1.03)))
    assert verdict.ok and verdict.reasons == ()


def test_forgetting_the_corpus_past_the_bound_is_refused_with_both_figures():
    verdict = judge(report((4.44, 0.39), (0.99, 2.24)))
    assert not verdict.ok
    assert verdict.text() == ("it forgot too much of the faq style: its held-out loss rose 0.990 -> 2.240 nats/char "
                              "(+1.250, more than the 0.05 allowed)")
    assert judge(report((4.44, 0.39), (0.99, 2.24)), max_corpus_rise=2.0).ok  # the bound is a setting


def test_no_better_on_the_new_text_is_refused():
    verdict = judge(report((2.0, 2.01), (1.0, 0.99)))
    assert not verdict.ok and "did not get better at the new text (held-out contributions 2.000 -> 2.010" in \
        verdict.text()


def test_an_unmeasured_corpus_cannot_pass():
    verdict = judge(report((4.0, 1.0), None, "the corpus file covid-faq.txt is not on this machine"))
    assert not verdict.ok
    assert "could not be measured (the corpus file covid-faq.txt is not on this machine)" in verdict.text()
