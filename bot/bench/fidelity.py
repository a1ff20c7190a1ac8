"""How faithful the fast paths are: each precision's KL against fp32, and how often texts agree exactly.

Exact agreement can only fail at float near-ties (two candidates whose noisy scores differ in
the last bits), so the rates here show how rare those are at real sizes.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from corpora.heldout import corpus_heldout
from model.charset import decode, encode, normalize
from model.checkpoint import Checkpoint
from model.engine import Engine
from model.precision import Bounds, fidelity, parse
from model.sample import SampleSettings, generate

FALLBACK_TEXT = (
    "Once upon a time there lived a king and a queen who had no children, and they were very sad. "
    "\"Wash your hands often with soap and water for at least 20 seconds,\" the notice said. "
    "Everything was in confusion in the Oblonskys' house. The wife had discovered that the husband "
    "was carrying on an intrigue with a French girl, who had been a governess in their family.\n\n"
)


def sample_text(ck: Checkpoint, chars: int) -> tuple[str, str]:
    """Text to read the model on: its corpus's held-out part when available, else a fixed mix."""
    corpus = ck.info.get("corpus")
    codes, _ = corpus_heldout(corpus, chars) if isinstance(corpus, str) else (None, None)
    if codes is not None and len(codes) >= chars:
        return decode(codes[:chars]), f"{corpus} held-out"
    text = normalize(FALLBACK_TEXT).text
    return (text * (chars // len(text) + 1))[:chars], "fixed English sample"


@torch.no_grad()
def kl_against_reference(ck: Checkpoint, chars: int = 2000, precision: str = "bf16") -> dict:
    """Per-character KL(reference || fast step at ``precision``) over real text, in nats.

    The same measure the engine's ``auto`` applies to the model's own text
    (:func:`model.precision.fidelity`), here on the corpus's held-out text.
    """
    text, source = sample_text(ck, chars)
    precision, step = parse(precision)  # a candidate's label: "bf16 fused" is the fused step at bf16
    got = fidelity(ck.model, encode(text), precision, step=step)
    return {"text": source, **asdict(got), "meets_bounds": got.meets(Bounds())}


def agreement(ck: Checkpoint, seeds: int, chars: int, crowd: int = 16, precision: str = "fp32") -> dict:
    """How many of ``seeds`` replies are identical: engine vs ``sample.generate``, alone vs in a crowd."""
    settings = [SampleSettings(seed=s, max_chars=chars, temperature=0.8) for s in range(seeds)]
    prime = "The "
    ref = [generate(ck.model, [prime], s)[0].text for s in settings]
    with Engine(ck, max_batch=max(crowd, seeds), precision=precision) as eng:
        alone = [eng.submit(prime, s).result().text for s in settings]
        extra = [SampleSettings(seed=10_000 + i, max_chars=chars) for i in range(max(0, crowd - seeds))]
        futures = [eng.submit(prime, s) for s in settings + extra]
        crowded = [f.result().text for f in futures[:seeds]]

    def first_split(a: str, b: str) -> int | None:
        if a == b:
            return None
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    return {
        "precision": precision, "replies": seeds, "chars": chars, "crowd": crowd,
        "engine_equals_generate": sum(a == b for a, b in zip(alone, ref, strict=True)),
        "alone_equals_crowd": sum(a == b for a, b in zip(alone, crowded, strict=True)),
        "first_divergence_vs_generate": [first_split(a, b) for a, b in zip(alone, ref, strict=True) if a != b],
        "first_divergence_alone_vs_crowd": [first_split(a, b) for a, b in zip(alone, crowded, strict=True) if a != b],
    }
