"""Training-only regularisation: each option changes training, never inference, and a run with it still learns,
resumes exactly and leaves checkpoints the engine reads as before."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import regularise
from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_loss
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig
from model.regularise import Regularisation, Regularised, regularised_forward
from model.textdata import TextData
from model.train import TrainConfig, resume_path, train
from tests.model.stepping import TEXT, teacher_forced

OPTIONS = {
    "weight_drop": 0.5,
    "embed_dropout": 0.2,
    "input_dropout": 0.3,
    "layer_dropout": 0.3,
    "output_dropout": 0.3,
}
ALL_ON = Regularisation(**OPTIONS)


def model_of(layers: int = 2, dropout: float = 0.0, seed: int = 0) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(ModelConfig(embed_size=8, hidden_size=32, n_layers=layers, dropout=dropout))


def batch(seed: int = 1, rows: int = 4, steps: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 96, (rows, steps + 1), generator=g)
    return codes[:, :-1], codes[:, 1:]


def loss_and_grads(net: torch.nn.Module, model: CharLSTM, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits, _ = net(x, model.init_state(x.shape[0]))
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_with_every_rate_zero_the_functional_path_is_the_model_bit_for_bit(layers):
    """The layer-by-layer pass calls the kernel nn.LSTM calls: nothing but the regularisers differs."""
    model = model_of(layers).train()
    x, _ = batch()
    state = (torch.randn(layers, 4, 32), torch.randn(layers, 4, 32))
    want, (wh, wc) = model(x, state)
    got, (gh, gc) = regularised_forward(model, x, state, Regularisation())
    assert torch.equal(got, want) and torch.equal(gh, wh) and torch.equal(gc, wc)


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_changes_training(option):
    model = model_of().train()
    x, y = batch()
    plain_loss, plain_grads = loss_and_grads(model, model, x, y)
    torch.manual_seed(7)
    reg_loss, reg_grads = loss_and_grads(Regularised(model, Regularisation(**{option: OPTIONS[option]})), model, x, y)
    assert reg_loss != plain_loss
    assert any(not torch.equal(plain_grads[k], reg_grads[k]) for k in plain_grads)


@pytest.mark.parametrize("option", OPTIONS)
def test_no_option_changes_inference(option):
    """In eval mode the wrapper is the model's own forward: the same logits and state, bit for bit."""
    model = model_of(dropout=0.2).eval()
    x, _ = batch()
    with torch.no_grad():
        want, (wh, wc) = model(x)
        got, (gh, gc) = Regularised(model, Regularisation(**{option: OPTIONS[option]}))(x)
    assert torch.equal(got, want) and torch.equal(gh, wh) and torch.equal(gc, wc)


def test_masks_come_from_the_default_generator():
    """Same seed, same masks (what makes resume exact); another seed, other masks."""
    model = model_of().train()
    x, _ = batch()
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(regularised_forward(model, x, None, ALL_ON)[0])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_locked_masks_are_shared_over_time_and_differ_between_sequences():
    x = torch.ones(6, 50, 40)
    torch.manual_seed(0)
    out = regularise.locked_dropout(x, 0.5)
    assert torch.equal(out, out[:, :1].expand_as(out))  # one mask per sequence, every step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert not torch.equal(out[0], out[1])


def test_embedding_dropout_drops_whole_characters_per_sequence():
    embed = torch.nn.Embedding(96, 8)
    torch.nn.init.constant_(embed.weight, 1.0)
    idx = torch.randint(0, 5, (8, 60), generator=torch.Generator().manual_seed(0))  # few characters, repeated
    torch.manual_seed(1)
    out = regularise.embedding_dropout(embed, idx, 0.5)
    for row in range(8):
        for code in idx[row].unique():
            values = out[row][idx[row] == code]
            assert torch.equal(values, values[:1].expand_as(values))  # a character is dropped everywhere or nowhere
    assert set(out.unique().tolist()) == {0.0, 2.0}


def test_weight_drop_drops_recurrent_weights_only_while_training():
    model = model_of().train()
    before = model.lstm.weight_hh_l0.detach().clone()
    x, _y = batch()
    torch.manual_seed(0)
    regularised_forward(model, x, None, Regularisation(weight_drop=0.5))
    assert torch.equal(model.lstm.weight_hh_l0, before)  # a dropped copy is used; the parameter is untouched


@pytest.mark.parametrize("bad", [{"weight_drop": 1.0}, {"embed_dropout": -0.1}, {"input_dropout": float("nan")},
                                 {"layer_dropout": 1.5}, {"output_dropout": "0.2"}])
