"""Training on CUDA: bf16 only where the GPU has it, the loss falls, the checkpoint scores the
same on a CPU, and an interrupted run resumes where it stopped."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_loss
from model.network import ModelConfig
from model.train import TrainConfig, train
from tests.model.test_train import (  # noqa: F401 (varied_data is a fixture)
    assert_same,
    last_weights,
    stops_after,
    varied_data,
    weights,
)

pytestmark = pytest.mark.cuda


def cuda_cfg(**kw) -> TrainConfig:
    base = dict(n_seqs=8, n_steps=32, lr=1e-2, warmup_steps=3, eval_every=25, log_every=5, max_steps=50, seed=5,
                device="cuda", precision="auto")
    return TrainConfig(**{**base, **kw})


def test_fifty_steps_on_cuda_learn_and_the_checkpoint_scores_the_same_on_cpu(tmp_path, varied_data):  # noqa: F811
    out = tmp_path / "gpu.safetensors"
    mc = ModelConfig(embed_size=16, hidden_size=64, n_layers=2, dropout=0.1)
    result = train(varied_data, out, cuda_cfg(), mc, progress_bar=False)
    assert result.steps == 50
    losses = [h["train_loss"] for h in result.history if h["train_loss"] is not None]
    assert losses[-1] < losses[0] - 0.5, losses
    ck = load_checkpoint(out)  # on the CPU
    want = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert ck.info["precision"] == want and ck.info["device"] == torch.cuda.get_device_name(0)
    _, val = varied_data.split(cuda_cfg().val_fraction)
    on_cpu = evaluate_loss(ck.model, val)
    assert abs(on_cpu - ck.info["val_loss_nats"]) < 1e-3, (on_cpu, ck.info["val_loss_nats"])


@pytest.mark.parametrize("stop_after", [10, 23])
def test_an_interrupted_cuda_run_resumes_where_it_stopped(tmp_path, varied_data, stop_after):  # noqa: F811
    """Bit for bit, without dropout between the LSTM layers (cuDNN's dropout state cannot be restored)."""
    mc = ModelConfig(embed_size=8, hidden_size=24, n_layers=2, dropout=0.0)
    cfg = cuda_cfg(max_steps=40, eval_every=10, precision="fp32")
    whole = train(varied_data, tmp_path / "whole.safetensors", cfg, mc, progress_bar=False)
    part = tmp_path / "part.safetensors"
    first = train(varied_data, part, cfg, mc, progress_bar=False, should_stop=stops_after(stop_after))
    assert first.steps == stop_after
    second = train(varied_data, part, resume=True, progress_bar=False)
    assert second.steps == 40 and second.chars_seen == whole.chars_seen
    assert_same(last_weights(part), last_weights(tmp_path / "whole.safetensors"))
    assert_same(weights(part), weights(tmp_path / "whole.safetensors"))
