"""The fine-tuning pipeline, in process: it learns the new text and reports before and after."""

from __future__ import annotations

import math

import pytest

from model.batches import BatchPlan
from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_loss
from model.finetune import (
    FinetuneConfig,
    JobCancelled,
    TooLittleText,
    batch_shape,
    contributed_data,
    finetune,
    train_config,
)
from model.textdata import TextData
from tests.helpers import contributed_texts

# Tiny models want a high lr. On the CPU whatever the machine has, so figures are reproducible bit for bit.
FAST = dict(minutes=2, max_epochs=15, lr=1e-2, corpus_eval_chars=2000, threads=1, device="cpu")


def test_finetune_lowers_heldout_loss_and_reports_both_figures(base_checkpoint, tmp_path):
    texts = contributed_texts()
    phases = []
    progress = []
    old_style = TextData.from_text("tale", "Once upon a time a princess sat by the well and wept. " * 40).codes()
    report = finetune(texts, base_checkpoint, "tale", tmp_path / "new.safetensors", FinetuneConfig(**FAST),
                      corpus_codes=old_style, on_progress=progress.append, on_phase=phases.append)
    assert phases == ["measuring before", "training", "measuring after"]
    assert progress and progress[-1].step == report.steps
    assert report.after.contributed < report.before.contributed * 0.9
    # Given the corpus's held-out text, the old-style figure is there too.
    assert report.before.corpus is not None and report.after.corpus is not None
    assert report.corpus_heldout_chars == len(old_style) and report.corpus_note is None
    summary = report.summary()
    assert "New text (held-out contributions)" in summary and "Old style (tale held-out" in summary

    # The held-out part is the tail of the contributions and the figure is reproducible from the file.
    data = contributed_data(texts, "tale")
    _, held = data.split(0.1)
    assert report.heldout_chars == len(held) and report.train_chars + report.heldout_chars == len(data.text)
    new = load_checkpoint(tmp_path / "new.safetensors")
    assert math.isclose(evaluate_loss(new.model, held), report.after.contributed, rel_tol=1e-6)
    assert new.info["finetune"]["after"]["contributed"] == report.after.contributed
    assert new.info["parent"]["path"] == base_checkpoint


def test_without_the_corpus_text_the_reason_is_said_and_the_figure_skipped(base_checkpoint, tmp_path):
    note = "the corpus file fairy-tales.txt is not on this machine"
    report = finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "new.safetensors",
                      FinetuneConfig(**{**FAST, "max_epochs": 1}), corpus_codes=None, corpus_note=note)
    assert report.before.corpus is None and report.after.corpus is None
    assert "fairy-tales.txt is not on this machine" in report.corpus_note
    assert "Old style: not measured (the corpus file fairy-tales.txt is not on this machine)" in report.summary()


def test_too_little_text_is_refused_with_the_amount_needed(base_checkpoint, tmp_path):
    texts = ["A short tale about a fox." * 10]  # 250 characters
    with pytest.raises(TooLittleText) as err:
        finetune(texts, base_checkpoint, "tale", tmp_path / "new.safetensors", FinetuneConfig(**FAST))
    have = len(contributed_data(texts, "tale").text)
    assert err.value.missing == 2000 - have
    assert f"{2000 - have:,} more" in str(err.value)
    assert not (tmp_path / "new.safetensors").exists()


def test_stop_request_cancels_and_says_so(base_checkpoint, tmp_path):
    calls = iter(range(1000))
    with pytest.raises(JobCancelled):
        finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "new.safetensors", FinetuneConfig(**FAST),
                 should_stop=lambda: next(calls) >= 3)


@pytest.mark.parametrize("chars", [1800, 2500, 10_000, 100_000, 2_000_000])
def test_batches_fit_every_accepted_text_size(chars):
    n_seqs, n_steps = batch_shape(chars)
    import torch

    plan = BatchPlan(torch.zeros(chars, dtype=torch.long), n_seqs, n_steps)
    assert plan.batches_per_epoch() >= 4
    cfg = train_config(FinetuneConfig(), chars)
    assert cfg.lr < 3e-3 and cfg.val_fraction == 0.1 and cfg.eval_every <= 50


def test_contributions_are_joined_oldest_first_with_blank_lines():
    data = contributed_data(["first\n", "", "second", "   "], "tale")
    assert data.text == "first\n\nsecond\n"
