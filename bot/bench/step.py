"""Where one character's time goes, and how far the step is from what its weights take to read.

For each step path the engine has here (:func:`model.precision.candidates`: the eager step at
each native precision, the fused step where its kernel builds), on one model:

- **step time** at 1 row and at 32 rows, the paths interleaved round by round (so background
  load hits them alike), medians: wall time, and beside it the thread's CPU time, which a
  machine busy with other processes inflates far less (it leaves out the time the thread
  waited for a core, not the time it waited for memory others were using);
- **the weight-traffic floor**: the time to read the step's weight bytes once, warm, on this
  machine and thread: a ``torch.sum`` over a float32 buffer of the same bytes, and the fused
  kernel's own read loop where it is built (four independent vector sums, nothing else); the
  faster of the two medians is the floor, and the step's **ratio** to it is reported at 1 row,
  where a step can do no better than read its weights once;
- **the breakdown by call** at 1 row (``torch.profiler``): each PyTorch call's own time per
  character, one step and one draw (the engine's :class:`~model.fast_sample.BatchSampler`) per
  character, and what the profiler cannot see inside ``FastStep.step`` (Python, and the fused
  kernel's one call).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from model import fused_step
from model.checkpoint import Checkpoint
from model.device import cpu_threads
from model.fast_sample import BatchSampler, Noise
from model.fast_step import FastStep
from model.precision import parse
from model.sample import SampleSettings

STEP_LABEL = "FastStep.step"  # the profiler's name for the whole step; its own time is what no op accounts for
DRAW_LABEL = "draw"


def _time_steps(fast: FastStep, rows: int, steps: int) -> tuple[float, float]:
    """Microseconds per step of ``rows`` rows over ``steps`` steps: wall time, and the thread's CPU time."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        fast.step(rows)
    return 1e6 * (time.perf_counter() - t0) / steps, 1e6 * (time.thread_time() - c0) / steps


def _fill(fast: FastStep, rows: int) -> None:
    zeros = torch.zeros(fast.n_layers, 1, fast.hidden)
    for row in range(rows):
        fast.set_row(row, (zeros, zeros), torch.zeros(fast.vocab))
        fast.codes[row] = 1 + row % (fast.vocab - 1)


def read_floor_us(nbytes: int, rounds: int = 15) -> dict:
    """Microseconds to read ``nbytes`` once, warm: ``torch.sum`` and the fused kernel's read loop, medians."""
    buf = torch.ones(max(8, nbytes // 4))
    kernel = fused_step.load_kernel()
    readers = {"torch.sum": lambda: buf.sum()}
    if kernel is not None:
        readers["kernel read"] = lambda: kernel.read(buf)
    times: dict[str, list[float]] = {name: [] for name in readers}
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(3):
        for read in readers.values():
            read()
    for _ in range(rounds):
        for name, read in readers.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            read()
            times[name].append(1e6 * (time.perf_counter() - t0))
            cpu[name].append(1e6 * (time.thread_time() - c0))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    best = min(medians, key=medians.get)
    return {"bytes": nbytes, "us": medians[best], "how": best, "medians_us": medians,
            "cpu_us": min(statistics.median(ts) for ts in cpu.values())}


@torch.no_grad()
def breakdown(fast: FastStep, chars: int = 64) -> dict:
    """One row's cost per character by call: a step and a draw each, under ``torch.profiler``."""
    sampler = BatchSampler(1, fast.vocab)
    settings, noises = [SampleSettings(temperature=0.8)], [Noise(torch.Generator().manual_seed(0))]
    _fill(fast, 1)

    def char() -> None:
        with record_function(STEP_LABEL):
            logits = fast.step(1)
        with record_function(DRAW_LABEL):
            fast.codes[0] = sampler.draw(logits, settings, noises)[0]

    for _ in range(8):
        char()
    t0 = time.perf_counter()
    for _ in range(chars):
        char()
    plain_us = 1e6 * (time.perf_counter() - t0) / chars
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(chars):
            char()
    calls = []
    for e in prof.key_averages():
        own = e.self_cpu_time_total / chars
        if own <= 0:
            continue
        name = {STEP_LABEL: f"{STEP_LABEL} itself (Python; the fused kernel's call)",
                DRAW_LABEL: f"{DRAW_LABEL} itself (Python)"}.get(e.key, e.key)
        calls.append({"call": name, "us_per_char": own, "calls_per_char": e.count / chars})
    calls.sort(key=lambda c: -c["us_per_char"])
    profiled = sum(c["us_per_char"] for c in calls)
    return {"chars": chars, "us_per_char": plain_us, "profiled_us_per_char": profiled, "calls": calls,
            "calls_per_char": sum(c["calls_per_char"] for c in calls)}


@torch.no_grad()
def profile_steps(ck: Checkpoint, labels: list[str], rows: tuple[int, ...] = (1, 32), rounds: int = 7,
                  steps: int = 16, chars: int = 64) -> dict:
    """Every path in ``labels`` on ``ck``'s model: step times, floor, ratio, breakdown (module docstring)."""
    model = ck.model.eval()
    paths: dict[str, FastStep] = {}
    errors: dict[str, str] = {}
    for name in labels:
        precision, step = parse(name)
        try:
            fast = FastStep(model, max(rows), precision=precision, step=step)
        except (ValueError, RuntimeError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        if fast.path != step:
            errors[name] = "the fused step is not available here"
            continue
        paths[name] = fast
    times: dict[str, dict[int, list[tuple[float, float]]]] = {name: {n: [] for n in rows} for name in paths}
    cores = cpu_threads("boost")  # the fused kernel shares a crowd's step among this many threads
    shared: dict[str, list[tuple[float, float]]] = {name: [] for name, f in paths.items() if f.fused and cores > 1}
    for fast in paths.values():
        _fill(fast, max(rows))
        for n in rows:
            _time_steps(fast, n, 2)  # warm-up: oneDNN builds its kernels per batch size on first use
    for _ in range(rounds):
        for name, fast in paths.items():
            for n in rows:
                times[name][n].append(_time_steps(fast, n, max(1, steps // n if n > 1 else steps)))
            if name in shared:
                fast.fused.set_threads(cores)
                shared[name].append(_time_steps(fast, max(rows), max(1, steps // max(rows))))
                fast.fused.set_threads(1)
    out = []
    for name, fast in paths.items():
        floor = read_floor_us(fast.weight_bytes())
        step_us = {str(n): statistics.median(w for w, _ in times[name][n]) for n in rows}
        step_cpu_us = {str(n): statistics.median(c for _, c in times[name][n]) for n in rows}
        lone, lone_cpu = step_us.get("1"), step_cpu_us.get("1")
        out.append({"path": name, "weight_bytes": floor["bytes"], "step_us": step_us, "step_cpu_us": step_cpu_us,
                    "shared_us": statistics.median(w for w, _ in shared[name]) if name in shared else None,
                    "shared_threads": cores if name in shared else None, "shared_rows": max(rows),
                    "floor": floor, "floor_ratio": None if lone is None else lone / floor["us"],
                    "floor_ratio_cpu": None if lone_cpu is None else lone_cpu / max(floor["cpu_us"], 1e-9),
                    "breakdown": breakdown(fast, chars)})
    return {"paths": out, "errors": errors, "rounds": rounds, "threads": torch.get_num_threads()}
