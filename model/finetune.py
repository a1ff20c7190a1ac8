"""The fine-tuning pipeline: contributed text and a served checkpoint in, a new checkpoint and
before/after losses out.

Plain and synchronous so the same code runs in the bot's job process, under ``charbot
finetune`` and in tests. The last 10% of the contributed text is held out (it is the tail
that :func:`model.train.train` holds out), so "after" on that text shows whether the
model learned the new writing, and "after" on the corpus's own held-out split shows how much
of the old style it kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.device import pick_device
from model.evaluate import bits, evaluate_loss
from model.network import CharLSTM
from model.textdata import TextData
from model.train import Progress, TrainConfig, train

MIN_CHARS = 2_000
CONTRIBUTION_SEPARATOR = "\n\n"


class TooLittleText(ValueError):
    """Not enough contributed text to hold 10% out and still learn something."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(
            f"only {have:,} characters contributed; fine-tuning needs at least {need:,}, "
            f"so {need - have:,} more"
        )
        self.have = have
        self.need = need
        self.missing = need - have


class JobCancelled(Exception):
    """The job was asked to stop before it finished; nothing it made is kept."""


@dataclass
class FinetuneConfig:
    """How to fine-tune. A third of the from-scratch learning rate and a short warm-up nudge the
    trained weights instead of overwriting them; validation about once an epoch on the
    held-out contributions with early stopping, because a few thousand characters are learned
    by heart in a minute and after that the model only forgets the corpus."""

    minutes: float = 10.0
    max_epochs: float = 40.0
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 3
    heldout_fraction: float = 0.1
    min_chars: int = MIN_CHARS
    corpus_eval_chars: int = 50_000
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError("minutes must be a positive number")
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ValueError("heldout_fraction must be between 0 and 0.5")
        if self.min_chars < 200:
            raise ValueError("min_chars must be at least 200")


@dataclass
class Losses:
    """Mean loss in nats per character; ``corpus`` is None when the corpus file is absent."""

    contributed: float
    corpus: float | None


@dataclass
class FinetuneReport:
    """What a job did and the figures an admin needs to judge it."""

    corpus: str
    base: str
    out: str
    contributed_chars: int
    train_chars: int
    heldout_chars: int
    corpus_heldout_chars: int
    corpus_note: str | None
    before: Losses
    after: Losses
    steps: int
    stopped: str
    seconds: float
    dropped_chars: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneReport:
        d = dict(d)
        d["before"], d["after"] = Losses(**d["before"]), Losses(**d["after"])
        return cls(**d)

    def summary(self) -> str:
        """A few lines for people: did it learn the new text, and how much old style it kept."""
        lines = [
            f"Fine-tuned on {self.train_chars:,} contributed characters ({self.heldout_chars:,} held out) "
            f"in {self.steps} steps, {self.seconds:.0f} s ({self.stopped}).",
            "New text (held-out contributions): " + _change(self.before.contributed, self.after.contributed),
        ]
        if self.before.corpus is not None and self.after.corpus is not None:
            lines.append(
                f"Old style ({self.corpus} held-out, {self.corpus_heldout_chars:,} chars): "
                + _change(self.before.corpus, self.after.corpus)
            )
        else:
            lines.append(f"Old style: not measured ({self.corpus_note}).")
        return "\n".join(lines)


def _change(before: float, after: float) -> str:
    pct = 100.0 * (after - before) / before if before else 0.0
    return f"{bits(before):.3f} -> {bits(after):.3f} bits/char ({pct:+.1f}%)"


def contributed_data(texts: list[str], corpus: str) -> TextData:
    """One training text from the contributions, oldest first, so the newest 10% is held out."""
    joined = CONTRIBUTION_SEPARATOR.join(t.strip("\n") for t in texts if t.strip())
    return TextData.from_text(f"{corpus}-contributions", joined + "\n" if joined else "")


