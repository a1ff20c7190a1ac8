"""The network: shapes, carried state, and configuration checks."""

from __future__ import annotations

import pytest
import torch

from model.charset import VOCAB_SIZE
from model.network import CharLSTM, ModelConfig


def test_forward_shapes(tiny_model, tiny_config):
    x = torch.randint(0, VOCAB_SIZE, (3, 7))
    logits, (h, c) = tiny_model(x)
    assert logits.shape == (3, 7, VOCAB_SIZE)
    assert h.shape == c.shape == (tiny_config.n_layers, 3, tiny_config.hidden_size)


def test_state_carries_across_calls(tiny_model):
    """Reading a text in two pieces with the state carried equals reading it at once (what BPTT relies on)."""
    x = torch.randint(0, VOCAB_SIZE, (2, 12))
    with torch.no_grad():
        whole, _ = tiny_model(x)
        first, state = tiny_model(x[:, :5])
        second, _ = tiny_model(x[:, 5:], state)
        fresh, _ = tiny_model(x[:, 5:])
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    assert not torch.allclose(fresh, second)  # the state really matters


def test_zero_state_equals_no_state(tiny_model):
    x = torch.randint(0, VOCAB_SIZE, (2, 4))
    with torch.no_grad():
        a, _ = tiny_model(x)
        b, _ = tiny_model(x, tiny_model.init_state(2))
    assert torch.equal(a, b)


def test_param_count_and_config_dict(tiny_config):
    model = CharLSTM(tiny_config)
    assert model.n_params() == sum(p.numel() for p in model.parameters()) > 0
    assert ModelConfig(**tiny_config.to_dict()) == tiny_config


def test_default_model_is_two_layers_of_512():
    cfg = ModelConfig()
    assert (cfg.n_layers, cfg.hidden_size, cfg.vocab_size) == (2, 512, VOCAB_SIZE)


@pytest.mark.parametrize("bad", [{"hidden_size": 0}, {"n_layers": 0}, {"embed_size": -1}, {"dropout": 1.0},
                                 {"dropout": -0.1}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)
