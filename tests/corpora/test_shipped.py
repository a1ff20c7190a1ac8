"""The shipped checkpoints: found where expected, loadable, generating, and honest about their loss."""

from __future__ import annotations

import os

import pytest
import torch

from corpora import shipped
from corpora.heldout import measure_heldout
from corpora.paths import PROJECT_ROOT
from corpora.registry import CORPORA, CorpusMissing, get_corpus
from corpora.shipped import ShippedMissing, shipped_checkpoint, shipped_path
from model.checkpoint import load_checkpoint
from model.sample import SampleSettings, generate


def test_checkpoints_live_in_the_project_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv(shipped.CHECKPOINT_DIR_ENV, raising=False)
    assert shipped_path("tale") == PROJECT_ROOT / "checkpoints" / "tale.safetensors"
    monkeypatch.setenv(shipped.CHECKPOINT_DIR_ENV, str(tmp_path))
    assert shipped_path("faq") == tmp_path / "faq.safetensors"
    (tmp_path / "faq.safetensors").write_bytes(b"x")
    assert shipped_checkpoint("faq") == tmp_path / "faq.safetensors"


def test_given_settings_decide_the_folder_and_the_environment_is_not_read(monkeypatch, tmp_path):
    """The commands pass their .env overlaid with the environment; whatever they pass is all that counts."""
    monkeypatch.setenv(shipped.CHECKPOINT_DIR_ENV, str(tmp_path / "from-environ"))
    given = {shipped.CHECKPOINT_DIR_ENV: str(tmp_path / "given")}
    assert shipped_path("tale", given) == tmp_path / "given" / "tale.safetensors"
    assert shipped.checkpoint_dir({}) == PROJECT_ROOT / "checkpoints"
    assert shipped.checkpoint_dir({shipped.CHECKPOINT_DIR_ENV: "  "}) == PROJECT_ROOT / "checkpoints"


def test_a_missing_checkpoint_says_where_it_looked_and_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv(shipped.CHECKPOINT_DIR_ENV, str(tmp_path))
    with pytest.raises(ShippedMissing) as err:
        shipped_checkpoint("novel")
    msg = str(err.value)
    assert str(tmp_path / "novel.safetensors") in msg and "charbot ship" in msg and shipped.CHECKPOINT_DIR_ENV in msg
    assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["", "../etc", ".hidden", "a/b"])
def test_names_that_are_paths_are_refused(name):
    with pytest.raises(ValueError):
        shipped_path(name)


def _shipped_or_skip(name: str):
    path = shipped_path(name)
    if not path.is_file():
        pytest.skip(f"{path} has not been shipped yet (charbot ship RUN.safetensors {name})")
    return load_checkpoint(path)


@pytest.mark.parametrize("name", list(CORPORA))
def test_shipped_checkpoint_loads_and_generates_from_its_prime(name):
    ck = _shipped_or_skip(name)
    corpus = get_corpus(name)
    g = generate(ck.model, [corpus.prime(corpus.example_prompt)],
                 SampleSettings(temperature=0.8, max_chars=120, stop=corpus.stop, seed=1))[0]
    assert g.text.strip(), "the model produced only whitespace"
    assert g.finish in {"stop", "length"}


@pytest.fixture
def every_core():
    """Torch on every core for one test (the suite runs one test at a time): a whole held-out split
    through a 2x512 LSTM is the suite's largest single computation."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(CORPORA))
def test_shipped_checkpoint_reproduces_its_recorded_held_out_loss(name, every_core):
    ck = _shipped_or_skip(name)
    recorded = ck.info.get("val_loss_nats")
    assert isinstance(recorded, float), "the shipped checkpoint records no held-out loss"
    try:
        measured = measure_heldout(ck, name)
    except CorpusMissing as exc:
        pytest.skip(f"corpus {name!r} is not on this machine: {exc}")
    assert measured.loss_nats == pytest.approx(recorded, abs=0.01)
