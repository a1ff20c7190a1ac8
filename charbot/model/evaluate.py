"""Mean cross-entropy of a model on a text, in nats and bits per character.

Training's validation and ``charbot eval`` call the same function with the same stream
layout, so a loss recorded in a checkpoint is reproduced exactly by ``charbot eval``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from charbot.model.network import CharLSTM

EVAL_STREAMS = 16
EVAL_STEPS = 256


def evaluate_loss(
    model: CharLSTM,
    codes: torch.Tensor,
    n_streams: int = EVAL_STREAMS,
    n_steps: int = EVAL_STEPS,
    max_chars: int | None = None,
) -> float:
    """Mean next-character cross-entropy (nats) over ``codes``, state carried through the text.

    The text is read as ``n_streams`` contiguous streams in parallel (fewer for short text);
    each stream starts from a zero state, exactly as generation starts without a prime.
    """
    if max_chars is not None:
        codes = codes[: max_chars + 1]
    if len(codes) < 2:
        raise ValueError("need at least 2 characters to evaluate")
    n_streams = max(1, min(n_streams, (len(codes) - 1) // 64 or 1))
    length = (len(codes) - 1) // n_streams
    device = model.head.weight.device
    x_all = codes[: n_streams * length].view(n_streams, length).to(device)
    y_all = codes[1 : n_streams * length + 1].view(n_streams, length).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    was_training = model.training
    model.eval()
    total = 0.0
    state = None
    try:
        with torch.no_grad(), autocast:
            for start in range(0, length, n_steps):
                logits, state = model(x_all[:, start : start + n_steps], state)
                y = y_all[:, start : start + n_steps]
                total += F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
                ).item()
    finally:
        model.train(was_training)
    return total / (n_streams * length)


def bits(nats: float) -> float:
    """Bits per character of a loss in nats per character."""
    return nats / math.log(2)
