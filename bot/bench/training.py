"""Training speed: our ``train()`` against the classic recipe at the same size and batch shape."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from model.device import training_precision
from model.network import ModelConfig
from model.textdata import TextData
from model.train import Progress, TrainConfig, train


def our_training(
    text: Path,
    hidden: int,
    layers: int,
    seqs: int,
    steps: int,
    seconds: float,
    threads: int | None = None,
    device: str = "cpu",
    dropout: float = 0.5,
    precision: str = "auto",
) -> dict:
    """chars/s of :func:`model.train.train` for about ``seconds`` (validation excluded).

    ``precision`` is train()'s: ``auto`` is what a user gets (bf16 autocast where the
    hardware has it), ``fp32`` shows what that choice is worth.

    The run is the real one (batches, AdamW, clipping, logging) in a scratch folder, stopped
    from outside ``seconds`` after its loop starts (the classic script also times only its
    loop); its own chars/s figure leaves out time spent validating.
    """
    data = TextData.from_file(text)
    seen: list[Progress] = []
    cfg = TrainConfig(n_seqs=seqs, n_steps=steps, lr=1e-3, warmup_steps=1, eval_every=10**9, log_every=1,
                      max_steps=10**9, device=device, threads=threads, precision=precision)
    model_cfg = ModelConfig(hidden_size=hidden, n_layers=layers, dropout=dropout)
    started: list[float] = []

    def should_stop() -> bool:  # asked before every step; the first ask starts the clock
        now = time.perf_counter()
        if not started:
            started.append(now)
        return now - started[0] >= seconds

    with tempfile.TemporaryDirectory(prefix="charbot-bench-") as tmp:
        result = train(data, Path(tmp) / "bench.safetensors", cfg, model_cfg, on_progress=seen.append,
                       should_stop=should_stop, progress_bar=False)
    if not seen:
        raise RuntimeError(f"training made no step in {seconds:g} s; give it more time")
    last = seen[-1]
    return {"chars_per_s": last.chars_per_s, "chars": last.chars_seen, "steps": result.steps,
            "seconds": last.elapsed_s, "hidden": hidden, "layers": layers, "seqs": seqs, "steps_per_seq": steps,
            "device": device, "threads": threads,
            "precision": training_precision(precision, torch.device(device))}
