"""Shared fixtures: tiny models and texts so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("CHARBOT_TEST", "1")


@pytest.fixture
def tiny_config():
    from charbot.model.network import ModelConfig

    return ModelConfig(embed_size=8, hidden_size=32, n_layers=2, dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config):
    from charbot.model.network import CharLSTM

    torch.manual_seed(0)
    return CharLSTM(tiny_config).eval()


@pytest.fixture
def repeating_text() -> str:
    return "the cat sat on the mat. " * 200
