"""Contiguous mini-batches for truncated BPTT.

The text is cut into ``n_seqs`` parallel streams; batch ``i`` holds the ``i``-th window of
``n_steps`` characters of every stream, so the hidden state left by one batch is the right
starting state for the next. Each epoch starts the streams at a seeded random offset so the
model does not see the same window boundaries every epoch; the position is just
``(epoch, batch)``, which is what makes exact resume possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchPlan:
    """Where the streams of one epoch lie in the text."""

    data: torch.Tensor
    n_seqs: int
    n_steps: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_seqs < 1 or self.n_steps < 1:
            raise ValueError("n_seqs and n_steps must be at least 1")
        if self.batches_per_epoch() < 1:
            need = (self.n_seqs + 1) * self.n_steps
            raise ValueError(
                f"text too short for batches of {self.n_seqs} sequences x {self.n_steps} steps: "
                f"{len(self.data)} characters, need at least {need} (use fewer or shorter sequences)"
            )

    def _stream_len(self) -> int:
        return (len(self.data) - 1 - (self.n_steps - 1)) // self.n_seqs

    def batches_per_epoch(self) -> int:
        return self._stream_len() // self.n_steps

    def offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return int(torch.randint(0, self.n_steps, (1,), generator=g))

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (targets are the inputs shifted by one character)."""
        length = self._stream_len()
        start = self.offset(epoch)
        streams = self.data[start : start + self.n_seqs * length + 1]
        x = streams[:-1].view(self.n_seqs, length)
        y = streams[1:].view(self.n_seqs, length)
        cols = slice(index * self.n_steps, (index + 1) * self.n_steps)
        return x[:, cols], y[:, cols]
