"""The fine-tuning pipeline: contributed text and a served checkpoint in, a new checkpoint and
before/after losses out.

Plain and synchronous so the same code runs in the bot's job process, under ``charbot
finetune`` and in tests. The newest contributions are held out (the tail that
:func:`model.train.train` holds out: a tenth, or 1,000 characters where that is at most a
quarter, see :func:`heldout_share`), so "after" on that text shows whether the model learned
the new writing, and "after" on the corpus's own held-out split shows how much
of the old style it kept.

Learning without forgetting: a few pages of chat learned alone overwrite the corpus (measured:
FAQ held-out loss 0.99 -> 2.24 nats while the new text went 4.44 -> 0.39). So by default every
batch is a quarter new text and three quarters *replay* of the corpus's own training text
(:class:`ReplayPlan`; experience replay / rehearsal, Robins 1995): the gradient that would
unlearn the corpus is met by one that keeps it. An L2-SP pull towards the starting weights
(Li et al. 2018, ``anchor``) is there to compare with and combine; measured, replay kept the
corpus within 0.05 nats where L2-SP let it rise 0.27-0.46, and learned the new text as well as
plain fine-tuning (the README has the table).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.batches import BatchPlan
from model.checkpoint import load_checkpoint, save_checkpoint
from model.device import pick_device
from model.evaluate import bits, evaluate_loss
from model.network import CharLSTM
from model.regularise import Regularisation
from model.textdata import TextData
from model.train import Progress, TrainConfig, train

MIN_CHARS = 2_000
MIN_HELDOUT_CHARS = 1_000  # measured: below ~1,000 characters a held-out loss swings by 0.13-0.2 nats
MAX_HELDOUT_FRACTION = 0.25
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
    by heart in a minute and after that the model only forgets the corpus.

    The held-out share is ``heldout_fraction``, raised to hold out ``min_heldout_chars`` when the
    text allows it (at most :data:`MAX_HELDOUT_FRACTION`), see :func:`heldout_share`.

    ``replay`` is the share of each batch's sequences taken from the corpus's training text
    (0 turns replay off; it is also off when no corpus text is given); ``anchor`` the strength of
    the L2-SP pull towards the starting weights (0 = off). ``min_heldout_chars``: a held-out
    figure on less text than this is flagged as noisy in the report.
    """

    minutes: float = 10.0
    max_epochs: float = 40.0
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 3
    heldout_fraction: float = 0.1
    min_chars: int = MIN_CHARS
    min_heldout_chars: int = MIN_HELDOUT_CHARS
    corpus_eval_chars: int = 50_000
    replay: float = 0.75
    anchor: float = 0.0
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    # training-only regularisers (model.regularise), as TrainConfig takes them; 0 = off
    weight_drop: float = 0.0
    layer_dropout: float = 0.0
    output_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError("minutes must be a positive number")
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ValueError("heldout_fraction must be between 0 and 0.5")
        if self.min_chars < 200:
            raise ValueError("min_chars must be at least 200")
        if self.min_heldout_chars < 0:
            raise ValueError("min_heldout_chars must be 0 or more")
        if not 0.0 <= self.replay <= 0.9:
            raise ValueError("replay must be from 0 (off) to 0.9: the share of each batch taken from the corpus")
        if not (self.anchor >= 0 and math.isfinite(self.anchor)):
            raise ValueError("anchor must be 0 (off) or a positive number")
        Regularisation(weight_drop=self.weight_drop, layer_dropout=self.layer_dropout,
                       output_dropout=self.output_dropout)  # a ValueError for a rate outside [0, 1)


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
    replay: float = 0.0  # share of each batch that was corpus text (0: none)
    replay_chars: int = 0  # corpus training characters the replay drew from
    anchor: float = 0.0
    min_heldout_chars: int = MIN_HELDOUT_CHARS
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneReport:
        d = dict(d)
        d["before"], d["after"] = Losses(**d["before"]), Losses(**d["after"])
        return cls(**d)

    @property
    def corpus_rise(self) -> float | None:
        """How much the corpus's held-out loss went up, in nats (None when not measured)."""
        if self.before.corpus is None or self.after.corpus is None:
            return None
        return self.after.corpus - self.before.corpus

    def figures(self) -> dict:
        """Both held-out figures before and after, in nats and bits per character, with the text
        each rests on and whether that is too little (``thin``); what ``--json`` shows."""
        out = {}
        for name, chars, before, after in (
            ("contributed", self.heldout_chars, self.before.contributed, self.after.contributed),
            ("corpus", self.corpus_heldout_chars, self.before.corpus, self.after.corpus),
        ):
            if before is None or after is None:
                out[name] = None
                continue
            out[name] = {"heldout_chars": chars, "thin": chars < self.min_heldout_chars,
                         "before_nats": before, "after_nats": after, "change_nats": after - before,
                         "before_bits": bits(before), "after_bits": bits(after)}
        return out

    def thin(self) -> list[str]:
        """Which figures rest on fewer held-out characters than ``min_heldout_chars``, in words."""
        notes = []
        if self.heldout_chars < self.min_heldout_chars:
            notes.append(f"the new-text figure rests on only {self.heldout_chars:,} held-out characters "
                         f"(under {self.min_heldout_chars:,}), so it is noisy; contribute more text for a firm one")
        if self.corpus_rise is not None and self.corpus_heldout_chars < self.min_heldout_chars:
            notes.append(f"the old-style figure rests on only {self.corpus_heldout_chars:,} held-out characters "
                         f"(under {self.min_heldout_chars:,}), so it is noisy")
        return notes

    def summary(self) -> str:
        """A few lines for people: did it learn the new text, and how much old style it kept."""
        how = (f", {self.replay:.0%} of each batch replayed from the {self.corpus} training text"
               if self.replay else ", no corpus replay")
        if self.anchor:
            how += f", L2-SP anchor {self.anchor:g}"
        lines = [
            f"Fine-tuned on {self.train_chars:,} contributed characters in {self.steps} steps, "
            f"{self.seconds:.0f} s ({self.stopped}){how}.",
            f"New text (held-out contributions, {self.heldout_chars:,} chars): "
            + _change(self.before.contributed, self.after.contributed),
        ]
        if self.before.corpus is not None and self.after.corpus is not None:
            lines.append(
                f"Old style ({self.corpus} held-out, {self.corpus_heldout_chars:,} chars): "
                + _change(self.before.corpus, self.after.corpus)
            )
        else:
            lines.append(f"Old style: not measured ({self.corpus_note}).")
        lines += [f"Note: {n}." for n in self.thin()]
        return "\n".join(lines)


