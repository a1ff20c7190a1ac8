"""The GPU rows: single reply four ways, many replies at once, and training against the classic recipe.

All on the GPU at hand, in one run, so each ratio compares code on the same card:

- single reply: the engine's fused step replayed as a CUDA graph, the same step launched
  kernel by kernel, plain ``nn.LSTM`` one character per call (:func:`sample.generate`) on
  the GPU, and the CPU engine; plus how much of a graphed step is launch and transfer
  overhead rather than GPU work;
- 64 replies at once through the bot's reply path: aggregate chars/s and event-loop lag;
- training chars/s at batch shapes that fill the GPU, beside the classic notebook recipe
  moved to the same GPU the way notebooks do it (see :mod:`bot.bench.classic_on_gpu`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from bot.bench import classic, concurrent, generation, training
from bot.bench.stats import median, ratio
from model.checkpoint import Checkpoint
from model.fast_step import FastStep

GPU_TRAIN_SEQS = (128, 512, 1024)  # 128 is the CPU rows' shape; the larger ones fill an H100
GPU_CONCURRENCY = (1, 8, 32, 64)


def available() -> bool:
    return torch.cuda.is_available()


def device_facts() -> dict:
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported(),
            "torch_cuda": torch.version.cuda}


def on_gpu(ck: Checkpoint) -> Checkpoint:
    return Checkpoint(copy.deepcopy(ck.model).to("cuda").eval(), ck.config, ck.info)


def single_reply(ck: Checkpoint, chars: int, repeats: int) -> dict:
    """ms per character four ways (medians of ``repeats`` replies), and a graphed step's overhead share."""
    row: dict = {}
    for name, kwargs in (("graphs", {"device": "cuda"}), ("no_graphs", {"device": "cuda", "cuda_graphs": False}),
                         ("cpu_engine", {"device": "cpu", "precision": "auto"})):
        probe = generation.SingleReply(ck, **kwargs)
        try:
            cps = median([probe.chars_per_s(chars, seed=i + 1) for i in range(repeats)])
            row[name] = {"chars_per_s": cps, "ms_per_char": 1000 / cps, "first_char_ms": probe.first_char_ms(1)}
        finally:
            probe.close()
    gpu_ck = on_gpu(ck)
    generation.reference_single(gpu_ck, 20)  # warm-up: cuDNN plans
    row["nn_lstm"] = generation.reference_single(gpu_ck, min(chars, 400))
    row["step"] = step_overhead(gpu_ck)
    base = row["nn_lstm"]["chars_per_s"]
    for name in ("graphs", "no_graphs", "cpu_engine"):
        row[name]["vs_nn_lstm"] = ratio(row[name]["chars_per_s"], base)
    return row


def step_overhead(ck: Checkpoint, steps: int = 500) -> dict:
    """One row's step, with and without graphs, against the GPU time of the replayed graph alone.

    The share of a graphed step that is not GPU work (input copy, replay launch, logits copy
    back, synchronisation) is what CUDA graphs cannot remove and a bigger GPU cannot speed up.
    """
    out: dict = {}
    for graphs in (True, False):
        fast = FastStep(ck.model, 8, device="cuda", cuda_graphs=graphs)
        zeros = torch.zeros(fast.n_layers, 1, fast.hidden)
        fast.set_row(0, (zeros, zeros), torch.zeros(fast.vocab))
        for _ in range(20):
            fast.step(1)
        t0 = time.perf_counter()
        for _ in range(steps):
            fast.step(1)
        out["graph_step_ms" if graphs else "eager_step_ms"] = 1000 * (time.perf_counter() - t0) / steps
        if graphs:
            graph = fast._graphs[1]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                graph.replay()
            end.record()
            end.synchronize()
            out["gpu_ms_per_step"] = start.elapsed_time(end) / steps
    out["overhead_share_of_graph_step"] = 1 - out["gpu_ms_per_step"] / out["graph_step_ms"]
    out["launch_share_of_eager_step"] = 1 - out["graph_step_ms"] / out["eager_step_ms"]
    return out


def many_replies(ck: Checkpoint, chars: int, corpus: str, counts: tuple[int, ...] = GPU_CONCURRENCY) -> list[dict]:
    return concurrent.concurrent_replies(ck, counts, chars, corpus=corpus, device="cuda", min_replies=64)


def training_rows(text: Path, hidden: int, layers: int, steps: int, seconds: float, script: Path | None,
                  seqs: tuple[int, ...] = GPU_TRAIN_SEQS) -> list[dict]:
    """Our ``train()`` on the GPU at each batch shape, beside the classic recipe on the same GPU."""
    rows = []
    for n in seqs:
        row: dict = {"size": f"{layers}x{hidden}", "seqs": n, "steps_per_seq": steps}
        row["ours"] = training.our_training(text, hidden, layers, n, steps, seconds, device="cuda")
        if script is not None:
            try:
                row["classic"] = classic.classic_train(script, text, hidden, layers, n, steps, seconds, None,
                                                       device="cuda")
            except classic.BaselineError as exc:
                row["classic_error"] = str(exc)
        row["vs_classic"] = ratio(row["ours"]["chars_per_s"], row.get("classic", {}).get("chars_per_s"))
        rows.append(row)
    return rows
