"""One held-out split: what a checkpoint held out is what eval, shipping and the card measure."""

from __future__ import annotations

import json

from bot.cli import main
from corpora import registry
from corpora.heldout import (
    corpus_heldout,
    corpus_split,
    heldout_codes,
    heldout_split,
    measure_heldout,
    trained_fraction,
    trained_on,
)
from model.checkpoint import load_checkpoint
from model.evaluate import scored_chars
from model.train import TrainConfig
from tests.helpers import register_mini, train_tiny


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