def _change(before: float, after: float) -> str:
    pct = 100.0 * (after - before) / before if before else 0.0
    return (f"{before:.3f} -> {after:.3f} nats/char ({after - before:+.3f}); "
            f"{bits(before):.3f} -> {bits(after):.3f} bits/char ({pct:+.1f}%)")


def contributed_data(texts: list[str], corpus: str) -> TextData:
    """One training text from the contributions, oldest first, so the newest are held out."""
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


def heldout_share(chars: int, cfg: FinetuneConfig) -> float:
    """The share of ``chars`` contributed characters to hold out: ``heldout_fraction``, or enough
    for ``min_heldout_chars`` when that is more, but never above :data:`MAX_HELDOUT_FRACTION` (the
    rest must still teach). Measured (base checkpoints, 24 random windows each): the held-out
    loss's standard deviation is 0.18-0.20 nats on 250-500 characters, 0.07-0.12 on 1,000 and
    0.04-0.10 on 2,000, so a tenth of a few thousand characters says little."""
    if chars <= 0:
        return cfg.heldout_fraction
    return min(MAX_HELDOUT_FRACTION, max(cfg.heldout_fraction, cfg.min_heldout_chars / chars))


def replay_rows(new_rows: int, replay: float) -> int:
    """Corpus sequences to add to ``new_rows`` contributed ones so they are ``replay`` of the batch."""
    return 0 if replay <= 0 else max(1, round(new_rows * replay / (1.0 - replay)))


