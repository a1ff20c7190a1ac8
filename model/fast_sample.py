"""Drawing the next character for a whole batch at once, exactly as :func:`sample.pick_next` would.

``pick_next`` costs about as much per reply as a batched network step costs per row, so with
many replies it would dominate. ``torch.multinomial`` draws one sample as the argmax of
``probs / q`` with ``q`` exponential noise from the reply's generator; :class:`BatchSampler`
does the temperature, the softmax and that argmax for all rows in one go and only fills each
row's noise from its own generator, so every reply consumes its random stream exactly as
``pick_next`` does and gets the same character. Rows with top-k or top-p go through
``pick_next`` itself. Whether this torch draws that way is checked once against
``pick_next`` (:func:`batched_draw_matches`); if it does not, every row uses ``pick_next``.

A row's noise comes from its :class:`Noise`: one ``exponential_`` call fills the next
:data:`NOISE_BLOCK` characters' noise at once, which this torch draws exactly as that many
calls one after another would (the same check covers it, across a block's end). One call per
character per row was the largest cost of a crowd's draw.

A lone reply pays the draw on every character, beside a step that is itself only a few
kernel calls, so the draw's fixed costs show in the reply's speed. It is therefore a fixed
handful of kernels on preallocated buffers: the whole block of rows goes through them (rows
that do not draw this step cost a few floats, not an ``index_select`` and a new index
tensor), the temperatures sit in a buffer instead of a tensor made per step, and the drawn
codes and their log-likelihoods are read through NumPy views instead of ``gather`` and
``tolist``. Every kernel works row by row, so a row's draw and score are the same bits
whatever the other rows hold.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from model.sample import SampleSettings, pick_next

NOISE_BLOCK = 64  # characters of noise a row draws from its generator at once


class Noise:
    """One reply's exponential noise for the batched draw, drawn from its generator a block at a time.

    Only :meth:`BatchSampler.draw_scored` takes from it, and only for rows it draws in the
    batch; a row drawn by ``pick_next`` uses :attr:`generator` itself and never a block (a
    reply's settings, and so its way of drawing, do not change while it runs).
    """

    def __init__(self, generator: torch.Generator, block: int = NOISE_BLOCK) -> None:
        self.generator = generator
        self.block = block
        self._rows: np.ndarray | None = None
        self._next = 0

    def take(self, vocab: int) -> np.ndarray:
        """The next character's noise, ``(vocab,)`` float32 (``vocab``: the sampler's, the same every call)."""
        if self._rows is None or self._next == self.block:
            self._rows = torch.empty(self.block, vocab).exponential_(generator=self.generator).numpy()
            self._next = 0
        self._next += 1
        return self._rows[self._next - 1]


def _batched(settings: SampleSettings) -> bool:
    """Whether a row under ``settings`` draws in the batch (plain temperature sampling)."""
    return settings.temperature != 0 and not settings.top_k and settings.top_p >= 1.0


class BatchSampler:
    """Reusable buffers for drawing one character per row of a (rows, vocab) logits block."""

    def __init__(self, max_batch: int, vocab: int, exact_check: bool = True) -> None:
        self.noise = torch.empty(max_batch, vocab)
        self.temps = torch.ones(max_batch, 1)
        self.scaled = torch.empty(max_batch, vocab)
        self.probs = torch.empty(max_batch, vocab)
        self.logp = torch.empty(max_batch, vocab)
        self._noise_np = self.noise.numpy()
        self._temps_np = self.temps.numpy()[:, 0]
        self._probs_np = self.probs.numpy()
        self._logp_np = self.logp.numpy()
        self._views: dict[int, tuple[torch.Tensor, ...]] = {}
        self.batched = batched_draw_matches() if exact_check else True

    def _view(self, n: int) -> tuple[torch.Tensor, ...]:
        """The first ``n`` rows of each buffer (slicing is not free, so it is done once per size)."""
        views = self._views.get(n)
        if views is None:
            views = self._views[n] = (self.noise[:n], self.temps[:n], self.scaled[:n], self.probs[:n], self.logp[:n])
        return views

    def draw(self, logits: torch.Tensor, settings: list[SampleSettings], noises: list[Noise]) -> list[int]:
        """One code per row of ``logits`` (float32, CPU), row ``r`` drawn under ``settings[r]``."""
        n = len(settings)
        return self.draw_scored(logits[:n], range(n), settings, noises)[0]

    def draw_scored(
        self,
        block: torch.Tensor,
        rows: Sequence[int],
        settings: Sequence[SampleSettings],
        noises: Sequence[Noise],
    ) -> tuple[list[int], list[float]]:
        """Draw for ``rows`` of ``block`` (float32, CPU, contiguous): codes and their log-likelihoods.

        ``settings[i]`` and ``noises[i]`` (the reply's noise and generator) belong to row
        ``rows[i]``; the other rows of ``block`` are ignored. The log-likelihood is the model's
        own at temperature 1 (what best-of-n scores by), whatever temperature the row draws at.
        """
        noise, temps, scaled, probs, logp = self._view(block.shape[0])
        codes = [0] * len(rows)
        plain: list[int] = []
        for i, row in enumerate(rows):
            s = settings[i]
            if self.batched and _batched(s):
                self._noise_np[row] = noises[i].take(self._noise_np.shape[1])
                self._temps_np[row] = s.temperature
                plain.append(i)
            else:
                codes[i] = pick_next(block[row], s, noises[i].generator)
        if plain:
            torch.div(block, temps, out=scaled)
            torch.softmax(scaled, 1, out=probs)
            probs.div_(noise)
            picks = self._probs_np[: block.shape[0]].argmax(1)
            for i in plain:
                codes[i] = int(picks[rows[i]])
        torch.log_softmax(block, 1, out=logp)
        scores = self._logp_np
        return codes, [float(scores[row, code]) for row, code in zip(rows, codes, strict=True)]


@functools.cache
def batched_draw_matches(trials: int = 64) -> bool:
    """Whether :meth:`BatchSampler.draw` picks what ``pick_next`` picks with this torch build.

    Checked for a full block and for a lone row (the engine's commonest block), with noise
    drawn in blocks of two characters, so that a block's end is crossed too.
    """
    vocab = 96
    gen = torch.Generator().manual_seed(12345)
    logits = torch.randn(trials, vocab, generator=gen) * 3
    settings = [SampleSettings(temperature=0.3 + 1.5 * i / trials) for i in range(trials)]
    sampler = BatchSampler(trials, vocab, exact_check=False)
    ref_gens = [torch.Generator().manual_seed(i) for i in range(trials)]
    ours = [Noise(torch.Generator().manual_seed(i), block=2) for i in range(trials)]
    for _ in range(3):  # several rounds: each generator must also advance as pick_next advances it
        ref = [pick_next(logits[i], settings[i], ref_gens[i]) for i in range(trials)]
        if sampler.draw(logits, settings, ours) != ref:
            return False
        for i in range(0, trials, 7):
            if sampler.draw(logits[i : i + 1], settings[i : i + 1], ours[i : i + 1]) != [
                pick_next(logits[i], settings[i], ref_gens[i])
            ]:
                return False
    return True
