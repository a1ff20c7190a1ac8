"""Fixtures for fine-tuning tests: a small trained base checkpoint and contributed texts."""

from __future__ import annotations

import random

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.network import CharLSTM, ModelConfig
from model.textdata import TextData
from model.train import TrainConfig, train

WORDS = ("the old lighthouse keeper counted ships while gulls argued over herring on the pier "
         "and every evening his lamp swept the grey water").split()


def contributed_texts(n: int = 8, words: int = 60, seed: int = 0) -> list[str]:
    """Sentences in a vocabulary the base model never saw: learnable, but new to it."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory) -> str:
    """A tiny model trained briefly on other text, standing in for a corpus's served checkpoint."""
    path = tmp_path_factory.mktemp("base") / "tale.safetensors"
    torch.manual_seed(0)
    data = TextData.from_text("tale", "Once upon a time a princess sat by the well and wept. " * 80)
    cfg = TrainConfig(n_seqs=8, n_steps=32, max_steps=150, lr=1e-2, eval_every=50, warmup_steps=5, threads=1)
    train(data, path, cfg, ModelConfig(embed_size=8, hidden_size=32, n_layers=1, dropout=0.0), progress_bar=False)
    return str(path)


@pytest.fixture
def random_checkpoint(tmp_path) -> str:
    path = tmp_path / "random.safetensors"
    torch.manual_seed(1)
    save_checkpoint(path, CharLSTM(ModelConfig(embed_size=8, hidden_size=16, n_layers=1, dropout=0.0)))
    return str(path)
