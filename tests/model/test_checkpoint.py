"""Safe checkpoints: identical outputs after a round trip, and every kind of bad file is one clear error."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from model import checkpoint as ckmod
from model.charset import VOCAB_SIZE
from model.checkpoint import (
    FILE_MODE,
    CheckpointError,
    ancestry,
    complete_parent,
    file_sha256,
    load_checkpoint,
    read_tensor_file,
    save_checkpoint,
    write_tensor_file,
)


@pytest.fixture
def saved(tmp_path, tiny_model):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model, {"corpus": "cats", "val_loss_nats": 1.25})
    return path


def header_len(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_round_trip_gives_identical_outputs(saved, tiny_model, tiny_config):
    ck = load_checkpoint(saved)
    assert ck.config == tiny_config
    assert ck.info == {"corpus": "cats", "val_loss_nats": 1.25}
    assert ck.path == str(saved)
    assert not ck.model.training
    x = torch.randint(0, VOCAB_SIZE, (2, 9))
    with torch.no_grad():
        expected, (h0, c0) = tiny_model(x)
        got, (h1, c1) = ck.model(x)
    assert torch.equal(expected, got)
    assert torch.equal(h0, h1) and torch.equal(c0, c1)
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(value, ck.model.state_dict()[name])


def test_half_precision_copy_loads_as_float32(tmp_path, saved, tiny_model):
    path = tmp_path / "bf16.safetensors"
    save_checkpoint(path, tiny_model, dtype=torch.bfloat16)
    assert path.stat().st_size < saved.stat().st_size
    ck = load_checkpoint(path)
    w = ck.model.head.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, tiny_model.head.weight.detach(), atol=1e-2, rtol=1e-2)


def expect_error(path, *words: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "no such file")


def test_directory(tmp_path):
    expect_error(tmp_path, "not a regular file")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 100])
    expect_error(saved, "truncated or corrupt")


def test_truncated_inside_the_header(saved):
    saved.write_bytes(saved.read_bytes()[:40])
    expect_error(saved, "truncated or corrupt")


def test_empty_file(saved):
    saved.write_bytes(b"")
    expect_error(saved, "truncated or corrupt")


def test_one_altered_byte_in_the_tensor_data(saved):
    data = bytearray(saved.read_bytes())
    at = 8 + header_len(saved) + (len(data) - 8 - header_len(saved)) // 2
    data[at] ^= 0x01
    saved.write_bytes(bytes(data))
    expect_error(saved, "checksum", "altered or damaged")


def test_altered_byte_in_the_last_tensor_byte(saved):
    data = bytearray(saved.read_bytes())
    data[-1] ^= 0x80
    saved.write_bytes(bytes(data))
    expect_error(saved, "checksum")


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"framework": "somebody else"})
    expect_error(path, "not a charbot-checkpoint file")


def test_non_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are my notes, not a model\n" * 20)
    expect_error(path, "not a readable safetensors file")


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path, tiny_model):
    path = tmp_path / "old.pt"
    torch.save(tiny_model.state_dict(), path)
    expect_error(path, "not a readable safetensors file")


def test_wrong_charset_version(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "future.safetensors"
    monkeypatch.setattr(ckmod, "CHARSET_VERSION", 2)
    save_checkpoint(path, tiny_model)
    monkeypatch.undo()
    expect_error(path, "character set v2", "uses v1")


def test_wrong_format_version(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "future.safetensors"
    monkeypatch.setattr(ckmod, "FORMAT_VERSION", 99)
    save_checkpoint(path, tiny_model)
    monkeypatch.undo()
    expect_error(path, "format version 99")


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_model):
    path = tmp_path / "liar.safetensors"
    header = {"format": ckmod.FORMAT, "format_version": ckmod.FORMAT_VERSION, "charset_version": 1,
              "config": {**tiny_model.config.to_dict(), "hidden_size": 64}, "info": {}}
    write_tensor_file(path, tiny_model.state_dict(), header)
    expect_error(path, "do not fit the configuration")


def test_invalid_config(tmp_path, tiny_model):
    path = tmp_path / "bad.safetensors"
    header = {"format": ckmod.FORMAT, "format_version": ckmod.FORMAT_VERSION, "charset_version": 1,
              "config": {"hidden_size": 0}, "info": {}}
    write_tensor_file(path, tiny_model.state_dict(), header)
    expect_error(path, "invalid model configuration")


def test_header_that_is_not_an_object(tmp_path):
    path = tmp_path / "odd.safetensors"
    tensors = {"w": torch.ones(2)}
    meta = {"format": ckmod.FORMAT, "header": json.dumps([1, 2]), "sha256": ckmod.tensors_digest(tensors)}
    save_file(tensors, str(path), metadata=meta)
    expect_error(path, "corrupt metadata header")


def test_read_tensor_file_checks_the_expected_format(saved):
    with pytest.raises(CheckpointError, match="not a charbot-train-state file"):
        read_tensor_file(saved, expect_format="charbot-train-state")


def test_saving_is_atomic_when_the_write_fails(saved, tiny_model, monkeypatch):
    before = saved.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    torch.manual_seed(1)
    other = type(tiny_model)(tiny_model.config)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(saved, other)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temporary file left
    load_checkpoint(saved)


def test_saving_is_atomic_when_interrupted_mid_write(saved, tiny_model, monkeypatch):
    """A Ctrl-C (or any exception) half way through writing leaves the old file and no debris."""
    before = saved.read_bytes()
    real_replace = os.replace

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, tiny_model, {"new": True})
    monkeypatch.setattr(os, "replace", real_replace)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_overwrite_replaces_the_file_and_keeps_normal_permissions(saved, tiny_model):
    save_checkpoint(saved, tiny_model, {"round": 2})
    assert load_checkpoint(saved).info == {"round": 2}
    assert saved.stat().st_mode & 0o644 == 0o644  # readable by the bot's user too, not mkstemp's 0600
    assert saved.stat().st_mode & 0o777 == FILE_MODE
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_save_creates_missing_folders(tmp_path, tiny_model):
    path = tmp_path / "a" / "b" / "m.safetensors"
    save_checkpoint(path, tiny_model)
    assert load_checkpoint(path).config == tiny_model.config


def test_a_checkpoints_path_and_the_files_beside_it_follow_one_rule(tmp_path):
    from model.checkpoint import checkpoint_file, checkpoint_name, sibling

    path = checkpoint_file(tmp_path, "tale")
    assert path == tmp_path / "tale.safetensors" and checkpoint_name(path) == "tale"
    assert sibling(path, ".log.json") == tmp_path / "tale.log.json"
    assert sibling("runs/my.model.safetensors", ".resume.safetensors").name == "my.model.resume.safetensors"
    for bad in ["", "../tale", "a/b", "a\\b", ".hidden"]:
        with pytest.raises(ValueError, match="is not a checkpoint name"):
            checkpoint_file(tmp_path, bad)


def test_a_parent_recorded_without_ancestry_is_completed_from_its_file_while_it_is_the_same(tmp_path, tiny_model):
    root, child = tmp_path / "root.safetensors", tmp_path / "child.safetensors"
    save_checkpoint(root, tiny_model,
                    {"corpus": "tale", "val_loss_nats": 1.5, "train_seconds": 60.0, "chars_seen": 1000, "parent": None})
    save_checkpoint(child, tiny_model,
                    {"corpus": "tale", "val_loss_nats": 1.2, "train_seconds": 30.0, "chars_seen": 500,
                     "parent": {"path": str(root), "corpus": "tale", "val_loss_nats": 1.5}})  # the old record
    old = {"path": str(child), "corpus": "tale", "val_loss_nats": 1.2}

    done = complete_parent(old)
    assert done == {**ancestry(child, load_checkpoint(child).info), **old}
    assert done["train_seconds"] == 30.0 and done["parent"]["train_seconds"] == 60.0
    assert done["parent"]["parent"] is None
    assert complete_parent(done) is done  # complete already: nothing is read

    # the file was replaced by another checkpoint (another held-out loss), or is gone: the record stays as it was
    save_checkpoint(child, tiny_model, {"val_loss_nats": 0.9, "parent": None})
    assert complete_parent(old) == old
    child.unlink()
    assert complete_parent(old) == old
    assert complete_parent(None) is None
