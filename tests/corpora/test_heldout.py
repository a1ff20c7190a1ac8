"""One held-out split: what a checkpoint held out is what eval, shipping and the card measure."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from corpora import registry
from corpora.heldout import (
    NotThisCorpus,
    corpus_heldout,
    corpus_split,
    heldout_codes,
    heldout_split,
    measure_heldout,
    trained_fraction,
    trained_on,
    trained_on_part,
)
from corpora.mixture import load_mixture
from model.checkpoint import load_checkpoint
from model.evaluate import scored_chars
from model.textdata import TextData
from model.train import TrainConfig
from tests.helpers import register_base, register_mini, train_tiny


def test_a_checkpoint_held_out_what_it_recorded_else_trainings_default():
    assert trained_fraction({"val_fraction": 0.25}) == 0.25
    assert trained_fraction({}) == TrainConfig().val_fraction


def test_eval_and_the_card_measure_the_fraction_the_checkpoint_held_out(monkeypatch, tmp_path, capsys):
    """Trained holding out 30%, not the corpus's 10%: eval and measure_heldout both use the 30%."""
    register_mini(monkeypatch, tmp_path)
    ck = load_checkpoint(train_tiny("mini", tmp_path / "run.safetensors", val_fraction=0.3))
    data = registry.load_corpus("mini")
    codes, fraction = heldout_codes(ck.info, "mini")
    assert fraction == 0.3 and trained_on(ck.info, data)
    assert codes.equal(heldout_split(ck.info, data)[0]) and codes.equal(data.split(0.3)[1])
    assert len(codes) > len(corpus_split("mini"))  # the corpus's own split is its registered 10%
    measured = measure_heldout(ck, "mini")
    assert (measured.val_fraction, measured.chars) == (0.3, len(codes) - 1)
    assert main(["eval", str(tmp_path / "run.safetensors"), "mini", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "val" and ev["chars"] == scored_chars(len(codes))
    assert ev["loss_nats"] == measured.loss_nats


def test_corpus_heldout_is_the_start_of_the_split_or_says_why_not(tmp_path, monkeypatch):
    codes, note = corpus_heldout("tale", 2000)
    assert note is None and len(codes) == 2001
    _, val = registry.load_corpus("tale").split(registry.CORPORA["tale"].val_fraction)
    assert codes.equal(val[:2001])
    assert corpus_heldout("nope", 10) == (None, "'nope' is not a registered corpus")
    monkeypatch.setattr(registry, "search_dirs", lambda: [tmp_path / "nowhere"])
    assert corpus_heldout("tale", 10) == (None, "the corpus file fairy-tales.txt is not on this machine")


def test_fine_tuning_replays_only_the_training_part_never_the_held_out_split(tmp_path, monkeypatch):
    from corpora.heldout import corpus_replay

    register_mini(monkeypatch, tmp_path)
    data = registry.load_corpus("mini")
    replay, note = corpus_replay("mini")
    held = corpus_split("mini")
    assert note is None and len(replay) + len(held) == len(data.text)
    assert replay.equal(data.codes()[: len(replay)])  # the head, so it never overlaps the held-out tail
    assert corpus_replay("nope") == (None, "'nope' is not a registered corpus")
    register_mini(monkeypatch, tmp_path, name="gone", write=False)
    assert corpus_replay("gone") == (None, "the corpus file gone.txt is not on this machine")


def test_a_base_trained_on_the_mixture_holds_out_each_parts_own_split(monkeypatch, tmp_path):
    """The base trained only on the parts' training splits: each part's own held-out split is held out for it."""
    register_base(monkeypatch, tmp_path)
    base = load_checkpoint(train_tiny("base", tmp_path / "base.safetensors"))
    mix = load_mixture("base")
    assert trained_on(base.info, mix)
    codes, fraction = heldout_codes(base.info, "base")
    assert codes.equal(mix.split(fraction)[1])
    for part in ("tale", "novel"):
        data = registry.load_corpus(part)
        assert trained_on_part(base.info, data) and not trained_on(base.info, data)
        codes, fraction = heldout_codes(base.info, part)
        assert codes.equal(corpus_split(part)) and fraction == registry.CORPORA[part].val_fraction
        assert measure_heldout(base, part).chars == len(codes) - 1


def test_only_a_part_of_the_mixture_the_base_trained_on_counts(monkeypatch, tmp_path):
    register_base(monkeypatch, tmp_path)
    register_mini(monkeypatch, tmp_path, name="faq", seed=2)
    base = load_checkpoint(train_tiny("base", tmp_path / "base.safetensors"))
    tale = load_checkpoint(train_tiny("tale", tmp_path / "tale.safetensors"))
    assert not trained_on_part(base.info, registry.load_corpus("faq"))  # no part of the mixture
    assert not trained_on_part(tale.info, registry.load_corpus("novel"))  # trained on a corpus, not a mixture
    with pytest.raises(NotThisCorpus, match="not trained on corpus 'novel'"):
        heldout_codes(tale.info, "novel")
    with pytest.raises(NotThisCorpus, match="not trained on mixture 'base'"):
        heldout_codes(tale.info, "base")
    renamed = TextData("tale", registry.load_corpus("novel").text, "x")  # a part's name, another text
    assert not trained_on_part(base.info, renamed)
    register_mini(monkeypatch, tmp_path, name="novel", seed=7)  # a part changed since the base was trained
    assert not trained_on_part(base.info, registry.load_corpus("tale"))
    with pytest.raises(NotThisCorpus, match="nor on a mixture holding it"):
        heldout_codes(base.info, "tale")


def test_charbot_eval_gives_the_base_its_mixture_and_part_figures(monkeypatch, tmp_path, capsys):
    register_base(monkeypatch, tmp_path)
    path = train_tiny("base", tmp_path / "base.safetensors")
    base = load_checkpoint(path)
    for name in ("base", "tale", "novel"):
        assert main(["eval", str(path), name, "--json"]) == 0
        ev = json.loads(capsys.readouterr().out)
        codes, _ = heldout_codes(base.info, name)
        assert ev["split"] == "val" and ev["chars"] == scored_chars(len(codes))
        assert ev["loss_nats"] == measure_heldout(base, name).loss_nats
    assert main(["eval", str(path), "base"]) == 0
    assert "recorded at training" in capsys.readouterr().out  # the mixture's figure is the one training recorded
