"""What an admin is told when a persona's training ends: the held-out loss on its own text, in nats and bits."""

from __future__ import annotations

from bot.jobs.manager import JobOutcome
from bot.personas.messages import heldout_line, training_ended
from model.finetune import FinetuneReport, Losses


def report(after: float = 1.5, heldout: int = 1200) -> FinetuneReport:
    return FinetuneReport("g5-rules", "base.safetensors", "new.safetensors", 12_000, 10_800, heldout, 0,
                          "not a registered corpus", Losses(2.0, None), Losses(after, None), 40, "early-stop", 9.0)


def test_a_trained_persona_gets_its_version_and_both_figures():
    text = training_ended("rules", JobOutcome(3, "g5-rules", "done", version=1, report=report()))
    assert text == ("The persona **rules** is trained (job 3, 40 steps) and now speaks from v1.\n"
                    "Held-out loss on its own text (the last 1,200 characters, not trained on): 2.000 -> 1.500 "
                    "nats/char (2.885 -> 2.164 bits/char), the general base before and the persona after.")
    assert "g5-rules" not in text  # people know it by its name


def test_a_figure_on_little_text_says_it_is_noisy():
    assert "rests on fewer than 1,000 characters, so it is noisy" in heldout_line(report(heldout=400))
    assert "noisy" not in heldout_line(report())


def test_a_forced_result_says_it_was_forced():
    text = training_ended("rules", JobOutcome(3, "g5-rules", "done", version=2, report=report(2.2), forced=True))
    assert "now speaks from v2. Served because it was forced" in text and "2.000 -> 2.200 nats/char" in text


def test_a_persona_that_cannot_speak_yet_is_told_why_and_how_to_train_it_again():
    refused = training_ended("rules", JobOutcome(3, "g5-rules", "refused", report=report(2.2),
                                                 error="it did not get better at the new text"))
    assert refused.startswith("The training of the persona **rules** (job 3) was refused: it did not get better at "
                              "the new text. It cannot speak until it is trained: `/persona retrain rules force:True` "
                              "serves such a result anyway, or delete it and create it again with more text.\n"
                              "Held-out loss")
    cancelled = training_ended("rules", JobOutcome(3, "g5-rules", "cancelled", error="interrupted"))
    assert cancelled == ("The training of the persona **rules** (job 3) was cancelled: interrupted. It cannot speak "
                         "until it is trained: `/persona retrain rules` trains it again.")
    failed = training_ended("rules", JobOutcome(3, "g5-rules", "failed", error="the training process was killed"))
    assert failed.endswith("failed: the training process was killed. It cannot speak until it is trained: "
                           "`/persona retrain rules` trains it again.")


def test_the_command_line_is_told_its_own_retrain_command():
    refused = training_ended("rules", JobOutcome(3, "g5-rules", "refused", report=report(2.2), error="no better"),
                             server=5)
    assert "`charbot persona retrain rules --server 5 --force` serves such a result anyway" in refused
    failed = training_ended("rules", JobOutcome(3, "g5-rules", "failed", error="killed"), server=5)
    assert failed.endswith("`charbot persona retrain rules --server 5` trains it again.")
