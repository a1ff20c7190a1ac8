"""The held-out loss of a checkpoint on the corpus it was trained on, measured like ``charbot eval``.

Shipping, the model card and the shipped-checkpoint tests all quote this one number, so they
share this function: the checkpoint's own held-out split (its ``val_fraction`` of the cleaned
corpus text, checked by the text's sha256) and :func:`model.evaluate.evaluate_loss`
with its default stream layout, exactly what ``charbot eval CKPT NAME`` computes on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corpora.registry import CORPORA, get_corpus, load_corpus
from model.checkpoint import Checkpoint
from model.evaluate import bits, evaluate_loss


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


def heldout_codes(info: dict, name: str, label: str = "checkpoint") -> tuple[torch.Tensor, float]:
    """Codes of corpus ``name``'s held-out split as the checkpoint with ``info`` was trained with it."""
    corpus = get_corpus(name)
    data = load_corpus(name)
    if info.get("text_sha256") != data.text_sha256:
        raise NotThisCorpus(
            f"{label} was not trained on corpus {name!r} as cleaned here (its text sha256 "
            f"{str(info.get('text_sha256'))[:12]}..., the corpus's {data.text_sha256[:12]}...), "
            f"so the corpus's held-out split is not held out for it"
        )
    fraction = float(info.get("val_fraction", corpus.val_fraction))
    _, val = data.split(fraction)
    return val, fraction


def measure_heldout(ck: Checkpoint, name: str, codes: torch.Tensor | None = None) -> HeldOutLoss:
    """Held-out loss of ``ck`` on corpus ``name`` (``codes``: the split, if already loaded)."""
    fraction = float(ck.info.get("val_fraction", get_corpus(name).val_fraction))
    if codes is None:
        codes, fraction = heldout_codes(ck.info, name, ck.path or "checkpoint")
    return HeldOutLoss(name, evaluate_loss(ck.model, codes), len(codes) - 1, fraction)


def corpus_heldout(corpus: str, max_chars: int) -> tuple[torch.Tensor | None, str | None]:
    """The start of the corpus's own held-out split (for fine-tuning's "old style" figure), or None and why not."""
    if corpus not in CORPORA:
        return None, f"{corpus!r} is not a registered corpus"
    try:
        data = load_corpus(corpus)
    except FileNotFoundError:
        return None, f"the corpus file {CORPORA[corpus].filename} is not on this machine"
    _, val = data.split(CORPORA[corpus].val_fraction)
    return val[: max_chars + 1], None
