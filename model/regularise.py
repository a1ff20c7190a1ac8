"""Training-only regularisation for the char-LSTM, after AWD-LSTM (Merity, Keskar and Socher 2018).

Small char-LSTMs on a few megabytes of text (or on the 76k-character FAQ) are limited by
overfitting, not capacity: the held-out loss bottoms out and climbs while the training loss
keeps falling. AWD-LSTM's remedies, all of them training-only:

- **weight drop** (DropConnect on the hidden-to-hidden matrices ``weight_hh``): the recurrent
  connections are where an LSTM memorises sequences, and plain dropout cannot reach them without
  breaking the recurrence. One mask per batch, shared by every row and time step;
- **variational (locked) dropout** on the LSTM's input, between its layers and on its output:
  one mask per sequence, shared over time, so a unit that is dropped stays dropped for the whole
  window instead of flickering every character (which mostly adds noise the recurrence averages
  away). Where a locked rate is set it replaces the model's plain ``dropout`` at that place;
- **embedding dropout**: whole characters' embeddings are dropped (per sequence, for the whole
  window), so the model cannot lean on any single character being seen.

Longer truncated BPTT, the fourth remedy, is just ``TrainConfig.n_steps``.

Nothing here changes :class:`model.network.CharLSTM`: its parameters keep their names and
shapes, so checkpoints, the fast generation engine and ``charbot ship`` never see the
difference. :class:`Regularised` wraps the model for the optimizer step only, and runs its
layers functionally (``torch._VF.lstm``, the kernel ``nn.LSTM`` itself calls, one layer at a
time with a dropped copy of ``weight_hh``) while the model is in training mode; in eval mode
it is the model's own forward, bit for bit. Training passes every batch through it only when an
option is on, so a run with all of them off is exactly the run it was before they existed.

The masks are drawn from the default generator of the batch's device, which training saves
and restores with its state, so a resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from model.network import CharLSTM, State


@dataclass(frozen=True)
class Regularisation:
    """Rates of the training-only regularisers (0 = off), each the probability of dropping."""

    weight_drop: float = 0.0  # DropConnect on each layer's weight_hh
    embed_dropout: float = 0.0  # whole character embeddings, per sequence
    input_dropout: float = 0.0  # locked, on the LSTM's input (the embeddings)
    layer_dropout: float = 0.0  # locked, between LSTM layers (replaces the model's dropout there)
    output_dropout: float = 0.0  # locked, on the last layer's output (replaces the model's dropout there)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1), got {value!r}")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))

    def check_model(self, model: CharLSTM) -> None:
        """Refuse an option the model has no place for (a ValueError, before training starts)."""
        if self.layer_dropout > 0 and model.config.n_layers < 2:
            raise ValueError("layer_dropout needs an LSTM of at least 2 layers (this one has 1)")


def locked_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A dropout mask for ``x`` (batch, time, features) drawn once per sequence and feature, shared over time.

    Scaled by 1 / (1 - p) like ordinary dropout, so the expected activation is unchanged and
    nothing needs rescaling at inference.
    """
    keep = torch.empty(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype).bernoulli_(1.0 - p)
    return keep / (1.0 - p)


def locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with whole features of each sequence dropped for every time step (identity at ``p`` 0)."""
    return x if p == 0 else x * locked_mask(x, p)


def embedding_dropout(embed: nn.Embedding, idx: torch.Tensor, p: float) -> torch.Tensor:
    """Embeddings of ``idx`` (batch, time) with whole characters dropped per sequence.

    Each sequence draws one keep/drop coin per character of the vocabulary, so a dropped
    character is zero at every place it occurs in that window (AWD-LSTM draws one mask per
    batch; per sequence is the same idea with more independent masks). Scaled by 1 / (1 - p).
    """
    vectors = embed(idx)
    if p == 0:
        return vectors
    keep = torch.empty(idx.shape[0], embed.num_embeddings, device=idx.device).bernoulli_(1.0 - p) / (1.0 - p)
    return vectors * keep.gather(1, idx).unsqueeze(-1).to(vectors.dtype)


def regularised_forward(model: CharLSTM, idx: torch.Tensor, state: State | None, reg: Regularisation
                        ) -> tuple[torch.Tensor, State]:
    """The model's forward pass with ``reg``'s regularisers; same output shape and state as ``model(idx, state)``.

    Layer by layer with the very kernel ``nn.LSTM`` calls, so with every rate 0 the result is the
    model's own (tested); the plain ``dropout`` of the model applies between layers and on the
    output wherever no locked rate replaces it.
    """
    lstm = model.lstm
    n_layers, batch = model.config.n_layers, idx.shape[0]
    if state is None:
        state = model.init_state(batch, idx.device)
    plain = model.config.dropout
    x = locked_dropout(embedding_dropout(model.embed, idx, reg.embed_dropout), reg.input_dropout)
    hs, cs = [], []
    for layer in range(n_layers):
        if layer > 0:
            if reg.layer_dropout > 0:
                x = locked_dropout(x, reg.layer_dropout)
            elif plain > 0:
                x = F.dropout(x, plain, True)
        w_hh = getattr(lstm, f"weight_hh_l{layer}")
        if reg.weight_drop > 0:
            w_hh = F.dropout(w_hh, reg.weight_drop, True)  # DropConnect: one mask for the whole batch
        weights = [getattr(lstm, f"weight_ih_l{layer}"), w_hh,
                   getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")]
        hx = (state[0][layer : layer + 1], state[1][layer : layer + 1])
        x, h, c = torch._VF.lstm(x, hx, weights, True, 1, 0.0, True, False, True)
        hs.append(h)
        cs.append(c)
    x = locked_dropout(x, reg.output_dropout) if reg.output_dropout > 0 else model.drop(x)
    return model.head(x), (torch.cat(hs), torch.cat(cs))


class Regularised(nn.Module):
    """``model`` with training-only regularisation: what the optimizer step calls instead of the model.

    The wrapper owns no parameters of its own (``model``'s, under ``model.``), so an optimizer
    or DistributedDataParallel built on either sees the same tensors. While ``model`` is in eval
    mode the wrapper is ``model``'s own forward, so validation, ``charbot eval`` and the
    engine compute exactly what they would without it.
    """

    def __init__(self, model: CharLSTM, reg: Regularisation) -> None:
        super().__init__()
        reg.check_model(model)
        self.model = model
        self.reg = reg

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if not self.model.training or not self.reg.active:
            return self.model(idx, state)
        return regularised_forward(self.model, idx, state, self.reg)
