"""Drawing the next character for a whole batch at once, exactly as :func:`sample.pick_next` would.

``pick_next`` costs about as much per reply as a batched network step costs per row, so with
many replies it would dominate. ``torch.multinomial`` draws one sample as the argmax of
``probs / q`` with ``q`` exponential noise from the reply's generator; :class:`BatchSampler`
does the temperature, the softmax and that argmax for all rows in one go and only fills each
row's noise from its own generator, so every reply consumes its random stream exactly as
``pick_next`` does and gets the same character. Rows with top-k or top-p go through
``pick_next`` itself. Whether this torch draws that way is checked once against
``pick_next`` (:func:`batched_draw_matches`); if it does not, every row uses ``pick_next``.
"""

from __future__ import annotations

import functools

import torch

from model.sample import SampleSettings, pick_next


class BatchSampler:
    """Reusable buffers for drawing one character per row of a (rows, vocab) logits block."""

    def __init__(self, max_batch: int, vocab: int, exact_check: bool = True) -> None:
        self.noise = torch.empty(max_batch, vocab)
        self.batched = batched_draw_matches() if exact_check else True

    def draw(
        self, logits: torch.Tensor, settings: list[SampleSettings], generators: list[torch.Generator]
    ) -> list[int]:
        """One code per row of ``logits`` (float32, CPU), row ``r`` drawn under ``settings[r]``."""
        n = len(settings)
        if not self.batched:
            return [pick_next(logits[r], settings[r], generators[r]) for r in range(n)]
        out = [0] * n
        plain: list[int] = []
        for r, s in enumerate(settings):
            if s.temperature == 0 or s.top_k or s.top_p < 1.0:
                out[r] = pick_next(logits[r], s, generators[r])
            else:
                plain.append(r)
        if not plain:
            return out
        rows = logits[:n] if len(plain) == n else logits.index_select(0, torch.tensor(plain))
        noise = self.noise[: len(plain)]
        for i, r in enumerate(plain):
            noise[i].exponential_(generator=generators[r])
        temps = [settings[r].temperature for r in plain]
        if len(plain) == 1:
            scaled = rows / temps[0]
        else:
            scaled = rows / torch.tensor(temps, dtype=torch.float32).view(-1, 1)
        picks = torch.argmax(torch.softmax(scaled, dim=-1) / noise, dim=1).tolist()
        for i, r in enumerate(plain):
            out[r] = picks[i]
        return out


@functools.cache
def batched_draw_matches(trials: int = 64) -> bool:
    """Whether :meth:`BatchSampler.draw` picks what ``pick_next`` picks with this torch build."""
    vocab = 96
    gen = torch.Generator().manual_seed(12345)
    logits = torch.randn(trials, vocab, generator=gen) * 3
    settings = [SampleSettings(temperature=0.3 + 1.5 * i / trials) for i in range(trials)]
    sampler = BatchSampler(trials, vocab, exact_check=False)
    ref_gens = [torch.Generator().manual_seed(i) for i in range(trials)]
    our_gens = [torch.Generator().manual_seed(i) for i in range(trials)]
    for _ in range(3):  # several rounds: each generator must also advance as pick_next advances it
        ref = [pick_next(logits[i], settings[i], ref_gens[i]) for i in range(trials)]
        if sampler.draw(logits, settings, our_gens) != ref:
            return False
    return True
