"""Shipping a training run: its best weights stored in 16 bits under ``checkpoints/<name>``.

Half-size storage halves the download and the repository, but rounding the weights changes
the model, so the held-out loss is measured before and after (on the stored file itself,
loaded back the way every user loads it) and shipping is refused when it moved by more than
``max_shift``. The loss of the stored weights goes into the checkpoint's metadata, so
``charbot eval checkpoints/<corpus>.safetensors <corpus>`` prints the same number.

``<name>`` is a corpus, or a mixture for the general base (``charbot ship RUN base``): its
held-out split is then the mixture's own (:func:`corpora.heldout.heldout_codes` decides), so
the base's recorded loss is measured the same way as every corpus's.

A run that recorded only its direct parent (older runs did) gets its ancestry completed from
the files it names where they are still there (:func:`model.checkpoint.complete_parent`), so
a checkpoint continued from an earlier run still says, on the model card, how it was made.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from corpora.heldout import heldout_codes, measure_heldout
from corpora.mixture import known_name
from corpora.shipped import shipped_path
from model.checkpoint import CheckpointError, complete_parent, file_sha256, load_checkpoint, save_checkpoint
from model.evaluate import bits

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SHIFT = 0.005


class ShipRefused(ValueError):
    """The conversion would change the model too much, or would overwrite a shipped checkpoint."""


@dataclass
class ShipResult:
    """What was shipped, and the held-out loss before and after the conversion."""

    path: Path
    corpus: str
    dtype: str
    loss_before: float
    loss_after: float
    val_chars: int
    bytes: int

    @property
    def shift(self) -> float:
        return self.loss_after - self.loss_before


def ship(
    run_checkpoint: str | Path,
    name: str,
    *,
    dtype: str = "bf16",
    max_shift: float = MAX_SHIFT,
    dest: str | Path | None = None,
    force: bool = False,
) -> ShipResult:
    """Convert ``run_checkpoint`` to ``dtype`` storage as corpus (or mixture) ``name``'s shipped checkpoint."""
    known_name(name)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not max_shift >= 0:
        raise ValueError("max_shift must be a number >= 0")
    run_checkpoint = Path(run_checkpoint)
    dest = Path(dest) if dest is not None else shipped_path(name)
    if dest.exists() and not force:
        raise ShipRefused(f"{dest} already exists; use --force to replace it")
    if dest.exists() and dest.resolve() == run_checkpoint.resolve():
        raise ShipRefused(f"{run_checkpoint} is the shipped checkpoint itself; ship the training run's file")
    ck = load_checkpoint(run_checkpoint)
    codes, _ = heldout_codes(ck.info, name, str(run_checkpoint), parts=False)  # the base ships as itself only
    before = measure_heldout(ck, name, codes)
    with tempfile.TemporaryDirectory(prefix="charbot-ship-") as tmp:
        trial = Path(tmp) / dest.name
        save_checkpoint(trial, ck.model, ck.info, dtype=DTYPES[dtype])
        stored = load_checkpoint(trial)
    after = measure_heldout(stored, name, codes)
    shift = after.loss_nats - before.loss_nats
    if abs(shift) > max_shift:
        other = "fp16" if dtype == "bf16" else "bf16"
        raise ShipRefused(
            f"{dtype} storage moves the held-out loss of {run_checkpoint} by {shift:+.4f} nats/char "
            f"({before.loss_nats:.4f} -> {after.loss_nats:.4f}), more than {max_shift}; nothing was written "
            f"(try --dtype {other})"
        )
    info = {
        **ck.info,
        **({"parent": complete_parent(ck.info["parent"])} if "parent" in ck.info else {}),
        "val_loss_nats": after.loss_nats,
        "val_bpc": bits(after.loss_nats),
        "val_loss_measured_on": f"cpu, evaluate_loss over the whole held-out split ({after.chars:,} characters)",
        "val_loss_fp32_nats": before.loss_nats,
        "storage_dtype": str(DTYPES[dtype]).removeprefix("torch."),
        "shipped_from": str(run_checkpoint),
        "shipped_from_sha256": file_sha256(run_checkpoint),
        "shipped_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    save_checkpoint(dest, stored.model, info, dtype=DTYPES[dtype])
    final = load_checkpoint(dest)
    pairs = zip(final.model.state_dict().values(), stored.model.state_dict().values(), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    if not same:  # pragma: no cover - a 16-bit value survives another 16-bit rounding unchanged
        raise CheckpointError(dest, "stored weights differ from the ones measured; do not use this file")
    return ShipResult(dest, name, dtype, before.loss_nats, after.loss_nats, after.chars, dest.stat().st_size)
