"""Training speed: our ``train()`` against the classic recipe at the same size and batch shape."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from charbot.model.network import ModelConfig
from charbot.model.textdata import TextData
from charbot.model.train import Progress, TrainConfig, train


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
) -> dict:
    """chars/s of :func:`charbot.model.train.train` for about ``seconds`` (validation excluded).

    The run is the real one (batches, AdamW, clipping, logging) in a scratch folder, stopped
    from outside ``seconds`` after its loop starts (the classic script also times only its
    loop); its own chars/s figure leaves out time spent validating.
    """
    data = TextData.from_file(text)
    seen: list[Progress] = []
    cfg = TrainConfig(n_seqs=seqs, n_steps=steps, lr=1e-3, warmup_steps=1, eval_every=10**9, log_every=1,
                      max_steps=10**9, device=device, threads=threads, val_fraction=0.1)
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
            "device": device, "threads": threads}


def autocast_probe(
    text: Path, hidden: int, layers: int, seqs: int, steps: int, seconds: float, threads: int | None = None,
) -> dict:
    """chars/s of train()'s step (embedding, LSTM, AdamW, clipping) with and without CPU bf16 autocast.

    A proposal, not what ``train()`` does today: on CPUs with bfloat16 instructions autocast
    runs the LSTM in bf16 with float32 master weights. Both variants run alternately here, so
    their ratio is fair; whether bf16 training loses quality has to be checked on real runs.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    from charbot.model.batches import BatchPlan
    from charbot.model.network import CharLSTM

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        codes = TextData.from_file(text).codes()
        plan = BatchPlan(codes, seqs, steps, seed=0)
        runs = {}
        for name, ctx in (("fp32", contextlib.nullcontext), ("bf16_autocast",
                                                              lambda: torch.autocast("cpu", dtype=torch.bfloat16))):
            torch.manual_seed(0)
            model = CharLSTM(ModelConfig(hidden_size=hidden, n_layers=layers, dropout=0.5)).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            runs[name] = (model, opt, ctx, [model.init_state(seqs)], [0, 0.0])
        index = 0
        deadline = time.perf_counter() + 2 * seconds
        while time.perf_counter() < deadline:
            x, y = plan.batch(0, index % plan.batches_per_epoch())
            index += 1
            for model, opt, ctx, state, tally in runs.values():
                t0 = time.perf_counter()
                h = tuple(s.detach() for s in state[0])
                with ctx():
                    logits, h = model(x, h)
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                loss.item()
                state[0] = h
                tally[0] += x.numel()
                tally[1] += time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    speeds = {name: tally[0] / tally[1] for name, (*_, tally) in runs.items()}
    return {**{f"{k}_chars_per_s": v for k, v in speeds.items()},
            "bf16_autocast_speedup": speeds["bf16_autocast"] / speeds["fp32"], "steps_each": index}
