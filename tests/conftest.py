"""Shared fixtures: tiny models and texts so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("CHARBOT_TEST", "1")


@pytest.fixture
def tiny_config():
    from model.network import ModelConfig

    return ModelConfig(embed_size=8, hidden_size=32, n_layers=2, dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config):
    from model.network import CharLSTM

    torch.manual_seed(0)
    return CharLSTM(tiny_config).eval()


@pytest.fixture
def repeating_text() -> str:
    return "the cat sat on the mat. " * 200


@pytest.fixture
def tiny_checkpoint_dir(tmp_path, tiny_config):
    """A folder holding a tiny untrained ``<corpus>.safetensors`` for every registered corpus.

    Untrained means near-uniform gibberish, but the same seed always gives the same text, which is
    what tests of the bot and its CLI need; point CHARBOT_CHECKPOINT_DIR or ``--checkpoints`` here.
    """
    from corpora.registry import CORPORA
    from model.checkpoint import save_checkpoint
    from model.network import CharLSTM

    folder = tmp_path / "checkpoints"
    for i, name in enumerate(CORPORA):
        torch.manual_seed(i)
        save_checkpoint(folder / f"{name}.safetensors", CharLSTM(tiny_config).eval(),
                        {"corpus": name, "val_loss_nats": 3.0 + i, "n_params": CharLSTM(tiny_config).n_params()})
    return folder
