"""Device choice: auto picks what exists; a device that is not there is a clear error."""

from __future__ import annotations

import pytest
import torch

from model.device import pick_device


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
