"""The one cut of a corpus on its own: its training split and its held-out split.

The split is the corpus's registered ``val_fraction`` tail, cut by
:meth:`model.textdata.TextData.split` as training cuts it. It lives below both users of it:
:mod:`corpora.mixture` builds the base model's text from the parts' splits, and
:mod:`corpora.heldout` (which decides what is held out for a checkpoint, the base included, and
re-exports this function) must know the mixtures; a module of its own keeps either from
importing the other back.
"""

from __future__ import annotations

import torch

from corpora.registry import get_corpus, load_corpus
from model.textdata import TextData


def corpus_parts(name: str) -> tuple[TextData, torch.Tensor, torch.Tensor]:
    """Corpus ``name``'s cleaned text with the codes of its training split and of its own held-out
    split (its registered ``val_fraction``): the one cut made wherever a corpus is used on its own
    (the held-out figure, fine-tuning's replay, the base model's mixture in :mod:`corpora.mixture`)."""
    data = load_corpus(name)
    train, val = data.split(get_corpus(name).val_fraction)
    return data, train, val