def train_config(cfg: FinetuneConfig, train_chars: int, replaying: bool = False,
                 heldout: float | None = None) -> TrainConfig:
    """The toolkit's training configuration for fine-tuning ``train_chars`` characters (plus as
    many corpus rows per batch as ``cfg.replay`` asks when ``replaying``); ``heldout`` is the
    share held out (default ``cfg.heldout_fraction``)."""
    n_seqs, n_steps = batch_shape(train_chars)
    per_epoch = max(1, ((train_chars - n_steps) // n_seqs) // n_steps)
    eval_every = max(2, min(50, per_epoch))
    extra = replay_rows(n_seqs, cfg.replay) if replaying else 0
    return TrainConfig(
        n_seqs=n_seqs + extra, n_steps=n_steps, lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, val_fraction=heldout or cfg.heldout_fraction,
        eval_every=eval_every, eval_max_chars=None, patience=cfg.patience, epochs=cfg.max_epochs,
        minutes=cfg.minutes, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
        log_every=max(1, min(10, eval_every)), weight_drop=cfg.weight_drop, layer_dropout=cfg.layer_dropout,
        output_dropout=cfg.output_dropout,
    )


class ReplayPlan:
    """Batches whose first rows are the contributed text and whose last rows are corpus text.

    Epochs are counted on the contributed text (so early stopping and the epoch budget mean
    what they meant); the corpus rows move on through the corpus's training text batch by batch
    and never repeat before it is used up, so the model keeps seeing its old style, not one
    memorized page of it. Every row continues its own stream, as truncated BPTT needs.
    """

    def __init__(self, new: torch.Tensor, old: torch.Tensor, new_rows: int, old_rows: int, n_steps: int,
                 seed: int) -> None:
        self.new = BatchPlan(new, new_rows, n_steps, seed=seed)
        try:
            self.old = BatchPlan(old, old_rows, n_steps, seed=seed + 1)
        except ValueError as exc:
            raise ValueError(f"corpus text to replay: {exc}") from None
        self.n_seqs = new_rows + old_rows

    def batches_per_epoch(self) -> int:
        return self.new.batches_per_epoch()

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_new, y_new = self.new.batch(epoch, index)
        done = epoch * self.new.batches_per_epoch() + index  # batches before this one, all epochs
        per_old = self.old.batches_per_epoch()
        x_old, y_old = self.old.batch(done // per_old, done % per_old)
        return torch.cat([x_new, x_old]), torch.cat([y_new, y_old])


def l2sp(start: CharLSTM, strength: float) -> Callable[[CharLSTM], torch.Tensor]:
    """The L2-SP penalty: ``strength`` times the squared distance of the weights from ``start``'s."""
    anchors = [p.detach().clone() for p in start.parameters()]

    def penalty(model: CharLSTM) -> torch.Tensor:
        return strength * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchors, strict=True))

    return penalty


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
    replay_codes: torch.Tensor | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneReport:
    """Fine-tune the checkpoint ``base`` on ``texts``; the best weights go to ``out``.

    ``corpus_codes`` is the start of the corpus's own held-out split (see
    :func:`corpora.heldout.corpus_heldout`), measured before and after to show how much of the
    old style the model kept; when it is None, ``corpus_note`` says why. ``replay_codes`` is the
    corpus's *training* text (:func:`corpora.heldout.corpus_replay`), mixed into every batch as
    ``cfg.replay`` says; never pass held-out text here, or the old-style figure would be a lie.

    Raises :class:`TooLittleText` before any work, and :class:`JobCancelled` when
    ``should_stop`` turned true (``out`` may then hold a partial result: discard it).
    """
    cfg = cfg or FinetuneConfig()
    phase = on_phase or (lambda _name: None)
    data = contributed_data(texts, corpus)
    check_enough(data, cfg.min_chars)
    share = heldout_share(len(data.text), cfg)
    train_codes, held_codes = data.split(share)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)

    phase("measuring before")
    base_ck = load_checkpoint(base, device=device)
    before = measure(base_ck.model, held_codes, corpus_codes)
    penalty = l2sp(base_ck.model, cfg.anchor) if cfg.anchor else None
    del base_ck
    if should_stop is not None and should_stop():
        raise JobCancelled("cancelled before training")

    phase("training")
    replaying = replay_codes is not None and cfg.replay > 0
    tcfg = train_config(cfg, len(train_codes), replaying, share)
    make_plan = None
    if replaying:
        new_rows, _ = batch_shape(len(train_codes))

        def make_plan(codes: torch.Tensor, c: TrainConfig) -> ReplayPlan:
            return ReplayPlan(codes, replay_codes, new_rows, c.n_seqs - new_rows, c.n_steps, c.seed)

    result = train(data, out, tcfg, init_from=base, on_progress=on_progress, should_stop=should_stop,
                   progress_bar=False, make_plan=make_plan, penalty=penalty)
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
        replay=cfg.replay if replaying else 0.0, replay_chars=len(replay_codes) if replaying else 0,
        anchor=cfg.anchor, min_heldout_chars=cfg.min_heldout_chars,
        history=[{"step": h["step"], "val_loss": h["val_loss"]} for h in result.history if h.get("val_loss")],
    )
    save_checkpoint(out, best.model.cpu(), {**best.info, "finetune": {k: v for k, v in report.to_dict().items()
                                                                       if k != "history"}})
    return report
