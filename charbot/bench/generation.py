"""Single-reply generation speed: the engine (each precision), the reference path, the classic recipe."""

from __future__ import annotations

import threading
import time

import torch

from charbot.bench.stats import median
from charbot.model.checkpoint import Checkpoint
from charbot.model.engine import Engine
from charbot.model.sample import SampleSettings, generate, prime_codes

PRIME = "Once upon a time there was a little girl who lived by the edge of a great forest. "


def engine_single(
    ck: Checkpoint,
    chars: int,
    repeats: int,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    threads: int | None = None,
) -> dict:
    """Median chars/s over ``repeats`` replies of ``chars`` characters, one at a time.

    The prime is empty (one newline), so this is the per-character cost; the time to the
    first character of a real prompt is measured separately with a typical prime.
    """
    speeds, firsts = [], []
    with Engine(ck, device=device, max_batch=8, precision=precision, threads=threads) as eng:
        eng.submit("warm up", SampleSettings(seed=0, max_chars=20)).result()
        for i in range(repeats):
            t0 = time.perf_counter()
            gen = eng.submit("", SampleSettings(seed=i + 1, max_chars=chars)).result()
            speeds.append(len(gen.text) / (time.perf_counter() - t0))
        prime = PRIME
        for i in range(repeats):
            first = threading.Event()
            stamp: list[float] = []

            def on_text(piece: str, first: threading.Event = first, stamp: list[float] = stamp) -> None:
                if not first.is_set():
                    stamp.append(time.perf_counter())
                    first.set()

            t0 = time.perf_counter()
            fut = eng.submit(prime, SampleSettings(seed=i + 1, max_chars=5), on_text)
            fut.result()
            if stamp:
                firsts.append(stamp[0] - t0)
    cps = median(speeds)
    return {"chars_per_s": cps, "ms_per_char": 1000 / cps, "first_char_ms": 1000 * median(firsts),
            "precision": precision, "device": str(device), "chars": chars, "repeats": repeats}


def reference_single(ck: Checkpoint, chars: int) -> dict:
    """chars/s of :func:`sample.generate`: the plain ``nn.LSTM`` forward, one call per character."""
    t0 = time.perf_counter()
    gen = generate(ck.model, [""], SampleSettings(seed=1, max_chars=chars))[0]
    cps = len(gen.text) / (time.perf_counter() - t0)
    return {"chars_per_s": cps, "ms_per_char": 1000 / cps, "chars": chars}


@torch.no_grad()
def reference_prime_ms(ck: Checkpoint, repeats: int = 3) -> float:
    """Milliseconds for ``nn.LSTM`` to read :data:`PRIME` in one call (the other way to prime)."""
    codes = prime_codes(PRIME)[2].view(1, -1)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        ck.model(codes)
        times.append(time.perf_counter() - t0)
    return 1000 * median(times[1:])
