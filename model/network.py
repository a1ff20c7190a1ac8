"""The network: embedding -> multi-layer LSTM -> dropout -> linear over the character set."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from model.charset import VOCAB_SIZE

State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ModelConfig:
    """Shape of the network; stored in every checkpoint so it can be rebuilt exactly."""

    vocab_size: int = VOCAB_SIZE
    embed_size: int = 64
    hidden_size: int = 512
    n_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_size", "hidden_size", "n_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class CharLSTM(nn.Module):
    """The reference forward pass; the fast generation engine must match it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.lstm = nn.LSTM(
            config.embed_size,
            config.hidden_size,
            config.n_layers,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits of shape (batch, time, vocab) for codes of shape (batch, time)."""
        out, state = self.lstm(self.embed(idx), state)
        return self.head(self.drop(out)), state

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        shape = (self.config.n_layers, batch, self.config.hidden_size)
        device = device if device is not None else self.head.weight.device
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
