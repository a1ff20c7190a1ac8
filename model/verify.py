"""The check a new checkpoint passes before it is served: it loads, it generates, its loss is finite.

A fine-tune that diverged, or a file damaged on its way to disk, must never replace a working
model; this is the last gate, run on the very file that will be served.
"""

from __future__ import annotations

import math
from pathlib import Path

from model.charset import encode, normalize
from model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from model.evaluate import evaluate_loss
from model.sample import SampleSettings, generate

PROBE_TEXT = "Once upon a time there was a little boy who asked a question, and the answer was long.\n"
PROBE_CHARS = 40


def verify_checkpoint(path: str | Path, probe: str = PROBE_TEXT) -> tuple[Checkpoint, float]:
    """Load ``path``, generate from it and measure it on ``probe``; CheckpointError if any fails."""
    ck = load_checkpoint(path)
    for name, tensor in ck.model.state_dict().items():
        if not tensor.isfinite().all():
            raise CheckpointError(path, f"weights {name} hold NaN or infinite values")
    try:
        gen = generate(ck.model, ["\n"], SampleSettings(temperature=1.0, max_chars=PROBE_CHARS, seed=0))[0]
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(path, f"cannot generate: {exc}") from None
    if len(gen.text) != PROBE_CHARS:
        raise CheckpointError(path, f"generated {len(gen.text)} characters instead of {PROBE_CHARS}")
    loss = evaluate_loss(ck.model, encode(normalize(probe).text))
    if not math.isfinite(loss):
        raise CheckpointError(path, f"loss on a probe text is {loss}")
    return ck, loss
