"""Shipping a run: 16-bit storage, loss measured before and after, recorded so `charbot eval` reproduces it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from bot.cli import main
from corpora.heldout import NotThisCorpus, heldout_codes
from corpora.mixture import load_mixture
from corpora.release import ShipRefused, ship
from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_loss
from tests.helpers import register_base, register_mini, train_tiny


@pytest.fixture
def run(monkeypatch, tmp_path):
    register_mini(monkeypatch, tmp_path)
    monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return train_tiny("mini", tmp_path / "runs" / "mini.safetensors")


def test_ship_stores_16_bit_weights_with_the_loss_they_really_have(run, tmp_path):
    result = ship(run, "mini")
    assert result.path == tmp_path / "checkpoints" / "mini.safetensors"
    with safe_open(str(result.path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118 (not a mapping)
    stored = load_checkpoint(result.path)
    codes, _ = heldout_codes(stored.info, "mini")
    assert stored.info["val_loss_nats"] == evaluate_loss(stored.model, codes) == result.loss_after
    original = load_checkpoint(run)
    assert result.loss_before == evaluate_loss(original.model, codes)
    assert stored.info["val_loss_fp32_nats"] == result.loss_before
    assert abs(result.shift) <= 0.005
    assert stored.info["storage_dtype"] == "bfloat16" and stored.info["shipped_from"] == str(run)
    assert stored.info["steps"] == original.info["steps"]


def test_charbot_eval_reproduces_the_shipped_loss(run, tmp_path, capsys):
    assert main(["ship", str(run), "mini", "--dtype", "fp16", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert main(["eval", shipped["path"], "mini", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "val" and ev["loss_nats"] == ev["recorded_val_loss_nats"] == shipped["loss_after_nats"]


def test_ship_refuses_when_conversion_moves_the_loss_too_much(run, tmp_path):
    with pytest.raises(ShipRefused, match="moves the held-out loss") as err:
        ship(run, "mini", max_shift=0.0)
    assert "nothing was written" in str(err.value)
    assert not (tmp_path / "checkpoints" / "mini.safetensors").exists()


def test_ship_does_not_overwrite_without_force(run, tmp_path):
    first = ship(run, "mini")
    before = first.path.read_bytes()
    with pytest.raises(ShipRefused, match="--force"):
        ship(run, "mini")
    assert first.path.read_bytes() == before
    assert ship(run, "mini", force=True).path == first.path


def test_ship_refuses_a_run_trained_on_other_text(monkeypatch, tmp_path, run):
    register_mini(monkeypatch, tmp_path, name="other", seed=5)
    with pytest.raises(NotThisCorpus, match="not trained on corpus 'other'"):
        ship(run, "other")
    assert not (tmp_path / "checkpoints" / "other.safetensors").exists()


def test_ship_command_errors_are_one_line(run, tmp_path, capsys):
    assert main(["ship", str(tmp_path / "nope.safetensors"), "mini"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["ship", str(run), "poems"]) == 2
    assert "unknown corpus 'poems'" in capsys.readouterr().err


def test_ship_reads_the_checkpoint_folder_from_the_env_file(run, tmp_path, monkeypatch, capsys):
    """As the bot reads it: CHARBOT_CHECKPOINT_DIR from --env-file, the environment winning over the file."""
    monkeypatch.delenv("CHARBOT_CHECKPOINT_DIR")
    env = tmp_path / "settings.env"
    env.write_text(f"CHARBOT_CHECKPOINT_DIR={tmp_path / 'from-file'}\n")
    assert main(["ship", str(run), "mini", "--env-file", str(env), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "from-file" / "mini.safetensors")
    assert (tmp_path / "from-file" / "mini.safetensors").is_file()
    monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(tmp_path / "from-environ"))
    assert main(["ship", str(run), "mini", "--env-file", str(env), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "from-environ" / "mini.safetensors")


def test_the_base_ships_measured_on_its_mixtures_held_out_split(monkeypatch, tmp_path, capsys):
    register_base(monkeypatch, tmp_path)
    monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    run = train_tiny("base", tmp_path / "runs" / "base.safetensors")
    assert main(["ship", str(run), "base", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert shipped["path"] == str(tmp_path / "checkpoints" / "base.safetensors")
    stored = load_checkpoint(shipped["path"])
    codes, _ = heldout_codes(stored.info, "base")
    assert codes.equal(load_mixture("base").split(0.1)[1])
    assert stored.info["val_loss_nats"] == evaluate_loss(stored.model, codes) == shipped["loss_after_nats"]
    assert stored.info["val_loss_fp32_nats"] == evaluate_loss(load_checkpoint(run).model, codes)
    assert stored.info["corpus"] == "base" and stored.info["storage_dtype"] == "bfloat16"
    assert main(["eval", shipped["path"], "base", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "val" and ev["loss_nats"] == ev["recorded_val_loss_nats"]


def test_only_a_run_trained_on_the_mixture_ships_as_the_base(monkeypatch, tmp_path, capsys):
    register_base(monkeypatch, tmp_path)
    monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    tale = train_tiny("tale", tmp_path / "runs" / "tale.safetensors")
    with pytest.raises(NotThisCorpus, match="not trained on mixture 'base'"):
        ship(tale, "base")
    assert not (tmp_path / "checkpoints" / "base.safetensors").exists()
    assert main(["ship", str(tale), "bass"]) == 2
    assert "mixtures: base" in capsys.readouterr().err
    base = train_tiny("base", tmp_path / "runs" / "base.safetensors")  # its figure on tale is real, but it is no tale
    with pytest.raises(NotThisCorpus, match="not trained on corpus 'tale'.*not held out for it as its own"):
        ship(base, "tale")
    assert not (tmp_path / "checkpoints" / "tale.safetensors").exists()
