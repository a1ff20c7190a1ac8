"""The gate before serving: a damaged or diverged checkpoint is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.verify import verify_checkpoint


def test_a_good_checkpoint_passes(random_checkpoint):
    ck, loss = verify_checkpoint(random_checkpoint)
    assert loss > 0 and ck.config.hidden_size == 16


def test_a_flipped_byte_is_refused(random_checkpoint):
    data = bytearray(Path(random_checkpoint).read_bytes())
    data[-10] ^= 0xFF
    Path(random_checkpoint).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        verify_checkpoint(random_checkpoint)


def test_a_truncated_file_is_refused(random_checkpoint):
    data = Path(random_checkpoint).read_bytes()
    Path(random_checkpoint).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        verify_checkpoint(random_checkpoint)


def test_nan_weights_are_refused(random_checkpoint, tmp_path):
    ck = load_checkpoint(random_checkpoint)
    with torch.no_grad():
        ck.model.head.bias[0] = float("nan")
    save_checkpoint(tmp_path / "nan.safetensors", ck.model)
    with pytest.raises(CheckpointError, match="NaN"):
        verify_checkpoint(tmp_path / "nan.safetensors")
