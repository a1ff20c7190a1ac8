"""Device, threads and precision: auto picks what exists and what is fast; anything else is a clear error."""

from __future__ import annotations

import pytest
import torch

from model import device as device_mod
from model.device import (
    bf16_matmul_supported,
    check_precision,
    cpu_threads,
    pick_device,
    resolve_precision,
    training_precision,
)


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device(None).type == expected
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta"])
def test_unknown_or_unsupported(name):
    with pytest.raises(ValueError, match=repr(name)):
        pick_device(name)


def test_threads_are_at_least_one_and_generation_takes_at_most_four():
    assert cpu_threads("training") >= 1
    assert 1 <= cpu_threads("generation") <= 4
    with pytest.raises(ValueError, match="use"):
        cpu_threads("serving")


def test_bf16_availability_is_a_plain_answer():
    assert bf16_matmul_supported() in (True, False)


def test_precision_names_are_checked():
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        check_precision("fp16")


def test_generation_uses_bf16_only_on_a_cpu_that_has_it():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if bf16_matmul_supported() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_auto_precision_is_bf16_only_where_it_is_fast(monkeypatch):
    monkeypatch.setattr(device_mod, "cuda_bf16_supported", lambda: True)
    assert training_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(device_mod, "cuda_bf16_supported", lambda: False)  # a pre-Ampere GPU
    assert training_precision("auto", torch.device("cuda")) == "fp32"
    monkeypatch.undo()
    assert training_precision("auto", torch.device("cpu")) == ("bf16" if bf16_matmul_supported() else "fp32")
    assert training_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        training_precision("half", torch.device("cpu"))
