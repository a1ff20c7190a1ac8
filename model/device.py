"""Where and how the model runs: the device, the CPU thread count and the arithmetic precision.

One place for these rules, so training, the generation engine and the benchmark cannot drift
apart: each asks here instead of deciding for itself.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch

PRECISIONS = ("fp32", "bf16", "auto")  # what training computes in
GENERATION_PRECISIONS = ("fp32", "bf16", "int8", "auto")  # what the generation engine's weights may be

ThreadUse = Literal["training", "generation", "boost"]


def pick_device(requested: str | None = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda[:N]`` to a usable device (a GPU always with its index), or a clear error."""
    if requested in (None, "", "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {requested!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} requested but there are {torch.cuda.device_count()} CUDA devices")
        if device.index is None:  # one name per GPU ("cuda:0"), so reports and comparisons agree
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise ValueError(f"device {requested!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def cpu_threads(use: ThreadUse) -> int:
    """Torch CPU threads for one job on this machine, at least one.

    Torch's default of one thread per core is several times slower, not faster, when other
    work shares the cores: every parallel operation waits for its slowest thread. So:

    - ``training`` (one long run): the cores that other processes leave free, judged by the
      one-minute load average.
    - ``generation`` (an engine's worker): one on small machines, a few on big ones. One
      reply's step is too small to split well, and on a machine with two cores the event loop
      (and often other engines) needs the other core: oversubscribed torch threads wait on
      each other and a step can become ten times slower.
    - ``boost`` (an engine's worker stepping a lone reply while nothing else needs the cores,
      see :mod:`model.step_threads`): every core this process may use.
    """
    if use not in ("training", "generation", "boost"):
        raise ValueError(f"use must be 'training', 'generation' or 'boost', got {use!r}")
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if use == "boost":
        return max(1, cores)
    if use == "generation":
        return 1 if cores <= 2 else min(4, cores // 2)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, cores - int(busy + 0.5)))


def bf16_matmul_supported() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions oneDNN can use."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_bf16_supported() -> bool:
    """Whether the current GPU computes in bfloat16 natively (False without CUDA)."""
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):
        return False


@functools.cache
def int8_matmul_supported() -> bool:
    """Whether this PyTorch has oneDNN's u8 x s8 linear, the engine's ``int8`` path (CPU only), and it
    computes exactly on this CPU.

    On a CPU without VNNI instructions (an AMD EPYC of family 25, for one) oneDNN sums pairs of
    u8 x s8 products in 16 bits, which saturate, so the results are wrong: such a CPU has no
    int8 path, and ``auto`` never measures one. Checked once per process.
    """
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
                and hasattr(torch.ops.onednn, "qlinear_prepack")):
            return False
        return _int8_linear_is_exact()
    except (AttributeError, RuntimeError):
        return False


def _int8_linear_is_exact(rows: int = 8, k: int = 256) -> bool:
    """One small u8 x s8 product at the extremes of both ranges, against the exact answer."""
    weight = (torch.arange(rows * k, dtype=torch.long).remainder(255) - 127).to(torch.int8).view(rows, k)
    scale = torch.ones(rows, dtype=torch.float32)
    packed = torch.ops.onednn.qlinear_prepack(weight, [1, k])
    x = torch.full((1, k), 255, dtype=torch.uint8)
    got = torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, packed, scale, torch.zeros(rows, dtype=torch.long), None,
                                             1.0, 0, torch.float32, "none", [], "")
    want = x.double() @ weight.double().t()
    return bool(torch.equal(got.double(), want))


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` itself when it is one of ``allowed``, else a ValueError naming them."""
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return precision


def generation_precisions(device: torch.device) -> list[str]:
    """The concrete precisions the engine can run on ``device`` natively, fp32 first."""
    if device.type == "cuda":
        return ["fp32", "bf16"] if cuda_bf16_supported() else ["fp32"]
    out = ["fp32"]
    if bf16_matmul_supported():
        out.append("bf16")
    if int8_matmul_supported():
        out.append("int8")
    return out


def resolve_precision(precision: str, device: torch.device) -> str:
    """Generation's static rule, without measuring: ``auto`` is bf16 on a CPU with native
    bfloat16 matrix instructions, else fp32; ``int8`` where the device has no int8 path is an error.

    The engine's ``auto`` measures instead (see :mod:`model.precision`); this rule is what
    :class:`~model.fast_step.FastStep` does with ``auto`` on its own, and what training uses on a CPU.
    """
    if check_precision(precision, GENERATION_PRECISIONS) == "auto":
        return "bf16" if device.type == "cpu" and bf16_matmul_supported() else "fp32"
    if precision == "int8" and "int8" not in generation_precisions(device):
        where = "on a GPU" if device.type == "cuda" else "in this PyTorch build (it needs oneDNN's quantized linear)"
        raise ValueError(f"precision int8 is not available {where}: use fp32, bf16 or auto")
    return precision


def training_precision(precision: str, device: torch.device) -> str:
    """What the forward and backward passes compute in: ``fp32`` or ``bf16`` (autocast).

    ``auto`` is bf16 on GPUs that support it (``torch.cuda.is_bf16_supported()``: Ampere and
    later; older ones would emulate it slowly) and on CPUs with native bfloat16 matrix
    instructions, where it trains faster (most at large batches, where arithmetic rather than
    per-step overhead dominates) and reaches the same held-out loss per step (side-by-side
    runs: model/README.md, "Speed"); weights, optimizer state and validation always stay
    float32.
    """
    if check_precision(precision) == "auto" and device.type == "cuda":
        return "bf16" if cuda_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not bf16_matmul_supported():
        # oneDNN has no bf16 LSTM for such a CPU: the first forward pass would fail deep inside torch
        raise ValueError("precision bf16 trains only on a CPU with native bfloat16 instructions (avx512_bf16 or "
                         "AMX), and this one has none: use fp32 or auto")
    return resolve_precision(precision, device)  # on CPU, the engine's rule: bf16 where it is native