def test_bad_rates_are_refused(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        TrainConfig(**bad)
    with pytest.raises(ValueError, match=name):
        Regularisation(**bad)


def test_layer_dropout_needs_two_layers(tmp_path):
    data = TextData.from_text("cat", "the cat sat on the mat. " * 100)
    cfg = TrainConfig(n_seqs=4, n_steps=16, max_steps=2, device="cpu", layer_dropout=0.2)
    with pytest.raises(ValueError, match="layer_dropout needs an LSTM of at least 2 layers"):
        train(data, tmp_path / "m.safetensors", cfg, ModelConfig(embed_size=8, hidden_size=16, n_layers=1),
              progress_bar=False)


@pytest.fixture(scope="module")
def words() -> TextData:
    """Text a tiny model cannot learn perfectly, so losses keep moving and runs can differ."""
    g = torch.Generator().manual_seed(3)
    vocab = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]
    picks = torch.randint(0, len(vocab), (1500,), generator=g).tolist()
    return TextData.from_text("words", " ".join(vocab[i] for i in picks) + ".\n")


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(n_seqs=4, n_steps=16, lr=1e-2, warmup_steps=3, eval_every=10, log_every=5, max_steps=30, seed=5,
                device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


TINY = ModelConfig(embed_size=8, hidden_size=32, n_layers=2, dropout=0.0)


LEARN = {"weight_drop": 0.3, "embed_dropout": 0.1, "input_dropout": 0.1, "layer_dropout": 0.2, "output_dropout": 0.2}
CAT_DOG = "the cat sat on the mat. the dog ate the log. "
CAT_DOG_UNIGRAM_NATS = 2.29  # the loss of a model that knows only how often each character occurs


@pytest.mark.parametrize("option", [*LEARN, "all"])
def test_a_tiny_run_with_each_option_learns(tmp_path, option):
    """From ln 96 = 4.56 nats to far below the unigram loss in 300 tiny steps, each option on (and all of them);
    without any the same run reaches 0.49, with each 0.57-1.20 (more noise to learn through, on text with
    nothing to overfit)."""
    data = TextData.from_text("cat", CAT_DOG * 120)
    rates = LEARN if option == "all" else {option: LEARN[option]}
    cfg = tiny_cfg(n_seqs=8, n_steps=32, lr=3e-2, warmup_steps=5, max_steps=300, eval_every=100, log_every=20,
                   **rates)
    result = train(data, tmp_path / "m.safetensors", cfg, TINY, progress_bar=False)
    assert result.val_loss_nats < CAT_DOG_UNIGRAM_NATS - 0.8, result.history
    losses = [h["train_loss"] for h in result.history if h["train_loss"] is not None]
    assert losses[-1] < losses[0] / 2


def test_resumed_run_with_every_option_equals_uninterrupted(tmp_path, words):
    """The masks come from the generators the state file saves, so resume stays exact with every option on,
    also at a longer BPTT length than the default tests use."""
    cfg = tiny_cfg(max_steps=30, n_steps=48, **OPTIONS)
    mc = ModelConfig(embed_size=8, hidden_size=24, n_layers=2, dropout=0.2)
    whole = train(words, tmp_path / "whole.safetensors", cfg, mc, progress_bar=False)
    part = tmp_path / "part.safetensors"
    calls = iter(range(100))
    first = train(words, part, cfg, mc, progress_bar=False, should_stop=lambda: next(calls) >= 13)
    assert first.stopped == "interrupted" and first.steps == 13
    second = train(words, part, resume=True, progress_bar=False)
    assert second.steps == 30
    a, b = load_checkpoint(part).model.state_dict(), load_checkpoint(tmp_path / "whole.safetensors").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    val = [h["val_loss"] for h in whole.history if h["val_loss"] is not None]
    assert [h["val_loss"] for h in second.history if h["val_loss"] is not None] == val
    assert resume_path(part).exists()


def test_options_are_recorded_and_the_checkpoint_is_an_ordinary_one(tmp_path, words):
    """Same parameter names and shapes as an unregularised model; the engine computes on it exactly what it
    computes on the same weights in a plain CharLSTM; the recorded loss is the plain model's."""
    out = tmp_path / "reg.safetensors"
    result = train(words, out, tiny_cfg(**OPTIONS), TINY, progress_bar=False)
    ck = load_checkpoint(out)
    for name, rate in OPTIONS.items():
        assert ck.info["train_config"][name] == rate
    plain = CharLSTM(TINY)
    assert {k: v.shape for k, v in ck.model.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(ck.model.state_dict())
    plain.eval()
    texts = [TEXT[i : i + 30] for i in (0, 11)]
    assert torch.equal(teacher_forced(FastStep(ck.model.eval(), 2), texts), teacher_forced(FastStep(plain, 2), texts))
    _, val = words.split(0.1)
    assert evaluate_loss(ck.model, val) == result.val_loss_nats


def test_with_every_option_off_the_step_never_goes_through_the_wrapper(tmp_path, words, monkeypatch):
    """Off means today's training, bit for bit: the optimizer step calls the model itself."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("the wrapper was called with every option off")

    monkeypatch.setattr(Regularised, "forward", refuse)
    train(words, tmp_path / "m.safetensors", tiny_cfg(max_steps=5), TINY, progress_bar=False)
    with pytest.raises(AssertionError, match="wrapper was called"):
        train(words, tmp_path / "n.safetensors", tiny_cfg(max_steps=5, weight_drop=0.1), TINY, progress_bar=False)
