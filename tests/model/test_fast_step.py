"""The fused step at each lower precision: within its stated fidelity bound of the fp32
reference on real text, and a row's result does not depend on the batch around it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from corpora.heldout import corpus_heldout
from model import device as device_mod
from model import fused_step
from model.checkpoint import Checkpoint, load_checkpoint
from model.device import generation_precisions, resolve_precision
from model.engine import Engine
from model.fast_step import FastStep
from model.precision import parse
from model.sample import SampleSettings
from tests.model.stepping import TEXT, teacher_forced

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"
# The bounds for a precision the engine may serve: mean KL against the fp32 reference
# and how often the most likely next character is the same.
MAX_KL_MEAN = 1e-3  # nats per character
MIN_TOP1 = 0.99
LOWER = [p for p in ("bf16", "int8") if p in generation_precisions(torch.device("cpu"))]
# The fused step's lower precision, where its kernel builds (model/fused_step.py)
FUSED_LOWER = ["bf16 fused", "int8 fused"] if fused_step.load_kernel() is not None else []


def _held_out_codes(corpus: str, chars: int) -> torch.Tensor:
    codes, why = corpus_heldout(corpus, chars)
    if codes is None:
        pytest.skip(f"no held-out text: {why}")
    return codes[:chars]


@pytest.mark.parametrize("candidate", LOWER + FUSED_LOWER)
@pytest.mark.parametrize("corpus", ["tale", "faq"])
def test_shipped_model_stays_within_the_bounds_on_held_out_text(corpus, candidate):
    ck = load_checkpoint(SHIPPED / f"{corpus}.safetensors")
    codes = _held_out_codes(corpus, 1500)
    precision, step = parse(candidate)
    with torch.no_grad():
        ref = F.log_softmax(ck.model(codes.view(1, -1))[0][0].float(), -1)
        fast = FastStep(ck.model, 1, precision=precision, step=step)
        assert fast.path == step
        fast.set_row(0, (torch.zeros(fast.n_layers, 1, fast.hidden),) * 2, torch.zeros(fast.vocab))
        rows = []
        for code in codes.tolist():
            fast.codes[0] = code
            rows.append(fast.step(1)[0].clone())
        low = F.log_softmax(torch.stack(rows), -1)
    kl = (ref.exp() * (ref - low)).sum(-1).clamp_min(0)
    top1 = (ref.argmax(-1) == low.argmax(-1)).float().mean().item()
    assert kl.mean().item() <= MAX_KL_MEAN
    assert top1 >= MIN_TOP1


@pytest.mark.skipif("int8" not in LOWER, reason="no oneDNN int8 linear in this PyTorch")
def test_int8_row_gets_the_same_bits_in_any_batch(trained):
    alone, crowd = FastStep(trained, 8, precision="int8"), FastStep(trained, 8, precision="int8")
    texts = [TEXT[i : i + 25] for i in (0, 4, 9, 13, 21)]
    assert torch.equal(teacher_forced(alone, texts[:1])[:, 0], teacher_forced(crowd, texts)[:, 0])


@pytest.mark.skipif("int8" not in LOWER, reason="no oneDNN int8 linear in this PyTorch")
def test_int8_engine_gives_the_same_text_alone_and_in_a_crowd(trained):
    settings = [SampleSettings(seed=s, max_chars=120, temperature=0.8) for s in range(6)]
    with Engine(Checkpoint(trained, trained.config), precision="int8", max_batch=8) as eng:
        assert eng.precision == "int8"
        alone = [eng.submit("the ", s).result(timeout=60).text for s in settings]
        crowd = [eng.submit("the ", s) for s in settings]
        assert [f.result(timeout=60).text for f in crowd] == alone
    assert len(set(alone)) > 1  # the seeds matter: the test is not comparing empty replies


@pytest.mark.skipif("int8" not in LOWER, reason="no oneDNN int8 linear in this PyTorch")
def test_int8_state_round_trips_through_set_row(trained):
    """A reply moved between rows, or handed over from nn.LSTM, continues exactly as before."""
    fast = FastStep(trained, 4, precision="int8")
    twin = FastStep(trained, 4, precision="int8")
    zeros = (torch.zeros(fast.n_layers, 1, fast.hidden),) * 2
    for step in (fast, twin):
        step.set_row(0, zeros, torch.zeros(step.vocab))
    for code in (5, 9, 11):
        fast.codes[0] = twin.codes[0] = code
        fast.step(1)
        twin.step(1)
    fast.set_row(2, twin.state(0), twin.logits[0])
    fast.move_row(2, 1)
    fast.codes[0] = fast.codes[1] = 7
    out = fast.step(2)
    assert torch.equal(out[0], out[1])


def test_int8_where_it_is_missing_is_a_clear_error(trained, monkeypatch):
    monkeypatch.setattr(device_mod, "int8_matmul_supported", lambda: False)
    assert "int8" not in generation_precisions(torch.device("cpu"))
    with pytest.raises(ValueError, match="int8 is not available"):
        FastStep(trained, 1, precision="int8")
    with pytest.raises(ValueError, match="int8 is not available on a GPU"):
        resolve_precision("int8", torch.device("cuda"))
