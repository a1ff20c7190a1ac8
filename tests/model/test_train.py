"""Training: it learns, it resumes exactly, it stops when it should, and it reports what it did."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import pytest
import torch

from model import device
from model.checkpoint import CheckpointError, load_checkpoint, read_tensor_file, save_checkpoint
from model.device import bf16_matmul_supported, training_precision
from model.network import CharLSTM, ModelConfig
from model.textdata import TextData
from model.train import (
    RESUME_FORMAT,
    TrainConfig,
    log_path,
    lr_at,
    plot_path,
    resume_path,
    train,
)

CAT = "the cat sat on the mat. "


@pytest.fixture
def cat_data() -> TextData:
    return TextData.from_text("cat", CAT * 200)


@pytest.fixture
def varied_data() -> TextData:
    """Text a tiny model cannot learn perfectly, so losses keep moving and runs can differ."""
    g = torch.Generator().manual_seed(3)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]
    picks = torch.randint(0, len(words), (1500,), generator=g).tolist()
    return TextData.from_text("words", " ".join(words[i] for i in picks) + ".\n")


def small_cfg(**kw) -> TrainConfig:
    """A tiny run on the CPU, also on machines with a GPU (the CUDA runs are in test_train_cuda.py: cuDNN's
    dropout between LSTM layers draws from a random state resume cannot restore)."""
    base = dict(n_seqs=4, n_steps=16, lr=1e-2, warmup_steps=3, eval_every=10, log_every=5, max_steps=30, seed=5,
                device="cpu")
    return TrainConfig(**{**base, **kw})


def stops_after(steps: int) -> Callable[[], bool]:
    """A ``should_stop`` that lets exactly ``steps`` optimizer steps run (it is asked before each)."""
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > steps

    return stop


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def last_weights(out) -> dict[str, torch.Tensor]:
    tensors, _ = read_tensor_file(resume_path(out), expect_format=RESUME_FORMAT)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_tiny_model_really_learns(tmp_path, cat_data):
    mc = ModelConfig(embed_size=16, hidden_size=64, n_layers=1, dropout=0.0)
    cfg = TrainConfig(n_seqs=8, n_steps=32, lr=3e-2, warmup_steps=5, max_steps=50, eval_every=25, seed=1)
    result = train(cat_data, tmp_path / "cat.safetensors", cfg, mc, progress_bar=False)
    assert result.stopped == "budget"
    assert result.steps == 50
    assert result.val_loss_nats < 0.5, result.history  # from ln 96 = 4.56 at the start
    ck = load_checkpoint(tmp_path / "cat.safetensors")
    assert ck.info["val_loss_nats"] == result.val_loss_nats
    assert ck.info["corpus"] == "cat" and ck.info["steps"] <= 50 and ck.info["stopped"] == "budget"
    assert ck.info["text_sha256"] == cat_data.text_sha256


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not bf16_matmul_supported(), reason="this CPU has no native bfloat16 instructions (bf16 training is refused)"))])
def test_both_precisions_learn_and_the_checkpoint_stays_float32(tmp_path, cat_data, precision):
    mc = ModelConfig(embed_size=16, hidden_size=64, n_layers=1, dropout=0.0)
    cfg = TrainConfig(n_seqs=8, n_steps=32, lr=3e-2, warmup_steps=5, max_steps=50, eval_every=25, seed=1,
                      precision=precision)
    result = train(cat_data, tmp_path / "cat.safetensors", cfg, mc, progress_bar=False)
    assert result.val_loss_nats < 0.5, result.history
    ck = load_checkpoint(tmp_path / "cat.safetensors")
    assert ck.info["precision"] == precision
    assert all(p.dtype == torch.float32 for p in ck.model.parameters())


def test_bf16_training_on_a_cpu_without_bfloat16_is_refused_in_one_line(tmp_path, cat_data, monkeypatch):
    monkeypatch.setattr(device, "bf16_matmul_supported", lambda: False)
    cfg = TrainConfig(n_seqs=4, n_steps=8, max_steps=2, precision="bf16", device="cpu")
    with pytest.raises(ValueError, match="native bfloat16 instructions"):
        train(cat_data, tmp_path / "cat.safetensors", cfg, ModelConfig(hidden_size=16, n_layers=1), progress_bar=False)
    assert training_precision("auto", torch.device("cpu")) in ("fp32", "bf16")  # auto never refuses


def test_reports_are_written(tmp_path, cat_data, tiny_config):
    out = tmp_path / "run.safetensors"
    result = train(cat_data, out, small_cfg(), tiny_config, progress_bar=False)
    log = json.loads(log_path(out).read_text())
    assert log["status"] == "budget" and log["step"] == 30
    assert [h["step"] for h in log["history"] if h["val_loss"] is not None] == [10, 20, 30]
    assert plot_path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert resume_path(out).exists()
    assert not list(tmp_path.glob("*.tmp*"))
    assert result.best_val_loss == min(h["val_loss"] for h in result.history if h["val_loss"] is not None)


@pytest.mark.parametrize("stop_after", [7, 10, 23])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, varied_data, stop_after):
    """Exact equality on CPU: weights, optimizer, hidden state, RNG (dropout) and data position all resume."""
    mc = ModelConfig(embed_size=8, hidden_size=24, n_layers=2, dropout=0.2)
    cfg = small_cfg(max_steps=40)
    whole = train(varied_data, tmp_path / "whole.safetensors", cfg, mc, progress_bar=False)

    part = tmp_path / "part.safetensors"
    first = train(varied_data, part, cfg, mc, progress_bar=False, should_stop=stops_after(stop_after))
    assert first.stopped == "interrupted" and first.steps == stop_after
    second = train(varied_data, part, resume=True, progress_bar=False)
    assert second.stopped == "budget" and second.steps == 40
    assert second.chars_seen == whole.chars_seen
    assert_same(last_weights(part), last_weights(tmp_path / "whole.safetensors"))
    assert_same(weights(part), weights(tmp_path / "whole.safetensors"))
    assert second.best_val_loss == whole.best_val_loss
    val = [(h["step"], h["val_loss"]) for h in whole.history if h["val_loss"] is not None]
    assert [(h["step"], h["val_loss"]) for h in second.history if h["val_loss"] is not None] == val


def test_resume_crosses_epochs(tmp_path, varied_data):
    """Interrupt in one epoch, resume across several more: offsets and state resets line up."""
    cfg = small_cfg(n_seqs=8, n_steps=32, max_steps=60, eval_every=20)
    mc = ModelConfig(embed_size=8, hidden_size=16, n_layers=1, dropout=0.1)
    whole = train(varied_data, tmp_path / "w.safetensors", cfg, mc, progress_bar=False)
    per_epoch = (len(varied_data.split(0.1)[0]) - 32) // 8 // 32
    assert 2 * per_epoch < 60  # so the run below spans several epochs
    train(varied_data, tmp_path / "p.safetensors", cfg, mc, progress_bar=False, should_stop=stops_after(per_epoch + 3))
    train(varied_data, tmp_path / "p.safetensors", resume=True, progress_bar=False)
    assert_same(last_weights(tmp_path / "p.safetensors"), last_weights(tmp_path / "w.safetensors"))
    assert whole.steps == 60


def test_different_seeds_give_different_runs(tmp_path, varied_data, tiny_config):
    a = train(varied_data, tmp_path / "a.safetensors", small_cfg(seed=1), tiny_config, progress_bar=False)
    b = train(varied_data, tmp_path / "b.safetensors", small_cfg(seed=2), tiny_config, progress_bar=False)
    assert a.val_loss_nats != b.val_loss_nats


def test_resume_with_a_new_budget_continues(tmp_path, cat_data, tiny_config):
    out = tmp_path / "m.safetensors"
    train(cat_data, out, small_cfg(max_steps=20), tiny_config, progress_bar=False)
    more = train(cat_data, out, TrainConfig(max_steps=35), resume=True, progress_bar=False)
    assert more.steps == 35 and more.stopped == "budget"
    cfg = load_checkpoint(out).info["train_config"]
    assert (cfg["n_seqs"], cfg["n_steps"], cfg["lr"], cfg["max_steps"]) == (4, 16, 1e-2, 35)  # only the budget changed


def test_resume_after_the_budget_is_spent_does_nothing_more(tmp_path, cat_data, tiny_config):
    out = tmp_path / "m.safetensors"
    train(cat_data, out, small_cfg(max_steps=20), tiny_config, progress_bar=False)
    before = last_weights(out)
    again = train(cat_data, out, resume=True, progress_bar=False)
    assert again.steps == 20 and again.stopped == "budget"
    assert_same(last_weights(out), before)


def test_resume_needs_the_state_file(tmp_path, cat_data):
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(cat_data, tmp_path / "none.safetensors", resume=True, progress_bar=False)


def test_resume_refuses_other_text(tmp_path, cat_data, varied_data, tiny_config):
    out = tmp_path / "m.safetensors"
    train(cat_data, out, small_cfg(max_steps=10), tiny_config, progress_bar=False)
    with pytest.raises(CheckpointError, match="different text"):
        train(varied_data, out, resume=True, progress_bar=False)


def test_resume_and_init_from_are_exclusive(tmp_path, cat_data):
    with pytest.raises(ValueError, match="cannot be combined"):
        train(cat_data, tmp_path / "x.safetensors", resume=True, init_from=tmp_path / "y.safetensors")


def test_early_stop_after_patience_validations_without_improvement(tmp_path, cat_data, tiny_config):
    # a learning rate too small to move a float32 weight: validation can never improve
    cfg = small_cfg(lr=1e-20, warmup_steps=0, max_steps=200, eval_every=5, patience=3)
    result = train(cat_data, tmp_path / "m.safetensors", cfg, tiny_config, progress_bar=False)
    assert result.stopped == "early-stop"
    assert result.steps == 5 * (1 + 3)  # the first validation sets the best, three more fail to beat it
    assert load_checkpoint(tmp_path / "m.safetensors").info["steps"] == 5


def test_budget_by_epochs(tmp_path, cat_data, tiny_config):
    cfg = small_cfg(max_steps=None, epochs=0.5)
    per_epoch = (len(cat_data.split(0.1)[0]) - 16) // 4 // 16
    result = train(cat_data, tmp_path / "m.safetensors", cfg, tiny_config, progress_bar=False)
    assert result.steps == math.ceil(0.5 * per_epoch)


def test_budget_ending_between_validations_still_validates_the_last_weights(tmp_path, cat_data, tiny_config):
    result = train(cat_data, tmp_path / "m.safetensors", small_cfg(max_steps=17, eval_every=10), tiny_config,
                   progress_bar=False)
    evals = [h["step"] for h in result.history if h["val_loss"] is not None]
    assert evals == [10, 17]


def test_budget_by_minutes_validates_after_the_last_step(tmp_path, cat_data, tiny_config):
    result = train(cat_data, tmp_path / "m.safetensors", small_cfg(max_steps=None, minutes=0.02, eval_every=10**6),
                   tiny_config, progress_bar=False)
    assert result.stopped == "budget"
    assert result.history[-1]["step"] == result.steps and result.history[-1]["val_loss"] is not None
    assert result.val_loss_nats is not None


def test_interrupted_before_any_validation_leaves_an_older_checkpoint_alone(tmp_path, cat_data, tiny_model):
    out = tmp_path / "m.safetensors"
    save_checkpoint(out, tiny_model, {"mine": "precious"})
    before = out.read_bytes()
    result = train(cat_data, out, small_cfg(), tiny_model.config, progress_bar=False, should_stop=lambda: True)
    assert result.stopped == "interrupted" and result.steps == 0 and result.val_loss_nats is None
    assert out.read_bytes() == before
    assert resume_path(out).exists()


def test_interrupted_after_a_validation_keeps_the_best_so_far(tmp_path, cat_data, tiny_config):
    out = tmp_path / "m.safetensors"
    result = train(cat_data, out, small_cfg(), tiny_config, progress_bar=False, should_stop=stops_after(14))
    assert result.stopped == "interrupted" and result.steps == 14
    info = load_checkpoint(out).info
    assert info["stopped"] == "interrupted" and info["steps"] == 10
    assert info["val_loss_nats"] == result.val_loss_nats


def test_init_from_starts_from_the_given_weights(tmp_path, cat_data, varied_data, tiny_config):
    base = tmp_path / "base.safetensors"
    train(cat_data, base, small_cfg(max_steps=40), tiny_config, progress_bar=False)
    parent = load_checkpoint(base)
    fresh = CharLSTM(tiny_config).state_dict()

    # the weights at step 0 of the fine-tune, as its saved state shows, are the parent's
    out = tmp_path / "tuned.safetensors"
    first = train(varied_data, out, small_cfg(), init_from=base, progress_bar=False, should_stop=lambda: True)
    assert first.steps == 0
    start = {k[len("model."):]: v for k, v in last_weights(out).items()}
    assert_same(start, parent.model.state_dict())
    assert not torch.equal(start["head.weight"], fresh["head.weight"])

    tuned = train(varied_data, tmp_path / "tuned2.safetensors", small_cfg(max_steps=10, eval_every=10),
                  model_cfg=ModelConfig(hidden_size=8, n_layers=1), init_from=base, progress_bar=False)
    ck = load_checkpoint(tmp_path / "tuned2.safetensors")
    assert ck.config == tiny_config  # the parent's shape wins over a model_cfg passed along
    assert ck.info["parent"]["path"] == str(base)
    assert tuned.steps == 10


def test_a_checkpoint_continued_twice_records_its_whole_ancestry(tmp_path, cat_data, varied_data, tiny_config):
    first, second, third = (tmp_path / f"{name}.safetensors" for name in ("first", "second", "third"))
    train(cat_data, first, small_cfg(max_steps=10), tiny_config, progress_bar=False)
    train(varied_data, second, small_cfg(max_steps=10), init_from=first, progress_bar=False)
    train(varied_data, third, small_cfg(max_steps=10), init_from=second, progress_bar=False)
    infos = [load_checkpoint(path).info for path in (first, second, third)]
    for path in (first, second):  # the files may go: the record says what they were
        path.unlink()

    record = infos[2]["parent"]
    assert record["path"] == str(second) and record["parent"]["path"] == str(first)
    assert record["parent"]["parent"] is None  # the first was trained from scratch
    for got, info in ((record, infos[1]), (record["parent"], infos[0])):
        for key in ("corpus", "val_loss_nats", "train_seconds", "chars_seen"):
            assert got[key] == info[key]


def test_init_from_a_bad_checkpoint_is_a_checkpoint_error(tmp_path, cat_data):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("nope")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        train(cat_data, tmp_path / "x.safetensors", small_cfg(), init_from=bad, progress_bar=False)


def test_progress_reports_fraction_and_eta(tmp_path, cat_data, tiny_config):
    seen = []
    train(cat_data, tmp_path / "m.safetensors", small_cfg(), tiny_config, progress_bar=False,
          on_progress=seen.append)
    assert [p.step for p in seen] == [5, 10, 15, 20, 25, 30]
    assert [p.fraction for p in seen] == pytest.approx([s / 30 for s in (5, 10, 15, 20, 25, 30)])
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0
    assert [p.val_loss is not None for p in seen] == [False, True, False, True, False, True]
    assert all(p.chars_per_s > 0 for p in seen)


def test_progress_of_a_resumed_run_counts_from_where_it_was(tmp_path, cat_data, tiny_config):
    out = tmp_path / "m.safetensors"
    train(cat_data, out, small_cfg(), tiny_config, progress_bar=False, should_stop=iter([False] * 12 + [True]).__next__)
    seen = []
    train(cat_data, out, resume=True, progress_bar=False, on_progress=seen.append)
    assert seen[0].step == 15 and seen[0].fraction == pytest.approx(0.5)
    assert seen[0].eta_s is not None


def test_progress_bar_runs(tmp_path, cat_data, tiny_config, capsys):
    train(cat_data, tmp_path / "m.safetensors", small_cfg(max_steps=10), tiny_config, progress_bar=True)
    err = capsys.readouterr().err
    assert "100%" in err and "step 10" in err and "char/s" in err


def test_text_too_short_for_the_batches(tmp_path, tiny_config):
    data = TextData.from_text("short.txt", CAT * 3)
    with pytest.raises(ValueError, match="short.txt: training part text too short"):
        train(data, tmp_path / "m.safetensors", small_cfg(n_seqs=16, n_steps=32), tiny_config, progress_bar=False)


def test_text_with_nothing_usable(tmp_path, tiny_config):
    data = TextData.from_text("emoji.txt", "\U0001f600" * 50)
    with pytest.raises(ValueError, match="emoji.txt: no text to train on \\(50 characters could not be used\\)"):
        train(data, tmp_path / "m.safetensors", small_cfg(), tiny_config, progress_bar=False)


def test_validation_part_too_small(tmp_path, tiny_config):
    data = TextData.from_text("tiny.txt", "abcdefghij")
    with pytest.raises(ValueError, match="held-out split too small"):
        train(data, tmp_path / "m.safetensors", small_cfg(), tiny_config, progress_bar=False)


def test_an_unwritable_output_fails_before_any_training(tmp_path, cat_data, tiny_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    asked: list[bool] = []

    def never() -> bool:
        asked.append(True)
        return False

    with pytest.raises(OSError):
        train(cat_data, blocker / "m.safetensors", small_cfg(), tiny_config, progress_bar=False, should_stop=never)
    assert asked == []


def test_threads_are_restored_after_training(tmp_path, cat_data, tiny_config):
    before = torch.get_num_threads()
    train(cat_data, tmp_path / "m.safetensors", small_cfg(max_steps=5), tiny_config, progress_bar=False, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [{"lr": 0}, {"lr": float("nan")}, {"patience": 0}, {"warmup_steps": -1},
                                 {"val_fraction": 1.0}, {"grad_clip": 0}, {"max_steps": 0}, {"minutes": -1},
                                 {"n_seqs": 0}, {"threads": 0}, {"precision": "fp16"}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_default_budget_is_one_epoch():
    assert TrainConfig().epochs == 1.0
    assert TrainConfig(max_steps=5).epochs is None


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-2, warmup_steps=100, min_lr_ratio=0.1, max_steps=10_000)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 49, 0.005) == pytest.approx(0.5e-2, rel=1e-3)
    assert lr_at(cfg, 100, 0.01) == pytest.approx(1e-2, rel=1e-3)
    assert lr_at(cfg, 5000, 0.5) == pytest.approx(0.55e-2)
    assert lr_at(cfg, 10_000, 1.0) == pytest.approx(1e-3)
    lrs = [lr_at(cfg, s, s / 10_000) for s in range(100, 10_001, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # never rises after the warm-up


def test_warm_up_is_never_more_than_five_percent_of_the_budget():
    cfg = TrainConfig(lr=1e-2, warmup_steps=100, max_steps=40)
    assert lr_at(cfg, 2, 2 / 40) == pytest.approx(lr_at(TrainConfig(lr=1e-2, warmup_steps=0, max_steps=40), 2, 2 / 40))
    assert lr_at(cfg, 0, 0.0) < lr_at(cfg, 1, 1 / 40) < lr_at(cfg, 2, 2 / 40)
