"""The base mixture: the parts' training splits to train on, their held-out splits to validate on, never the
other way round."""

from __future__ import annotations

import pytest
import torch

from corpora.heldout import corpus_parts
from corpora.mixture import GENERAL_BASE, MIXTURES, MixedText, load_mixture
from corpora.paths import SHARED_ROOT
from corpora.registry import CORPORA, find_corpus_file, load_corpus
from model.batches import BatchPlan
from model.charset import encode
from model.network import ModelConfig
from model.textdata import TextData
from model.train import TrainConfig, train
from tests.helpers import register_mini

DIGITS = set(encode("0123456789").tolist())
GRIMMS = SHARED_ROOT / "corpora" / "grimms.txt"


def marked(letters: str, n: int = 2000) -> str:
    """``n`` characters whose last tenth (the held-out split at training's default) is digits and newline, and
    nothing else is: a held-out character anywhere else shows at once."""
    body = (letters * n)[: n - n // 10]
    tail = ("0123456789" * n)[: n // 10 - 1]
    return body + tail + "\n"


@pytest.fixture
def base_parts(monkeypatch, tmp_path) -> None:
    register_mini(monkeypatch, tmp_path, "tale", text=marked("once upon a time. "))
    register_mini(monkeypatch, tmp_path, "novel", text=marked("ANNA LOOKED AT HIM. "))
    monkeypatch.setitem(MIXTURES, "base", ("tale", "novel"))


def test_base_is_the_public_domain_prose_corpora_only():
    assert MIXTURES["base"] == ("tale", "novel")  # grimms.txt is no corpus: it stays unseen


def test_grimms_is_never_part_of_base():
    """grimms.txt stands in for contributed text the base never saw: no part reads it, and none of its text is in
    the base's text (training or held-out), checked on the real corpora where they are on this machine."""
    assert all(CORPORA[part].filename != GRIMMS.name for part in MIXTURES[GENERAL_BASE])
    assert GRIMMS.name not in {c.filename for c in CORPORA.values()}
    if not GRIMMS.is_file() or any(find_corpus_file(part) is None for part in MIXTURES[GENERAL_BASE]):
        pytest.skip("grimms.txt or a part of the base is not on this machine")
    grimms = TextData.from_file(GRIMMS).text
    base = load_mixture(GENERAL_BASE).text
    # 40 stretches of 100 characters from the book's body (past Gutenberg's header, before its licence)
    def stretches(text: str) -> list[str]:
        return [text[i : i + 100] for i in range(len(text) // 10, len(text) * 8 // 10, len(text) * 7 // 400)]

    assert not [s for s in stretches(grimms) if s in base]
    assert all(s in base for s in stretches(load_corpus("tale").text))  # the check finds a part's text


def test_the_split_is_the_parts_own(base_parts):
    mix = load_mixture("base")
    train_codes, val_codes = mix.split(TrainConfig.val_fraction)
    parts = [corpus_parts(name) for name in ("tale", "novel")]
    assert all(not DIGITS & set(t.tolist()) for _, t, _ in parts)  # the markers sit where the parts' split is
    assert torch.equal(train_codes, torch.cat([t for _, t, _ in parts]))
    assert sorted(val_codes.tolist()) == sorted(torch.cat([v for _, _, v in parts]).tolist())
    assert set(val_codes.tolist()) <= DIGITS | set(encode("\n").tolist())
    tale_val, novel_val = parts[0][2], parts[1][2]
    half = len(tale_val) // 2
    # first halves first, so the part of the held-out text each validation scores holds both corpora
    assert torch.equal(val_codes[:half], tale_val[:half])
    assert torch.equal(val_codes[half : half + len(novel_val) // 2], novel_val[: len(novel_val) // 2])


def test_held_out_characters_never_reach_a_training_batch(base_parts, tmp_path):
    mix = load_mixture("base")
    seen: list[torch.Tensor] = []

    class Recording(BatchPlan):
        def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = super().batch(epoch, index)
            seen.extend((x, y))
            return x, y

    cfg = TrainConfig(n_seqs=4, n_steps=16, max_steps=120, eval_every=60, warmup_steps=2, device="cpu", seed=3)
    result = train(mix, tmp_path / "base.safetensors", cfg, ModelConfig(embed_size=8, hidden_size=16, n_layers=1),
                   progress_bar=False, make_plan=lambda codes, c: Recording(codes, c.n_seqs, c.n_steps, c.seed))
    assert result.steps == 120
    per_epoch = Recording(mix.split(0.1)[0], 4, 16).batches_per_epoch()
    assert per_epoch < 120  # more than an epoch: every training character and each epoch's offsets were read
    assert seen and not any(DIGITS & set(b.flatten().tolist()) for b in seen)


def test_a_mixture_refuses_another_held_out_fraction(base_parts):
    with pytest.raises(ValueError, match="holds out its corpora's own held-out splits"):
        load_mixture("base").split(0.2)


def test_a_resumed_base_run_finds_the_same_text(base_parts):
    a, b = load_mixture("base"), load_mixture("base")
    assert isinstance(a, MixedText) and a.text_sha256 == b.text_sha256 and a.source_sha256 == b.source_sha256


def test_unknown_mixture():
    with pytest.raises(KeyError, match="unknown mixture"):
        load_mixture("grimms")
