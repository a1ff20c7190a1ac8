"""The held-out split: which characters of a text a checkpoint never trained on, and its loss there.

Evaluation, shipping, the model card, fine-tuning and the benchmark all decide "the held-out
codes" here, so no two of them can disagree about it. The cut itself is
:meth:`model.textdata.TextData.split`, the one training makes; this module only decides its
fraction and its text:

- for a checkpoint, the fraction it records (training writes ``val_fraction`` into every
  checkpoint), else training's default (:class:`model.train.TrainConfig`); its text must be the
  one it was trained on (checked by the cleaned text's sha256);
- for a corpus on its own (fine-tuning's "old style" figure, the benchmark's sample text), the
  corpus's registered ``val_fraction``, whose default is training's.

The loss is :func:`model.evaluate.evaluate_loss` with its default stream layout, exactly what
``charbot eval CKPT NAME`` computes on CPU, so shipping, the card and the shipped-checkpoint
tests quote one number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from corpora.registry import CORPORA, get_corpus, load_corpus
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


def heldout_codes(info: Mapping[str, object], name: str, label: str = "checkpoint") -> tuple[torch.Tensor, float]:
    """Codes of corpus ``name``'s held-out split as the checkpoint with ``info`` was trained with it."""
    data = load_corpus(name)
    if not trained_on(info, data):
        raise NotThisCorpus(
            f"{label} was not trained on corpus {name!r} as cleaned here (its text sha256 "
            f"{str(info.get('text_sha256'))[:12]}..., the corpus's {data.text_sha256[:12]}...), "
            f"so the corpus's held-out split is not held out for it"
        )
    return heldout_split(info, data)


def measure_heldout(ck: Checkpoint, name: str, codes: torch.Tensor | None = None) -> HeldOutLoss:
    """Held-out loss of ``ck`` on corpus ``name`` (``codes``: the split, if already loaded)."""
    if codes is None:
        codes, _ = heldout_codes(ck.info, name, ck.path or "checkpoint")
    return HeldOutLoss(name, evaluate_loss(ck.model, codes), len(codes) - 1, trained_fraction(ck.info))


def corpus_parts(name: str) -> tuple[TextData, torch.Tensor, torch.Tensor]:
    """Corpus ``name``'s cleaned text with the codes of its training split and of its own held-out
    split (its registered ``val_fraction``): the one cut made wherever a corpus is used on its own
    (the held-out figure, fine-tuning's replay, the base model's mixture in :mod:`corpora.mixture`)."""
    data = load_corpus(name)
    train, val = data.split(get_corpus(name).val_fraction)
    return data, train, val


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
