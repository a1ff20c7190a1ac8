"""Single-reply generation speed: the engine (each precision), the reference path, the classic recipe."""

from __future__ import annotations

import threading
import time

import torch

from model.checkpoint import Checkpoint
from model.engine import Engine
from model.sample import SampleSettings, generate, prime_codes

PRIME = "Once upon a time there was a little girl who lived by the edge of a great forest. "


class SingleReply:
    """An engine kept warm for timing one reply at a time (so runs can interleave with the baseline)."""

    def __init__(self, ck: Checkpoint, device: str | torch.device = "cpu", precision: str = "fp32",
                 threads: int | None = None, cuda_graphs: bool = True, step: str | None = None) -> None:
        self.engine = Engine(ck, device=device, max_batch=8, precision=precision, threads=threads,
                             cuda_graphs=cuda_graphs, step=step)
        self.engine.submit(PRIME, SampleSettings(seed=0, max_chars=20)).result()

    def chars_per_s(self, chars: int, seed: int) -> float:
        """One reply of ``chars`` characters from an empty prime: the per-character cost."""
        t0 = time.perf_counter()
        gen = self.engine.submit("", SampleSettings(seed=seed, max_chars=chars)).result()
        return len(gen.text) / (time.perf_counter() - t0)

    def first_char_ms(self, seed: int) -> float:
        """Milliseconds from submitting :data:`PRIME` to its first character (priming included)."""
        first = threading.Event()
        stamp: list[float] = []

        def on_text(piece: str) -> None:
            if not first.is_set():
                stamp.append(time.perf_counter())
                first.set()

        t0 = time.perf_counter()
        self.engine.submit(PRIME, SampleSettings(seed=seed, max_chars=5), on_text).result()
        return 1000 * (stamp[0] - t0) if stamp else float("nan")

    def boosted_share(self) -> float:
        """The share of this engine's steps that used every core (see :mod:`model.step_threads`)."""
        return self.engine.boosted_steps / max(1, self.engine.steps)

    def close(self) -> None:
        self.engine.close()


def reference_single(ck: Checkpoint, chars: int) -> dict:
    """chars/s of :func:`sample.generate`: the plain ``nn.LSTM`` forward, one call per character."""
    t0 = time.perf_counter()
    gen = generate(ck.model, [""], SampleSettings(seed=1, max_chars=chars))[0]
    cps = len(gen.text) / (time.perf_counter() - t0)
    return {"chars_per_s": cps, "ms_per_char": 1000 / cps, "chars": chars}


@torch.no_grad()
def reference_prime_ms(ck: Checkpoint) -> float:
    """Milliseconds for ``nn.LSTM`` to read :data:`PRIME` in one call (the other way to prime)."""
    codes = prime_codes(PRIME)[2].view(1, -1)
    ck.model(codes)
    t0 = time.perf_counter()
    ck.model(codes)
    return 1000 * (time.perf_counter() - t0)
