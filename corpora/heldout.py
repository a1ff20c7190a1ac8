"""The held-out split: which characters of a text a checkpoint never trained on, and its loss there.

Evaluation, shipping, the model card, fine-tuning and the benchmark all decide "the held-out
codes" here, so no two of them can disagree about it. The cut itself is
:meth:`model.textdata.TextData.split`, the one training makes; this module only decides its
fraction and its text:

- for a checkpoint, the fraction it records (training writes ``val_fraction`` into every
  checkpoint), else training's default (:class:`model.train.TrainConfig`); its text must be the
  one it was trained on (checked by the cleaned text's sha256);
- for a corpus on its own (fine-tuning's "old style" figure, the benchmark's sample text), the
  corpus's registered ``val_fraction``, whose default is training's;
- for a checkpoint trained on a mixture (the general base, :mod:`corpora.mixture`), the
  mixture's own split (:meth:`corpora.mixture.MixedText.split`), and for each of its parts the
  part's own held-out split (:func:`trained_on_part` says why that is held out for it).

A corpus's own cut, :func:`corpora.cut.corpus_parts`, is re-exported here: the mixtures build on it,
so it lives in a module below both.

The loss is :func:`model.evaluate.evaluate_loss` with its default stream layout, exactly what
``charbot eval CKPT NAME`` computes on CPU, so shipping, the card and the shipped-checkpoint
tests quote one number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from corpora.cut import corpus_parts
from corpora.mixture import MIXTURES, load_mixture, load_named
from corpora.registry import CORPORA, get_corpus
from corpora.voices import parse_key
from model.checkpoint import Checkpoint
from model.evaluate import bits, evaluate_loss
from model.textdata import TextData
from model.train import TrainConfig


class NotThisCorpus(ValueError):
    """The checkpoint was trained on other text, so the corpus's held-out split means nothing for it."""


@dataclass(frozen=True)
class HeldOutLoss:
    """Mean next-character loss on a held-out split, and the size of that split."""

    corpus: str
    loss_nats: float
    chars: int
    val_fraction: float

    @property
    def bpc(self) -> float:
        return bits(self.loss_nats)


def trained_fraction(info: Mapping[str, object]) -> float:
    """The fraction of its text the checkpoint with metadata ``info`` held out while training."""
    return float(info.get("val_fraction", TrainConfig.val_fraction))


def trained_on(info: Mapping[str, object], data: TextData) -> bool:
    """Whether the checkpoint with metadata ``info`` was trained on exactly this cleaned text."""
    return info.get("text_sha256") == data.text_sha256


def heldout_split(info: Mapping[str, object], data: TextData) -> tuple[torch.Tensor, float]:
    """Codes of ``data``'s tail that the checkpoint with ``info`` held out, and the fraction.

    The caller decides whether that tail means anything (see :func:`trained_on`): ``charbot eval
    --split val`` measures it on any text.
    """
    fraction = trained_fraction(info)
    _, val = data.split(fraction)
    return val, fraction


def trained_on_part(info: Mapping[str, object], data: TextData) -> bool:
    """Whether the checkpoint with ``info`` was trained on a mixture of which ``data`` is a part, as cleaned here.

    Such a checkpoint (the general base) trained on each part's *training* split only and was
    validated on the parts' held-out splits, both cut by :func:`corpus_parts` (see
    :mod:`corpora.mixture`). So the part's own held-out split is text it never trained on: its
    loss there is a true held-out figure, on the very characters the part's own checkpoint is
    measured on, which is what makes the two comparable. Both hashes are checked, not just the
    names: the mixture's cleaned text covers every part's text and where its split falls, and
    ``data`` must be the part as cleaned here; a part cleaned or split differently since
    training no longer counts.
    """
    mixture = info.get("corpus")
    if mixture not in MIXTURES or data.name not in MIXTURES[mixture]:
        return False
    mixed = load_mixture(mixture)
    return trained_on(info, mixed) and mixed.part_sha256.get(data.name) == data.text_sha256


def heldout_of(info: Mapping[str, object], data: TextData, *, parts: bool = True) -> tuple[torch.Tensor, float] | None:
    """Codes of ``data`` held out for the checkpoint with ``info`` and their fraction, or None if none are.

    Its own text's held-out tail (:func:`trained_on`), or, unless ``parts`` is False, for a
    checkpoint trained on a mixture of which ``data`` is a part, the part's own held-out split
    (:func:`trained_on_part`).
    """
    if trained_on(info, data):
        return heldout_split(info, data)
    if parts and trained_on_part(info, data):
        fraction = get_corpus(data.name).val_fraction
        return data.split(fraction)[1], fraction
    return None


def heldout_codes(info: Mapping[str, object], name: str, label: str = "checkpoint", *,
                  parts: bool = True) -> tuple[torch.Tensor, float]:
    """Codes of corpus or mixture ``name``'s split held out for the checkpoint with ``info``, and its fraction.

    ``parts=False`` accepts only the text the checkpoint was trained on itself, not a part of its
    mixture: shipping, where the base must not become a corpus's checkpoint by a slip of the name.
    """
    data = load_named(name)
    held = heldout_of(info, data, parts=parts)
    if held is None:
        kind = "mixture" if name in MIXTURES else "corpus"
        raise NotThisCorpus(
            f"{label} was not trained on {kind} {name!r} as cleaned here (its text sha256 "
            f"{str(info.get('text_sha256'))[:12]}..., {name!r}'s {data.text_sha256[:12]}...)"
            + (", nor on a mixture holding it" if parts else "")
            + f", so {name!r}'s held-out split is not held out for it" + ("" if parts else " as its own")
        )
    return held


def measure_heldout(ck: Checkpoint, name: str, codes: torch.Tensor | None = None) -> HeldOutLoss:
    """Held-out loss of ``ck`` on corpus or mixture ``name`` (``codes``: the split, if already loaded)."""
    fraction = trained_fraction(ck.info)
    if codes is None:
        codes, fraction = heldout_codes(ck.info, name, ck.path or "checkpoint")
    return HeldOutLoss(name, evaluate_loss(ck.model, codes), len(codes) - 1, fraction)


def corpus_split(name: str) -> torch.Tensor:
    """Codes of corpus ``name``'s own held-out split (its registered ``val_fraction``)."""
    return corpus_parts(name)[2]


def corpus_heldout(corpus: str, max_chars: int) -> tuple[torch.Tensor | None, str | None]:
    """The start of the corpus's own held-out split (at most ``max_chars`` scored), or None and why not."""
    if parse_key(corpus) is not None:
        return None, "a server's persona keeps no other style: it is judged on its own text"
    if corpus not in CORPORA:
        return None, f"{corpus!r} is not a registered corpus"
    try:
        val = corpus_split(corpus)
    except FileNotFoundError:
        return None, f"the corpus file {CORPORA[corpus].filename} is not on this machine"
    return val[: max_chars + 1], None


def corpus_replay(corpus: str) -> tuple[torch.Tensor | None, str | None]:
    """Codes of the corpus's own *training* split, for fine-tuning to replay, or None and why not.

    Only the part before the held-out tail: replaying held-out text would teach the model the
    very characters the "old style" figure is measured on, and that figure would then be a lie.
    """
    if corpus not in CORPORA:
        return None, f"{corpus!r} is not a registered corpus"
    try:
        _, train, _ = corpus_parts(corpus)
    except FileNotFoundError:
        return None, f"the corpus file {CORPORA[corpus].filename} is not on this machine"
    return train, None
