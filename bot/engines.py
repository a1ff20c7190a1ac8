"""The models the bot serves: one checkpoint per corpus, each loaded into its own Engine.

Shared by the bot (at start) and the local CLI, so ``charbot reply`` runs the very checkpoint
and engine the bot would. Checkpoints are ``<folder>/<corpus>.safetensors``, the folder being
``CHARBOT_CHECKPOINT_DIR`` (from .env or the environment), else the shipped ``checkpoints/``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from corpora.shipped import shipped_path
from model.checkpoint import CheckpointError, file_sha256, load_checkpoint
from model.device import pick_device
from model.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What /model tells people about one corpus's model."""

    corpus: str
    path: str
    version: str
    val_bpc: float | None
    n_params: int
    device: str
    load_seconds: float
    parent: str | None = None


def checkpoint_path(corpus: str, checkpoint_dir: Path | None = None) -> Path:
    """Where the checkpoint for ``corpus`` is expected."""
    if checkpoint_dir is not None:
        return Path(checkpoint_dir) / f"{corpus}.safetensors"
    return shipped_path(corpus)


def file_version(path: Path) -> str:
    """A short content hash: two files with the same version hold the same weights."""
    return file_sha256(path)[:12]


def _bpc(info: dict) -> float | None:
    if info.get("val_bpc") is not None:
        return float(info["val_bpc"])
    if info.get("val_loss_nats") is not None:
        return float(info["val_loss_nats"]) / math.log(2)
    return None


class Models:
    """Engines by corpus name, with what was loaded; close() stops every engine."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.info: dict[str, ModelInfo] = {}
        self.device = pick_device("cpu")
        self.max_batch = 64
        self.max_queue = 256
        self.precision = "auto"

    @classmethod
    def load(
        cls,
        corpora: tuple[str, ...] | list[str],
        checkpoint_dir: Path | None = None,
        device: str | None = "auto",
        max_batch: int = 64,
        max_queue: int = 256,
        precision: str = "auto",
    ) -> Models:
        """Load every corpus's checkpoint; a missing or bad one is one clear CheckpointError.

        ``precision`` "auto" serves bf16 weights where the CPU multiplies bf16 natively (about
        1.4x faster, KL ~5e-6 nats/char against fp32), else fp32; "fp32" gives exactly the text
        ``charbot sample`` gives for the same seed.
        """
        dev = pick_device(device)
        missing = [(c, checkpoint_path(c, checkpoint_dir)) for c in corpora]
        missing = [(c, p) for c, p in missing if not p.is_file()]
        if missing:
            corpus, path = missing[0]
            others = "".join(f"; {c} also has none at {p}" for c, p in missing[1:])
            raise CheckpointError(
                path,
                f"no checkpoint for {corpus} here{others}; train one with `charbot train {corpus} --out {path}` "
                "or set CHARBOT_CHECKPOINT_DIR to a folder holding <corpus>.safetensors",
            )
        models = cls()
        models.device = dev
        models.max_batch, models.max_queue, models.precision = max_batch, max_queue, precision
        try:
            for corpus in corpora:
                path = checkpoint_path(corpus, checkpoint_dir)
                models.engines[corpus], models.info[corpus] = models._load_one(corpus, path)
        except BaseException:
            models.close(wait=False)
            raise
        return models

    def _load_one(self, corpus: str, path: Path) -> tuple[Engine, ModelInfo]:
        t0 = time.perf_counter()
        ck = load_checkpoint(path, device=self.device)
        engine = Engine(ck, device=self.device, max_batch=self.max_batch, max_queue=self.max_queue,
                        precision=self.precision)
        seconds = time.perf_counter() - t0
        parent = ck.info.get("parent")
        info = ModelInfo(
            corpus=corpus, path=str(path), version=str(ck.info.get("version") or file_version(path)),
            val_bpc=_bpc(ck.info), n_params=ck.model.n_params(), device=str(self.device),
            load_seconds=seconds, parent=parent.get("path") if isinstance(parent, dict) else None,
        )
        bpc = "?" if info.val_bpc is None else f"{info.val_bpc:.3f}"
        log.info("loaded %s from %s: version %s, %s parameters, %s bits/char, on %s in %.2f s",
                 corpus, path, info.version, f"{info.n_params:,}", bpc, self.device, seconds)
        return engine, info

    def swap(self, corpus: str, path: str | Path) -> ModelInfo:
        """Serve ``corpus`` from another checkpoint (after fine-tuning or a rollback).

        Blocking: call it from a worker thread. New replies go to the new engine at once;
        replies already running on the old one finish there before it is closed.
        """
        engine, info = self._load_one(corpus, Path(path))
        old = self.engines.get(corpus)
        self.engines[corpus], self.info[corpus] = engine, info
        if old is not None:
            old.close(wait=True)
        return info

    def close(self, wait: bool = True) -> None:
        for engine in self.engines.values():
            engine.close(wait=wait)

    def __enter__(self) -> Models:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)
