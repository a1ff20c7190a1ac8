"""Mixtures: one training text made of several registered corpora, for a general base model.

``base`` is the public-domain prose corpora together, Andersen's tales and Anna Karenina: a
model trained on both writes English prose in general, and the per-corpus checkpoints (and the
FAQ's fine-tune) can start from it. ``grimms.txt`` is no registered corpus and never part of a
mixture: it stays unseen, the stand-in for contributed text.

A mixture must never train on a part's held-out split, or the part's held-out figure (the one
the card and shipping quote) would be measured on text the model has seen. So its training
text is the concatenation of each part's *training* split and its validation text the
concatenation of each part's *held-out* split, both cut by :func:`corpora.cut.corpus_parts`,
the one place a corpus is split; the mixture never computes a split of its own.

Why the parts' held-out splits, and not a slice of the training parts, for validation: the
figure a base checkpoint records is then directly comparable with the per-corpus checkpoints'
(the same characters, scored the same way), and the training text loses nothing. The best
checkpoint is chosen on that text, as every run here chooses on its held-out split.

Training validates on the first ``TrainConfig.eval_max_chars`` (200k) characters of the
validation text; so that sample holds every part in equal shares, the validation text is the
first halves of the parts' held-out splits, then their second halves. The final figure of the
best checkpoint covers all of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from corpora.cut import corpus_parts
from corpora.registry import CORPORA, get_corpus, load_corpus
from model.charset import decode
from model.textdata import TextData

GENERAL_BASE = "base"  # the general base model's mixture, and the name it ships as (checkpoints/base.safetensors)

MIXTURES: dict[str, tuple[str, ...]] = {
    GENERAL_BASE: ("tale", "novel"),
}


@dataclass
class MixedText(TextData):
    """A mixture's text: the parts' training splits, then their held-out splits (see the module docstring).

    :meth:`split` cuts exactly where the held-out splits begin, whatever the training text's
    fraction would say, so no held-out character of any part can reach a training batch.
    """

    parts: tuple[str, ...] = ()
    heldout_start: int = 0  # index of the first held-out code
    val_fraction: float = 0.1  # the parts' own (all the same), which training must ask for
    part_sha256: dict[str, str] = field(default_factory=dict)  # each part's cleaned text, as TextData.text_sha256

    def split(self, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        if val_fraction != self.val_fraction:
            raise ValueError(f"{self.name} holds out its corpora's own held-out splits ({self.val_fraction:g} of "
                             f"each); train it with val_fraction {self.val_fraction:g}, not {val_fraction:g}")
        codes = self.codes()
        return codes[: self.heldout_start], codes[self.heldout_start :]


def load_mixture(name: str) -> MixedText:
    """The mixture ``name`` built from its parts as found on this machine (CorpusMissing if one is not)."""
    try:
        parts = MIXTURES[name]
    except KeyError:
        raise KeyError(f"unknown mixture {name!r} (known: {', '.join(MIXTURES)})") from None
    fractions = {get_corpus(p).val_fraction for p in parts}
    if len(fractions) != 1:
        raise ValueError(f"{name}: its corpora hold out different fractions ({sorted(fractions)})")
    split = [corpus_parts(p) for p in parts]
    train = [t for _, t, _ in split]
    halves = [(v[: len(v) // 2], v[len(v) // 2 :]) for _, _, v in split]
    heldout = [h[0] for h in halves] + [h[1] for h in halves]
    train_codes = torch.cat(train)
    text = decode(torch.cat([train_codes, *heldout]))
    sources = hashlib.sha256(" ".join(f"{p}:{d.source_sha256}" for p, (d, _, _) in zip(parts, split, strict=True))
                             .encode()).hexdigest()
    return MixedText(name=name, text=text, source_sha256=sources, dropped=sum(d.dropped for d, _, _ in split),
                     parts=parts, heldout_start=len(train_codes), val_fraction=fractions.pop(),
                     part_sha256={p: d.text_sha256 for p, (d, _, _) in zip(parts, split, strict=True)})


def load_named(name: str) -> TextData:
    """The text a checkpoint is trained on by name: a mixture, else a registered corpus (KeyError if neither).

    Evaluation and shipping take either, as ``charbot train`` does, so the base is measured on
    exactly the text its checkpoint records.
    """
    return load_mixture(name) if known_name(name) in MIXTURES else load_corpus(name)


def known_name(name: str) -> str:
    """``name`` if it names a mixture or a registered corpus, else a KeyError listing both."""
    if name not in MIXTURES and name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r} (corpora: {', '.join(CORPORA)}; mixtures: {', '.join(MIXTURES)})")
    return name
