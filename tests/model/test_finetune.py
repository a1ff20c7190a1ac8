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
    assert "New text (held-out contributions, " in summary and "Old style (tale held-out" in summary
    assert "nats/char" in summary and "bits/char" in summary

    # The held-out part is the tail of the contributions (a quarter here: a tenth would be too few
    # characters to measure) and the figure is reproducible from the file.
    data = contributed_data(texts, "tale")
    _, held = data.split(0.25)
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
    assert cfg.lr < 3e-3 and cfg.val_fraction == 0.1 and cfg.eval_every <= 50 and cfg.n_seqs == n_seqs
    assert train_config(FinetuneConfig(), chars, replaying=True).n_seqs == 4 * n_seqs


def test_contributions_are_joined_oldest_first_with_blank_lines():
    data = contributed_data(["first\n", "", "second", "   "], "tale")
    assert data.text == "first\n\nsecond\n"


# ---- keeping the corpus: replay, L2-SP, held-out size ---------------------------------------

OLD_STYLE = "Once upon a time a princess sat by the well and wept. "  # what base_checkpoint was trained on


def test_replay_is_on_by_default_and_three_quarters_of_every_batch_are_corpus_training_text(base_checkpoint, tmp_path,
                                                                                  monkeypatch):
    from model import finetune as ft
    from model.charset import decode

    assert FinetuneConfig().replay == 0.75 and FinetuneConfig().anchor == 0.0
    seen: list = []
    real_batch = ft.ReplayPlan.batch

    def spy(self, epoch, index):
        x, y = real_batch(self, epoch, index)
        seen.append(x)
        return x, y

    monkeypatch.setattr(ft.ReplayPlan, "batch", spy)
    corpus_text = "The brave little tailor sewed all night long. " * 200
    corpus_train = TextData.from_text("tale", corpus_text).codes()
    contributed = contributed_data(contributed_texts(), "tale").text
    report = finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "new.safetensors",
                      FinetuneConfig(**{**FAST, "max_epochs": 2}), replay_codes=corpus_train)
    assert seen and report.replay == 0.75 and report.replay_chars == len(corpus_train)
    assert "75% of each batch replayed from the tale training text" in report.summary()
    for x in seen:
        rows = [decode(r) for r in x]
        new = len(rows) // 4
        assert len(rows) == 4 * new
        assert all(r in contributed for r in rows[:new])
        assert all(r in corpus_text for r in rows[new:])


def test_replay_rows_move_on_through_the_corpus_and_continue_their_streams():
    import torch

    from model.finetune import ReplayPlan

    new, old = torch.arange(0, 2000), torch.arange(10_000, 30_000)
    plan = ReplayPlan(new, old, new_rows=2, old_rows=2, n_steps=10, seed=1)
    per = plan.batches_per_epoch()
    seen = set()
    prev = None
    for step in range(3 * per):
        x, y = plan.batch(step // per, step % per)
        assert x.shape == (4, 10) and bool((x[:2] < 10_000).all()) and bool((x[2:] >= 10_000).all())
        assert torch.equal(y[:, :-1], x[:, 1:])
        if prev is not None and step % per:  # within an epoch each row goes on where it stopped
            assert torch.equal(x[:, 0], prev[:, -1] + 1)
        prev = x
        seen.update(x[2:].flatten().tolist())
    assert len(seen) == 3 * per * 2 * 10  # no corpus character was replayed twice in three epochs


def test_replay_keeps_the_old_style_that_plain_fine_tuning_forgets(base_checkpoint, tmp_path):
    held = TextData.from_text("tale", OLD_STYLE * 30).codes()
    corpus_train = TextData.from_text("tale", OLD_STYLE * 120).codes()
    plain = finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "plain.safetensors",
                     FinetuneConfig(**{**FAST, "replay": 0.0}), corpus_codes=held, replay_codes=corpus_train)
    kept = finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "kept.safetensors",
                    FinetuneConfig(**FAST), corpus_codes=held, replay_codes=corpus_train)
    assert plain.replay == 0.0 and "no corpus replay" in plain.summary()
    assert plain.corpus_rise > 0.5  # learned alone, the new text overwrites the old
    assert kept.corpus_rise < plain.corpus_rise / 4
    assert kept.after.contributed < kept.before.contributed * 0.9  # and it still learns the new text


def test_l2sp_penalty_is_zero_at_the_start_and_grows_with_the_distance(tiny_model):
    import torch

    from model.finetune import l2sp

    penalty = l2sp(tiny_model, 0.5)
    assert penalty(tiny_model).item() == 0.0
    with torch.no_grad():
        next(tiny_model.parameters()).add_(0.1)
    n = next(tiny_model.parameters()).numel()
    assert math.isclose(penalty(tiny_model).item(), 0.5 * n * 0.01, rel_tol=1e-4)