def check_enough(data: TextData, min_chars: int = MIN_CHARS) -> None:
    """Refuse too little text, saying how much more is needed (normalized characters count)."""
    if len(data.text) < min_chars:
        raise TooLittleText(len(data.text), min_chars)


def batch_shape(train_chars: int) -> tuple[int, int]:
    """Sequences x steps per batch so even the smallest accepted text gives several batches per
    epoch; large texts get the usual 16 x 100."""
    n_steps = max(16, min(100, train_chars // 32))
    n_seqs = max(1, min(16, (train_chars - n_steps) // (4 * n_steps)))
    return n_seqs, n_steps


def train_config(cfg: FinetuneConfig, train_chars: int) -> TrainConfig:
    """The toolkit's training configuration for fine-tuning ``train_chars`` characters."""
    n_seqs, n_steps = batch_shape(train_chars)
    per_epoch = max(1, ((train_chars - n_steps) // n_seqs) // n_steps)
    eval_every = max(2, min(50, per_epoch))
    return TrainConfig(
        n_seqs=n_seqs, n_steps=n_steps, lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, val_fraction=cfg.heldout_fraction, eval_every=eval_every,
        eval_max_chars=None, patience=cfg.patience, epochs=cfg.max_epochs, minutes=cfg.minutes, seed=cfg.seed,
        device=cfg.device, threads=cfg.threads, log_every=max(1, min(10, eval_every)),
    )


def measure(model: CharLSTM, contributed: torch.Tensor, corpus: torch.Tensor | None) -> Losses:
    """Loss on the held-out contributions and on the corpus's held-out text."""
    return Losses(evaluate_loss(model, contributed), evaluate_loss(model, corpus) if corpus is not None else None)


def finetune(
    texts: list[str],
    base: str | Path,
    corpus: str,
    out: str | Path,
    cfg: FinetuneConfig | None = None,
    *,
    corpus_codes: torch.Tensor | None = None,
    corpus_note: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneReport:
    """Fine-tune the checkpoint ``base`` on ``texts``; the best weights go to ``out``.

    ``corpus_codes`` is the start of the corpus's own held-out split (see
    :func:`corpora.heldout.corpus_heldout`), measured before and after to show how much of the
    old style the model kept; when it is None, ``corpus_note`` says why.

    Raises :class:`TooLittleText` before any work, and :class:`JobCancelled` when
    ``should_stop`` turned true (``out`` may then hold a partial result: discard it).
    """
    cfg = cfg or FinetuneConfig()
    phase = on_phase or (lambda _name: None)
    data = contributed_data(texts, corpus)
    check_enough(data, cfg.min_chars)
    train_codes, held_codes = data.split(cfg.heldout_fraction)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)

    phase("measuring before")
    base_ck = load_checkpoint(base, device=device)
    before = measure(base_ck.model, held_codes, corpus_codes)
    del base_ck
    if should_stop is not None and should_stop():
        raise JobCancelled("cancelled before training")

    phase("training")
    result = train(data, out, train_config(cfg, len(train_codes)), init_from=base, on_progress=on_progress,
                   should_stop=should_stop, progress_bar=False)
    if result.stopped == "interrupted":
        raise JobCancelled(f"cancelled at step {result.steps}")

    phase("measuring after")
    best = load_checkpoint(out, device=device)
    after = measure(best.model, held_codes, corpus_codes)
    report = FinetuneReport(
        corpus=corpus, base=str(base), out=str(out), contributed_chars=len(data.text), train_chars=len(train_codes),
        heldout_chars=len(held_codes), corpus_heldout_chars=len(corpus_codes) if corpus_codes is not None else 0,
        corpus_note=corpus_note, before=before, after=after, steps=result.steps, stopped=result.stopped,
        seconds=result.elapsed_s, dropped_chars=data.dropped,
        history=[{"step": h["step"], "val_loss": h["val_loss"]} for h in result.history if h.get("val_loss")],
    )
    save_checkpoint(out, best.model.cpu(), {**best.info, "finetune": {k: v for k, v in report.to_dict().items()
                                                                       if k != "history"}})
    return report
