"""A tiny trained model and teacher forcing through the fused step: shared by the engine tests, CPU and CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.charset import encode
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig

TEXT = "the cat sat on the mat. the dog ate the log. " * 40


def train_tiny() -> CharLSTM:
    """A tiny model trained for a moment, so its next-character distributions are peaked
    like a real model's (random weights give near-uniform ones that hide errors)."""
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(embed_size=8, hidden_size=32, n_layers=2, dropout=0.0))
    codes = encode(TEXT)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(80):
        starts = torch.randint(0, len(codes) - 33, (8,))
        x = torch.stack([codes[s : s + 32] for s in starts])
        y = torch.stack([codes[s + 1 : s + 33] for s in starts])
        loss = F.cross_entropy(model(x)[0].reshape(-1, 96), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.5, "the fixture model should have learned something"
    return model.eval()


def teacher_forced(fast: FastStep, texts: list[str]) -> torch.Tensor:
    """Logits (time, batch, vocab) from feeding ``texts`` through ``fast`` one character at a time."""
    n = len(texts)
    zeros = torch.zeros(fast.n_layers, 1, fast.hidden)
    for row in range(n):
        fast.set_row(row, (zeros, zeros), torch.zeros(fast.vocab))
    codes = [encode(t) for t in texts]
    out = []
    for t in range(len(codes[0])):
        for row in range(n):
            fast.codes[row] = int(codes[row][t])
        out.append(fast.step(n).clone())
    return torch.stack(out)
