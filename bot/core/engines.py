"""The models the bot serves: one checkpoint per corpus, each loaded into its own Engine.

Shared by the bot (at start) and the local CLI, so ``charbot reply`` runs the very checkpoint
and engine the bot would. Beside each engine it keeps what scoring and grounding need, built
once at load: the corpus's :class:`~bot.core.words.Lexicon` and, for a grounded corpus (faq), the
BM25 :class:`~corpora.passages.PassageIndex` of its passages. Checkpoints are
``<folder>/<corpus>.safetensors``, the folder being
``CHARBOT_CHECKPOINT_DIR`` (from .env or the environment), else the shipped ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from bot.core.words import Lexicon, lexicon
from corpora.passages import PassageIndex
from corpora.registry import CORPORA, CorpusMissing, load_corpus
from corpora.shipped import shipped_path
from corpora.voices import parse_key, voice
from model.checkpoint import CheckpointError, checkpoint_file, file_sha256, load_checkpoint, sibling
from model.device import pick_device
from model.engine import Engine
from model.step_threads import serve_threads

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
    precision: str = "fp32"  # what the engine computes in (``auto`` resolved)
    precision_reason: str | None = None  # how ``auto`` chose it; None when the precision was given


def checkpoint_path(corpus: str, checkpoint_dir: Path | None = None) -> Path:
    """Where the checkpoint for ``corpus`` is expected."""
    if checkpoint_dir is not None:
        return checkpoint_file(checkpoint_dir, corpus)
    return shipped_path(corpus)


GENERAL_BASE = "base"  # the checkpoint trained on every public-domain corpus: where personas start


def base_checkpoint(corpus: str, checkpoint_dir: Path | None = None) -> Path:
    """The checkpoint a fine-tune of ``corpus`` starts from while no version of it is served: the
    corpus's own, or for a server's persona the general base model (tale's checkpoint where no
    base model is installed, the best single-book start measured before the base model existed)."""
    if parse_key(corpus) is None:
        return checkpoint_path(corpus, checkpoint_dir)
    general = checkpoint_path(GENERAL_BASE, checkpoint_dir)
    fallback = checkpoint_path("tale", checkpoint_dir)
    return fallback if not general.is_file() and fallback.is_file() else general


def file_version(path: Path) -> str:
    """A short content hash: two files with the same version hold the same weights."""
    return file_sha256(path)[:12]


def learned_path(checkpoint: Path) -> Path:
    """Where the texts a fine-tuned checkpoint learned beyond its corpus are kept: ``<name>.learned.json``."""
    return sibling(checkpoint, ".learned.json")


def learned_texts(checkpoint: Path) -> list[str]:
    """The contributed texts a version was fine-tuned on (a JSON list beside it), so grounding can quote them.

    None beside the shipped checkpoints; an unreadable file counts as none (grounding then
    uses the corpus alone) rather than keeping the version from being served.
    """
    path = learned_path(Path(checkpoint))
    if not path.is_file():
        return []
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: not read (%s); grounding uses the corpus alone", path, exc)
        return []
    if not isinstance(texts, list):
        return []
    # Each entry is {"id": contribution id, "text": ...} (bot.jobs.manager writes the ids so /forget can
    # take a deleted text out: FinetuneManager.scrub_learned); plain strings are read too.
    return [t if isinstance(t, str) else t.get("text") for t in texts
            if isinstance(t, str) or (isinstance(t, dict) and isinstance(t.get("text"), str))]


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
        self.lexicons: dict[str, Lexicon] = {}
        self.passages: dict[str, PassageIndex] = {}
        self.device = pick_device("cpu")
        self.max_batch = 64
        self.max_queue = 256
        self.precision = "auto"
        self.precision_cache: Path | None = None
        self.max_personas = 8  # persona engines kept loaded; the least recently used one unloads first
        self._persona_use: OrderedDict[str, None] = OrderedDict()
        self._loading = threading.Lock()

    @classmethod
    def load(
        cls,
        corpora: tuple[str, ...] | list[str],
        checkpoint_dir: Path | None = None,
        device: str | None = "auto",
        max_batch: int = 64,
        max_queue: int = 256,
        precision: str = "auto",
        precision_cache: Path | None = None,
    ) -> Models:
        """Load every corpus's checkpoint; a missing or bad one is one clear CheckpointError.

        ``precision`` "auto" serves the fastest precision that stays within the fidelity bounds
        on this machine, measured when a checkpoint is first loaded here (under a second)
        and kept in ``precision_cache`` (see :mod:`model.precision`); "fp32" gives exactly the
        text ``charbot sample`` gives for the same seed; "bf16" and "int8" force those.
        """
        dev = pick_device(device)
        serve_threads()  # before loading: only engine workers may own thread pools (model.step_threads)
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
        models.precision_cache = precision_cache
        try:
            for corpus in corpora:
                path = checkpoint_path(corpus, checkpoint_dir)
                models.engines[corpus], models.info[corpus] = models._load_one(corpus, path)
        except BaseException:
            models.close(wait=False)
            raise
        return models

    def lexicon(self, corpus: str, texts: tuple[str, ...] | list[str] = ()) -> Lexicon:
        """The corpus's lexicon (built on first use when the engine was put in by hand); a persona's
        is built from ``texts``, the text its served version learned."""
        if parse_key(corpus) is not None:
            self.lexicons[corpus] = Lexicon.from_text("\n".join(texts)) if texts else Lexicon(frozenset(), False)
        elif corpus not in self.lexicons:
            self.lexicons[corpus] = lexicon(corpus)
        return self.lexicons[corpus]

    def ground(self, corpus: str, extra: tuple[str, ...] | list[str] = ()) -> PassageIndex | None:
        """Build the passage index of a grounded corpus or persona (``extra``: texts a fine-tuned version
        learned too; all a persona's text is that).

        None for voices that are not grounded, or when there is no text on this machine to ground
        in (replies are then ungrounded, and say nothing about a source).
        """
        self.passages.pop(corpus, None)
        try:
            grounded = voice(corpus).grounded
        except KeyError:
            return None
        if not grounded:
            return None
        try:
            text = load_corpus(corpus).text if corpus in CORPORA else ""
        except CorpusMissing as exc:
            log.warning("no %s text here (%s): its answers are not grounded", corpus, exc)
            return None
        if not text and not any(t.strip() for t in extra):
            return None
        index = PassageIndex.from_text(text, extra)
        self.passages[corpus] = index
        log.info("%s: %d passages indexed for grounding", corpus, len(index))
        return index

    def _load_one(self, corpus: str, path: Path) -> tuple[Engine, ModelInfo]:
        t0 = time.perf_counter()
        learned = learned_texts(path)
        self.lexicon(corpus, learned)
        self.ground(corpus, learned)
        ck = load_checkpoint(path, device=self.device)
        engine = Engine(ck, device=self.device, max_batch=self.max_batch, max_queue=self.max_queue,
                        precision=self.precision, precision_cache=self.precision_cache)
        decision = engine.precision_decision
        seconds = time.perf_counter() - t0
        parent = ck.info.get("parent")
        info = ModelInfo(
            corpus=corpus, path=str(path), version=str(ck.info.get("version") or file_version(path)),
            val_bpc=_bpc(ck.info), n_params=ck.model.n_params(), device=str(self.device),
            load_seconds=seconds, parent=parent.get("path") if isinstance(parent, dict) else None,
            precision=engine.precision, precision_reason=decision.reason if decision is not None else None,
        )
        bpc = "?" if info.val_bpc is None else f"{info.val_bpc:.3f}"
        log.info("loaded %s from %s: version %s, %s parameters, %s bits/char, on %s (%s) in %.2f s",
                 corpus, path, info.version, f"{info.n_params:,}", bpc, self.device, engine.precision, seconds)
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

    def reground(self, corpus: str) -> None:
        """Re-read what the served version of ``corpus`` learned (after /forget took texts out of it) and
        rebuild its lexicon and passage index; blocking. The engine itself is unchanged."""
        info = self.info.get(corpus)
        if info is not None:
            learned = learned_texts(Path(info.path))
            if parse_key(corpus) is not None:
                self.lexicon(corpus, learned)
            self.ground(corpus, learned)

    def load_persona(self, key: str, path: str | Path) -> ModelInfo:
        """Serve persona ``key`` from ``path`` unless it is loaded already; blocking (call it from a
        worker thread). Loaded persona engines are bounded by :attr:`max_personas`: loading one more
        unloads the least recently used idle one, which loads again on its next reply."""
        with self._loading:
            if key in self.engines and self.info[key].path == str(path):
                self.touch(key)
                return self.info[key]
            info = self.swap(key, path)
            self.touch(key)
            self._evict()
            return info

    def touch(self, key: str) -> None:
        """Mark persona ``key`` as just used (built-in corpora are always loaded)."""
        if parse_key(key) is not None and key in self.engines:
            self._persona_use[key] = None
            self._persona_use.move_to_end(key)

    def unload(self, key: str, wait: bool = True) -> bool:
        """Stop serving persona ``key`` (deleted, or evicted); True if it was loaded."""
        self._persona_use.pop(key, None)
        engine = self.engines.pop(key, None)
        for table in (self.info, self.lexicons, self.passages):
            table.pop(key, None)  # type: ignore[attr-defined]
        if engine is not None:
            engine.close(wait=wait)
        return engine is not None

    def personas_loaded(self) -> list[str]:
        """Loaded persona keys, least recently used first."""
        return list(self._persona_use)

    def _evict(self) -> None:
        while len(self._persona_use) > self.max_personas:
            idle = [k for k in self._persona_use if self.engines[k].pending() == 0]
            if not idle:
                return  # every loaded persona is writing: over the bound until one is idle
            log.info("unloading persona %s (the least recently used of %d loaded)", idle[0], len(self._persona_use))
            self.unload(idle[0], wait=False)

    def close(self, wait: bool = True) -> None:
        for engine in self.engines.values():
            engine.close(wait=wait)

    def __enter__(self) -> Models:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)
