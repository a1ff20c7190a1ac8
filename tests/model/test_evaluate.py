"""Evaluation: the mean next-character loss, read in parallel streams with the state carried."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.charset import VOCAB_SIZE, encode, normalize
from model.evaluate import bits, evaluate_loss, scored_chars, stream_layout

TEXT = normalize("It was the best of times, it was the worst of times.\n" * 30).text


def manual_loss(model, codes: torch.Tensor, n_streams: int) -> float:
    """One forward pass per stream over its whole length: what chunked evaluation must equal."""
    length = (len(codes) - 1) // n_streams
    x = codes[: n_streams * length].view(n_streams, length)
    y = codes[1 : n_streams * length + 1].view(n_streams, length)
    with torch.no_grad():
        logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y.reshape(-1)).item()


def test_untrained_model_is_near_uniform(tiny_model):
    loss = evaluate_loss(tiny_model, encode(TEXT))
    assert abs(loss - math.log(VOCAB_SIZE)) < 0.3


def test_chunked_evaluation_equals_one_long_pass(tiny_model):
    codes = encode(TEXT)
    n_streams, _ = stream_layout(len(codes), 4)
    assert n_streams == 4
    got = evaluate_loss(tiny_model, codes, n_streams=4, n_steps=37)
    assert got == pytest.approx(manual_loss(tiny_model, codes, 4), rel=1e-5)


def test_state_is_carried_between_chunks(tiny_model):
    codes = encode(TEXT)
    carried = evaluate_loss(tiny_model, codes, n_streams=1, n_steps=16)
    assert carried == pytest.approx(manual_loss(tiny_model, codes, 1), rel=1e-5)


def test_max_chars(tiny_model):
    codes = encode(TEXT)
    assert evaluate_loss(tiny_model, codes, max_chars=200) == pytest.approx(evaluate_loss(tiny_model, codes[:201]))
    assert scored_chars(len(codes), 200) == 200 - 200 % stream_layout(201)[0]
    with pytest.raises(ValueError, match="max_chars"):
        evaluate_loss(tiny_model, codes, max_chars=0)


def test_short_texts(tiny_model):
    assert stream_layout(2) == (1, 1)
    assert stream_layout(129) == (2, 64)
    assert evaluate_loss(tiny_model, encode("ab")) > 0
    with pytest.raises(ValueError, match="at least 2 characters"):
        evaluate_loss(tiny_model, encode("a"))


def test_training_mode_is_restored(tiny_model):
    tiny_model.train()
    evaluate_loss(tiny_model, encode(TEXT))
    assert tiny_model.training
    tiny_model.eval()
    evaluate_loss(tiny_model, encode(TEXT))
    assert not tiny_model.training


def test_dropout_does_not_leak_into_evaluation(tiny_config):
    from dataclasses import replace

    from model.network import CharLSTM

    torch.manual_seed(0)
    model = CharLSTM(replace(tiny_config, dropout=0.5)).train()
    codes = encode(TEXT)
    assert evaluate_loss(model, codes) == evaluate_loss(model, codes)


def test_bits():
    assert bits(math.log(2)) == pytest.approx(1.0)
    assert bits(math.log(VOCAB_SIZE)) == pytest.approx(math.log2(96))
