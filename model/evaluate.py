"""Mean cross-entropy of a model on a text, in nats and bits per character.

Training's validation and ``charbot eval`` call the same function with the same stream
layout, so a loss recorded in a checkpoint is reproduced exactly by ``charbot eval``. It
always computes in float32, TF32 off, even after bf16 training on a GPU: a figure recorded
on CUDA is then the figure ``charbot eval`` gives on a CPU, to float rounding.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from model.network import CharLSTM

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
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        codes = codes[: max_chars + 1]
    n_streams, length = stream_layout(len(codes), n_streams)
    device = model.head.weight.device
    x_all = codes[: n_streams * length].view(n_streams, length).to(device)
    y_all = codes[1 : n_streams * length + 1].view(n_streams, length).to(device)
    exact = torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if device.type == "cuda" else nullcontext()
    was_training = model.training
    model.eval()
    total = 0.0
    state = None
    try:
        with torch.no_grad(), exact:
            for start in range(0, length, n_steps):
                logits, state = model(x_all[:, start : start + n_steps], state)
                y = y_all[:, start : start + n_steps]
                total += F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
                ).item()
    finally:
        model.train(was_training)
    return total / (n_streams * length)


def stream_layout(n_codes: int, n_streams: int = EVAL_STREAMS) -> tuple[int, int]:
    """How many streams of how many predicted characters a text of ``n_codes`` codes is read as.

    Streams get at least 64 characters each; the few characters left over at the end (fewer
    than the number of streams) are not scored.
    """
    if n_codes < 2:
        raise ValueError(f"need at least 2 characters to evaluate, got {n_codes}")
    n_streams = max(1, min(n_streams, (n_codes - 1) // 64 or 1))
    return n_streams, (n_codes - 1) // n_streams


def scored_chars(n_codes: int, max_chars: int | None = None, n_streams: int = EVAL_STREAMS) -> int:
    """Number of characters :func:`evaluate_loss` scores (what its mean is over)."""
    if max_chars is not None:
        n_codes = min(n_codes, max_chars + 1)
    streams, length = stream_layout(n_codes, n_streams)
    return streams * length


def bits(nats: float) -> float:
    """Bits per character of a loss in nats per character."""
    return nats / math.log(2)