@pytest.mark.parametrize("chars, held", [(2_000, 500), (7_000, 1_000), (40_000, 4_000)])
def test_enough_text_is_held_out_where_the_contributions_allow(chars, held):
    from model.finetune import heldout_share

    share = heldout_share(chars, FinetuneConfig())
    assert abs(chars * share - held) <= 1


def test_the_report_gives_both_figures_in_nats_and_bits_and_flags_thin_ones():
    from model.finetune import FinetuneReport, Losses

    report = FinetuneReport("faq", "base", "out", 2000, 1500, 500, 8000, None, Losses(4.0, 1.0),
                            Losses(1.5, 1.02), 50, "early-stop", 30.0, replay=0.75, replay_chars=70_000)
    text = report.summary()
    assert "New text (held-out contributions, 500 chars): 4.000 -> 1.500 nats/char (-2.500)" in text
    assert "5.771 -> 2.164 bits/char" in text
    assert "Old style (faq held-out, 8,000 chars): 1.000 -> 1.020 nats/char (+0.020)" in text
    assert "rests on only 500 held-out characters (under 1,000)" in text
    figures = report.figures()
    assert figures["contributed"]["thin"] and not figures["corpus"]["thin"]
    assert math.isclose(figures["corpus"]["after_bits"], 1.02 / math.log(2))
    assert math.isclose(report.corpus_rise, 0.02)
    assert FinetuneReport.from_dict(report.to_dict()) == report


def test_bad_replay_and_anchor_values_are_refused_with_their_range():
    with pytest.raises(ValueError, match="replay must be from 0"):
        FinetuneConfig(replay=1.0)
    with pytest.raises(ValueError, match="anchor must be 0"):
        FinetuneConfig(anchor=-1)


def test_the_regularisers_reach_the_training_and_bad_rates_are_refused_at_once(base_checkpoint, tmp_path):
    cfg = FinetuneConfig(weight_drop=0.1, layer_dropout=0.2, output_dropout=0.25)
    t = train_config(cfg, 5_000)
    assert (t.weight_drop, t.layer_dropout, t.output_dropout) == (0.1, 0.2, 0.25)
    with pytest.raises(ValueError, match="weight_drop must be a probability"):
        FinetuneConfig(weight_drop=1.0)
    regularised = FinetuneConfig(**{**FAST, "weight_drop": 0.1, "output_dropout": 0.2})  # one layer: no layer dropout
    report = finetune(contributed_texts(), base_checkpoint, "tale", tmp_path / "new.safetensors", regularised)
    assert report.after.contributed < report.before.contributed * 0.9  # it still learns


def test_real_prose_is_learned_and_the_old_style_kept(base_checkpoint, tmp_path):
    """Realistic contributions: paragraphs of Grimms' tales (public domain, in the shared corpora folder)."""
    from corpora.paths import SHARED_ROOT

    grimms = SHARED_ROOT / "corpora" / "grimms.txt"
    if not grimms.is_file():
        pytest.skip(f"{grimms} is not on this machine")
    text = TextData.from_file(grimms).text[100_000:108_000]
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    held = TextData.from_text("tale", OLD_STYLE * 30).codes()
    corpus_train = TextData.from_text("tale", OLD_STYLE * 120).codes()
    report = finetune(paragraphs, base_checkpoint, "tale", tmp_path / "new.safetensors", FinetuneConfig(**FAST),
                      corpus_codes=held, replay_codes=corpus_train)
    assert report.heldout_chars >= 1000 and not report.thin()
    assert report.after.contributed < report.before.contributed - 0.2
    assert report.corpus_rise < 0.05


def test_an_anchor_pulls_every_step_towards_the_served_weights(base_checkpoint, tmp_path):
    """With a strong L2-SP anchor the weights hardly move from the base; the report says it was used."""
    import torch

    base = load_checkpoint(base_checkpoint).model.state_dict()

    def moved(anchor: float) -> float:
        out = tmp_path / f"a{anchor}.safetensors"
        report = finetune(contributed_texts(), base_checkpoint, "tale", out,
                          FinetuneConfig(**{**FAST, "max_epochs": 2, "replay": 0.0, "anchor": anchor}))
        assert report.anchor == anchor and (f"L2-SP anchor {anchor:g}" in report.summary()) == (anchor > 0)
        new = load_checkpoint(out).model.state_dict()
        return sum(float(((new[k] - base[k]) ** 2).sum()) for k in base if torch.is_floating_point(base[k]))

    assert moved(100.0) < moved(0.0) / 10
