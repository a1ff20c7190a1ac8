"""Loading one checkpoint per corpus into engines, and what /model reports about them."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import torch

import model.device
from bot.config import Limits
from bot.core.engines import Models, checkpoint_path, file_version
from bot.core.replies import ReplyService, make_request
from model import precision
from model.checkpoint import CheckpointError, save_checkpoint
from model.network import CharLSTM, ModelConfig


def test_every_corpus_gets_an_engine_and_its_facts(tiny_checkpoint_dir):
    with Models.load(["tale", "faq", "novel"], tiny_checkpoint_dir, device="cpu") as m:
        assert set(m.engines) == {"tale", "faq", "novel"}
        tale = m.info["tale"]
        assert tale.path == str(tiny_checkpoint_dir / "tale.safetensors")
        assert tale.version == file_version(tiny_checkpoint_dir / "tale.safetensors") and len(tale.version) == 12
        assert tale.val_bpc == pytest.approx(3.0 / 0.6931471805599453)
        assert tale.n_params > 0 and tale.device == "cpu" and tale.parent is None
        assert m.info["faq"].version != tale.version


def test_missing_checkpoints_are_all_named_in_one_error(tmp_path, tiny_checkpoint_dir):
    (tiny_checkpoint_dir / "faq.safetensors").unlink()
    (tiny_checkpoint_dir / "novel.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        Models.load(["tale", "faq", "novel"], tiny_checkpoint_dir, device="cpu")
    message = str(err.value)
    assert "no checkpoint for faq" in message and "novel also has none" in message
    assert "\n" not in message


def test_a_damaged_checkpoint_is_reported_not_served(tiny_checkpoint_dir):
    path = tiny_checkpoint_dir / "tale.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="tale.safetensors"):
        Models.load(["tale"], tiny_checkpoint_dir, device="cpu")


def test_the_checkpoint_folder_defaults_to_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(tmp_path))
    assert checkpoint_path("tale") == tmp_path / "tale.safetensors"
    assert checkpoint_path("tale", tmp_path / "mine") == tmp_path / "mine" / "tale.safetensors"


def test_swap_serves_a_new_checkpoint_for_new_replies(tiny_checkpoint_dir, tmp_path):
    other = tmp_path / "other.safetensors"
    shutil.copy(tiny_checkpoint_dir / "novel.safetensors", other)
    limits = Limits(cooldown_s=0, edit_interval_s=0)

    async def tale_reply(m: Models) -> str:
        request = make_request("tale", "Once upon a time", limits, seed=3, length=40)
        return (await ReplyService(m, limits).reply(request)).text

    with Models.load(["tale"], tiny_checkpoint_dir, device="cpu") as m:
        before = asyncio.run(tale_reply(m))
        old_engine = m.engines["tale"]
        info = m.swap("tale", other)
        assert m.engines["tale"] is not old_engine and info.path == str(other)
        assert m.info["tale"].version == file_version(other)
        after = asyncio.run(tale_reply(m))
    assert before != after


def test_a_faq_version_grounds_on_the_contributions_it_learned(tiny_checkpoint_dir):
    import json

    from bot.core.engines import learned_path

    with Models.load(["faq", "tale"], tiny_checkpoint_dir, device="cpu") as m:
        if "faq" not in m.passages:
            pytest.skip("the faq corpus is not on this machine")
        before = len(m.passages["faq"])
        assert "tale" not in m.passages  # tales are never grounded
        learned = tiny_checkpoint_dir / "faq-v1.safetensors"
        shutil.copy(tiny_checkpoint_dir / "faq.safetensors", learned)
        learned_path(learned).write_text(json.dumps(["Parking\nZorblatt permits are sold at the Lot 60 kiosk."]))
        m.swap("faq", learned)
        assert len(m.passages["faq"]) == before + 1
        assert "Zorblatt" in m.passages["faq"].search("where do I buy a zorblatt permit")[0].passage.text
        m.swap("faq", tiny_checkpoint_dir / "faq.safetensors")  # a rollback drops them again
        assert len(m.passages["faq"]) == before


def test_a_second_persona_from_the_same_parent_does_not_time_the_steps_again(tmp_path, monkeypatch):
    """A persona's first load pays for its precision's fidelity only: the step times (which depend on the shapes
    and the machine, not the weights) are those measured for the persona before it from the same base."""
    monkeypatch.setattr(model.device, "generation_precisions", lambda device: ["fp32", "bf16"])
    monkeypatch.setattr(precision, "fused_candidates", lambda model, device: [])
    timed: list[list[str]] = []
    speeds = precision.speeds

    def counted(steps, probe):
        timed.append(sorted(steps))
        return speeds(steps, probe)

    monkeypatch.setattr(precision, "speeds", counted)
    config = ModelConfig(embed_size=8, hidden_size=32, n_layers=1, dropout=0.0)
    base = tmp_path / "base.safetensors"
    save_checkpoint(base, CharLSTM(config).eval())
    versions = {}
    for seed, key in enumerate(("g5-rules", "g5-bard"), 1):  # two personas fine-tuned from the base
        torch.manual_seed(seed)
        versions[key] = tmp_path / key / "v0001.safetensors"
        save_checkpoint(versions[key], CharLSTM(config).eval(), {"parent": {"path": str(base), "corpus": "base"}})

    with Models.load([], None, device="cpu", precision="auto", precision_cache=tmp_path / "precision.json") as m:
        m.load_persona("g5-rules", versions["g5-rules"])
        assert timed == [["bf16", "fp32"]]  # the first one is measured in full
        m.load_persona("g5-bard", versions["g5-bard"])
        assert timed == [["bf16", "fp32"]]  # the second one times nothing
        reason = m.info["g5-bard"].precision_reason
        first = versions["g5-rules"]
        assert f"step times as measured for a checkpoint fine-tuned from the same parent ({first}" in reason
        assert m.info["g5-bard"].precision in ("fp32", "bf16")
