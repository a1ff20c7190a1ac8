"""Training with truncated BPTT: contiguous batches, carried state, AdamW, warm-up and decay.

:func:`train`, at the bottom, reads top to bottom: set up (or resume) a run, then loop over
optimizer steps, validating, saving and reporting every so often, then wrap up; each of those
steps is a function above it, sharing one :class:`_Run`. The training state (weights,
optimizer, hidden state, RNG, data position, history) goes to ``<out>.resume.safetensors`` at
every validation and on interruption (Ctrl-C, SIGTERM), so a stopped run resumes where it was
(a killed one from its last validation), and a resumed run equals an uninterrupted one with
the same seed, bit for bit: always on CPU; on CUDA when the LSTM has one layer or no dropout
between layers (measured on an H100). cuDNN draws that dropout from a random state of its
own that PyTorch neither exposes nor restores, so a resumed CUDA run draws other masks from
there on: the same training in distribution, not in bits. The best weights by validation
loss are kept under ``out`` itself.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from model import distributed
from model.batches import BatchPlan
from model.checkpoint import (
    Checkpoint,
    CheckpointError,
    ancestry,
    atomic_write_bytes,
    load_checkpoint,
    read_tensor_file,
    save_checkpoint,
    sibling,
    write_tensor_file,
)
from model.device import check_precision, cpu_threads, pick_device, training_precision
from model.distributed import SINGLE, Ranks
from model.evaluate import bits, evaluate_loss
from model.network import CharLSTM, ModelConfig
from model.regularise import Regularisation, Regularised
from model.textdata import TextData

if TYPE_CHECKING:
    from tqdm import tqdm

RESUME_FORMAT = "charbot-train-state"
WARMUP_MAX_FRACTION = 0.05


class Batches(Protocol):
    """What the loop needs of a batch plan (:class:`BatchPlan` is one); every batch has ``n_seqs`` rows."""

    def batches_per_epoch(self) -> int: ...

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


# Makes the batches of a run from its training codes (see train()'s ``make_plan``).
PlanMaker = Callable[[torch.Tensor, "TrainConfig"], Batches]


@dataclass
class TrainConfig:
    """How to train. Defaults were chosen by measurement on this project's 2-core CPU machine,
    shared with other runs: small batches and many optimizer steps at a high, warmed-up,
    decaying learning rate learn far faster per second than the classic 128 x 100 batches at
    1e-3 (2 minutes on covid-faq: 16 x 100 and 32 x 50 reached 2.60-2.64 nats where 32 x 100
    reached 3.10, all three side by side; early on, the number of steps is what counts). Re-checked
    under bf16 autocast: 10 minutes on tale, one thread each, side by side, 16 x 100 reached
    1.2648 nats and 32 x 100 1.3214.

    Budgets (``max_steps``, ``epochs``, ``minutes``) count the whole run, resumed parts
    included; the first one reached ends it. ``threads`` None means: as many as the cores
    other processes leave free (see :func:`model.device.cpu_threads`).
    """

    n_seqs: int = 16
    n_steps: int = 100
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    eval_every: int = 200
    eval_max_chars: int | None = 200_000
    patience: int = 10
    max_steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    log_every: int = 20
    precision: str = "auto"
    # training-only regularisation, 0 = off (see model.regularise); none of it reaches a checkpoint's weights
    weight_drop: float = 0.0
    embed_dropout: float = 0.0
    input_dropout: float = 0.0
    layer_dropout: float = 0.0
    output_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ValueError("lr must be a positive number")
        for name in ("n_seqs", "n_steps", "eval_every", "log_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be 0 or more")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be between 0 and 1")
        if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise ValueError("weight_decay must be 0 or more")
        if not self.grad_clip > 0:
            raise ValueError("grad_clip must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val_fraction must be between 0 and 1")
        if self.eval_max_chars is not None and self.eval_max_chars < 1:
            raise ValueError("eval_max_chars must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        check_precision(self.precision)
        self.regularisation()  # a ValueError for a rate outside [0, 1)
        for name in ("max_steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_steps is None and self.epochs is None and self.minutes is None:
            self.epochs = 1.0

    def regularisation(self) -> Regularisation:
        """The training-only regularisers this configuration asks for."""
        return Regularisation(weight_drop=self.weight_drop, embed_dropout=self.embed_dropout,
                              input_dropout=self.input_dropout, layer_dropout=self.layer_dropout,
                              output_dropout=self.output_dropout)


@dataclass
class Progress:
    """What a progress callback sees after each logged step and each validation."""

    step: int
    chars_seen: int
    fraction: float
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    lr: float
    chars_per_s: float
    elapsed_s: float
    eta_s: float | None


@dataclass
class TrainResult:
    out: str
    steps: int
    chars_seen: int
    best_val_loss: float | None
    val_loss_nats: float | None
    stopped: str  # "budget", "early-stop" or "interrupted"
    elapsed_s: float
    history: list[dict] = field(default_factory=list)


def resume_path(out: str | Path) -> Path:
    return sibling(out, ".resume.safetensors")


def log_path(out: str | Path) -> Path:
    return sibling(out, ".log.json")


def plot_path(out: str | Path) -> Path:
    return sibling(out, ".loss.png")


def lr_at(cfg: TrainConfig, step: int, fraction: float) -> float:
    """Cosine decay from ``lr`` to ``min_lr_ratio * lr`` over the budget, times a linear warm-up.

    The warm-up ends after ``warmup_steps`` or 5% of the budget, whichever comes first: on a
    slow machine a short run may only get a hundred steps and must not spend them warming up.
    """
    floor = cfg.lr * cfg.min_lr_ratio
    decayed = floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
    if cfg.warmup_steps == 0:
        return decayed
    warm = min(1.0, max((step + 1) / cfg.warmup_steps, fraction / WARMUP_MAX_FRACTION))
    return decayed * warm


class _StopFlag:
    """Turns SIGTERM/SIGINT into a request to stop at the next step boundary (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving the state (Ctrl-C again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, extra in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _write_log(out: Path, payload: dict) -> None:
    atomic_write_bytes(log_path(out), json.dumps(payload, indent=1).encode())


def _plot(out: Path, history: list[dict], title: str) -> None:
    """Loss curve PNG: train and validation loss against characters seen."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    train_pts = [(h["chars"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    val_pts = [(h["chars"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train_pts:
        ax.plot([c for c, _ in train_pts], [v for _, v in train_pts], label="train", lw=1, alpha=0.7)
    if val_pts:
        ax.plot([c for c, _ in val_pts], [v for _, v in val_pts], label="validation", lw=2, marker="o", ms=3)
    ax.set_xlabel("characters seen")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train_pts or val_pts:
        ax.legend()
    fig.tight_layout()
    tmp = plot_path(out).with_suffix(".tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(plot_path(out))
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


@dataclass
class _Run:
    """One training run as the loop sees it: what it trains, fixed once set up, and how far it
    has got, which :func:`_save_state` writes at every validation and :func:`_restore` reads back."""

    data: TextData
    out: Path
    cfg: TrainConfig
    model_cfg: ModelConfig
    parent: dict | None  # what a fine-tuned run started from
    device: torch.device
    model: CharLSTM
    opt: torch.optim.Optimizer
    plan: Batches
    per_epoch: int  # batches
    max_steps: int | None  # the step budget from max_steps and epochs; None when only minutes count
    val_codes: torch.Tensor
    val_eval: torch.Tensor  # what each validation scores: val_codes cut to eval_max_chars
    autocast: AbstractContextManager
    info: dict  # the facts every checkpoint of the run records
    h_state: tuple[torch.Tensor, torch.Tensor]  # this rank's rows
    ranks: Ranks = SINGLE
    net: torch.nn.Module | None = None  # what the optimizer step calls: the model, or its DDP wrapper
    step: int = 0
    epoch: int = 0
    index: int = 0  # batch within the epoch
    chars_seen: int = 0
    elapsed_before: float = 0.0  # training seconds of the earlier parts of a resumed run
    best_val: float | None = None
    bad_evals: int = 0  # validations since the best one
    history: list[dict] = field(default_factory=list)
    last_eval_step: int = -1
    penalty: Callable[[CharLSTM], torch.Tensor] | None = None  # added to each step's loss (see train())

    def fraction(self, elapsed: float) -> float:
        """The share of the budget spent, 0 to 1: of the steps or the minutes, whichever is further."""
        parts = []
        if self.max_steps is not None:
            parts.append(self.step / self.max_steps)
        if self.cfg.minutes is not None:
            parts.append(elapsed / (self.cfg.minutes * 60))
        return min(1.0, max(parts))


def _start(
    data: TextData,
    out: Path,
    cfg: TrainConfig | None,
    model_cfg: ModelConfig | None,
    resume: bool,
    init_from: str | Path | None,
    threads: int | None,
    ranks: Ranks = SINGLE,
    make_plan: PlanMaker | None = None,
) -> _Run:
    """Set up the run: a new one, one fine-tuned from ``init_from``, or one resumed from its state."""
    if resume:
        tensors, saved, cfg, model_cfg = _read_resume_state(resume_path(out), data, cfg)
        run = _set_up(data, out, cfg, model_cfg, saved.get("parent"), None, threads, ranks, make_plan)
        _restore(run, tensors, saved)
        return run
    init, parent = None, None
    if init_from is not None:
        init = load_checkpoint(init_from)
        model_cfg = init.config
        parent = ancestry(init_from, init.info)
    return _set_up(data, out, cfg, model_cfg, parent, init, threads, ranks, make_plan)


def _read_resume_state(
    rpath: Path, data: TextData, cfg: TrainConfig | None
) -> tuple[dict[str, torch.Tensor], dict, TrainConfig, ModelConfig]:
    """The saved state and configuration of a run; a ``cfg`` passed along only replaces its budget."""
    if not rpath.exists():
        raise FileNotFoundError(f"{rpath}: no training state to resume from")
    tensors, saved = read_tensor_file(rpath, expect_format=RESUME_FORMAT)
    if saved.get("data_sha256") != data.text_sha256:
        raise CheckpointError(rpath, f"was made for different text than {data.name}")
    try:
        saved_cfg = TrainConfig(**saved["train_config"])
        model_cfg = ModelConfig(**saved["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(rpath, f"invalid saved configuration: {exc}") from None
    saved_cfg.threads = None
    if cfg is not None:
        saved_cfg.max_steps, saved_cfg.epochs, saved_cfg.minutes = cfg.max_steps, cfg.epochs, cfg.minutes
    return tensors, saved, saved_cfg, model_cfg


def _set_up(
    data: TextData,
    out: Path,
    cfg: TrainConfig | None,
    model_cfg: ModelConfig | None,
    parent: dict | None,
    init: Checkpoint | None,
    threads: int | None,
    ranks: Ranks = SINGLE,
    make_plan: PlanMaker | None = None,
) -> _Run:
    """A run at step 0: the data split, device and threads, seeded weights (or ``init``'s),
    optimizer, batch plan and budget; with several processes, this rank's share of it."""
    if not data.text:
        raise ValueError(f"{data.name}: no text to train on ({data.dropped:,} characters could not be used)")
    cfg = cfg or TrainConfig()
    if threads is not None:
        cfg = replace(cfg, threads=threads)
    model_cfg = model_cfg or ModelConfig()
    train_codes, val_codes = data.split(cfg.val_fraction)
    if len(val_codes) < 2:
        raise ValueError(f"{data.name}: held-out split too small ({len(val_codes)} characters)")

    device = pick_device(distributed.device_for(ranks, cfg.device))
    rows = ranks.rows(cfg.n_seqs)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":  # processes on one machine share its free cores
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpu_threads("training") // ranks.world)))
    distributed.join(ranks, device)
    torch.manual_seed(cfg.seed)
    model = CharLSTM(model_cfg)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    model.to(device)
    net: torch.nn.Module = model
    reg = cfg.regularisation()
    if reg.active:  # only then: with every option off the step calls the model itself, as it always did
        net = Regularised(model, reg)
    if ranks.distributed:
        torch.manual_seed(cfg.seed + ranks.rank)  # the same weights everywhere, other dropout masks per rank
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    try:
        plan = make_plan(train_codes, cfg) if make_plan else BatchPlan(train_codes, cfg.n_seqs, cfg.n_steps, cfg.seed)
    except ValueError as exc:
        raise ValueError(f"{data.name}: training part {exc}") from None
    per_epoch = plan.batches_per_epoch()
    max_steps = cfg.max_steps
    if cfg.epochs is not None:
        by_epochs = max(1, math.ceil(cfg.epochs * per_epoch))
        max_steps = by_epochs if max_steps is None else min(max_steps, by_epochs)

    precision = training_precision(cfg.precision, device)
    info = {
        "corpus": data.name,
        "corpus_sha256": data.source_sha256,
        "text_sha256": data.text_sha256,
        "train_chars": len(train_codes),
        "val_chars": len(val_codes),
        "val_fraction": cfg.val_fraction,
        "dropped_chars": data.dropped,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "torch": torch.__version__,
        "train_config": asdict(cfg),
        "parent": parent,
        "n_params": model.n_params(),
    }
    if ranks.distributed:
        info["processes"] = ranks.world
    return _Run(
        data=data,
        out=out,
        cfg=cfg,
        model_cfg=model_cfg,
        parent=parent,
        device=device,
        model=model,
        opt=opt,
        plan=plan,
        per_epoch=per_epoch,
        max_steps=max_steps,
        val_codes=val_codes,
        val_eval=val_codes if cfg.eval_max_chars is None else val_codes[: cfg.eval_max_chars + 1],
        autocast=torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext(),
        info=info,
        h_state=model.init_state(rows.stop - rows.start, device),
        ranks=ranks,
        net=net,
    )


def _restore(run: _Run, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    """Put a run back where its state file left it: weights, optimizer, hidden and random state,
    position in the data, and the record so far."""
    saved_by = saved.get("processes", 1)
    if saved_by != run.ranks.world:
        raise CheckpointError(resume_path(run.out), f"was saved by {saved_by} training process(es); resume with "
                              f"as many (torchrun --nproc-per-node {saved_by}), this run has {run.ranks.world}")
    run.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    _restore_optimizer(run.opt, tensors, saved["optimizer"])
    rows = run.ranks.rows(run.cfg.n_seqs)
    run.h_state = (tensors["hidden.h"][:, rows].to(run.device), tensors["hidden.c"][:, rows].to(run.device))
    suffix = f".r{run.ranks.rank}" if run.ranks.distributed else ""
    torch.set_rng_state(tensors["rng.cpu" + suffix])
    if run.device.type == "cuda" and "rng.cuda" + suffix in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda" + suffix], run.device)
    run.step, run.epoch, run.index = saved["step"], saved["epoch"], saved["index"]
    run.chars_seen, run.elapsed_before = saved["chars_seen"], saved["elapsed_s"]
    run.best_val, run.bad_evals, run.history = saved["best_val"], saved["bad_evals"], saved["history"]
    run.last_eval_step = max((h["step"] for h in run.history if h.get("val_loss") is not None), default=-1)


def _optimizer_step(run: _Run, lr: float) -> float:
    """Train on the next batch at ``lr``; return its loss.

    The hidden state carries over from the batch before (truncated BPTT: detached, so the
    gradient stops at the batch boundary) and starts from zero with each epoch.
    """
    for group in run.opt.param_groups:
        group["lr"] = lr
    x, y = run.plan.batch(run.epoch, run.index)
    rows = run.ranks.rows(run.cfg.n_seqs)  # every rank reads the same batch and trains on its own rows
    x, y = x[rows].to(run.device, non_blocking=True), y[rows].to(run.device, non_blocking=True)
    h_state = (run.h_state[0].detach(), run.h_state[1].detach())
    with run.autocast:
        logits, run.h_state = (run.net or run.model)(x, h_state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    total = loss if run.penalty is None else loss + run.penalty(run.model)
    run.opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt.step()
    run.step += 1
    run.chars_seen += x.numel() * run.ranks.world
    run.index += 1
    if run.index == run.per_epoch:
        run.epoch, run.index = run.epoch + 1, 0
        run.h_state = run.model.init_state(rows.stop - rows.start, run.device)
    return loss.item()  # this rank's rows; ranks differ by sampling noise only


def _validate(run: _Run, elapsed: float) -> float:
    """The held-out loss of the current weights; a new best is saved under ``out`` at once.

    With several processes rank 0 measures and saves, and every rank learns the figure, so all
    of them keep the same record and stop early at the same step.
    """
    val_loss = _main_measures(run, lambda: evaluate_loss(run.model, run.val_eval))
    if not math.isfinite(val_loss):
        raise FloatingPointError(f"validation loss became {val_loss} at step {run.step}; try a lower learning rate")
    run.last_eval_step = run.step
    if run.best_val is None or val_loss < run.best_val:
        run.best_val, run.bad_evals = val_loss, 0
        _save_best(run, elapsed)
    else:
        run.bad_evals += 1
    return val_loss


def _main_measures(run: _Run, measure: Callable[[], float]) -> float:
    """``measure()`` on rank 0, its result on every rank (with one process: just ``measure()``)."""
    value = measure() if run.ranks.main else None
    got = distributed.from_main(run.ranks, value, run.device)
    return float("nan") if got is None else got


def _save_best(run: _Run, elapsed: float) -> None:
    if not run.ranks.main:
        return
    save_checkpoint(run.out, run.model, {**run.info, "steps": run.step, "chars_seen": run.chars_seen,
                                         "best_val_loss": run.best_val, "train_seconds": elapsed,
                                         "created": datetime.now(timezone.utc).isoformat()})


def _save_state(run: _Run, elapsed: float) -> None:
    """Everything :func:`_restore` needs to go on as if the run had never stopped."""
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(run.opt)
    tensors.update(opt_tensors)
    ranks = run.ranks  # with several processes: the whole batch's hidden state, every rank's generators
    tensors["hidden.h"] = distributed.gather_rows(ranks, run.h_state[0].detach(), dim=1)
    tensors["hidden.c"] = distributed.gather_rows(ranks, run.h_state[1].detach(), dim=1)
    generators = {"rng.cpu": torch.get_rng_state()}
    if run.device.type == "cuda":
        generators["rng.cuda"] = torch.cuda.get_rng_state(run.device)
    for key, state in generators.items():
        if ranks.distributed:
            for rank, got in enumerate(distributed.gather_states(ranks, state, run.device)):
                tensors[f"{key}.r{rank}"] = got
        else:
            tensors[key] = state
    if not ranks.main:
        return
    header = {
        "format": RESUME_FORMAT,
        "data_sha256": run.data.text_sha256,
        "train_config": asdict(run.cfg),
        "model_config": run.model_cfg.to_dict(),
        "optimizer": opt_meta,
        "step": run.step,
        "epoch": run.epoch,
        "index": run.index,
        "chars_seen": run.chars_seen,
        "elapsed_s": elapsed,
        "best_val": run.best_val,
        "bad_evals": run.bad_evals,
        "history": run.history,
        "parent": run.parent,
    }
    if ranks.distributed:
        header["processes"] = ranks.world
    write_tensor_file(resume_path(run.out), tensors, header)


def _write_reports(run: _Run, elapsed: float, status: str) -> None:
    if not run.ranks.main:
        return
    _write_log(run.out, {"status": status, "info": run.info, "model_config": run.model_cfg.to_dict(),
                         "step": run.step, "chars_seen": run.chars_seen, "elapsed_s": elapsed,
                         "best_val_loss": run.best_val, "history": run.history})
    _plot(run.out, run.history, f"{run.data.name}: {run.model_cfg.n_layers}x{run.model_cfg.hidden_size} LSTM")


def _wrap_up(run: _Run, elapsed: float, stopped: str) -> TrainResult:
    """End the run: validate the last weights if that is still owed, save the state for a later
    resume, and give the best checkpoint its loss on the whole held-out part."""
    if stopped != "interrupted" and run.last_eval_step != run.step:
        # the budget ran out between validations: the last weights still deserve their chance
        val_loss = _main_measures(run, lambda: evaluate_loss(run.model, run.val_eval))
        run.history.append({"step": run.step, "chars": run.chars_seen, "train_loss": None, "val_loss": val_loss,
                            "lr": None, "elapsed_s": round(elapsed, 2)})
        if math.isfinite(val_loss) and (run.best_val is None or val_loss < run.best_val):
            run.best_val = val_loss
            _save_best(run, elapsed)
    _save_state(run, elapsed)
    val_full = None
    if run.best_val is not None:  # this run has written ``out``; an older file there is left alone otherwise
        val_full = _main_measures(run, lambda: _finish_best(run, stopped))
    _write_reports(run, elapsed, stopped)
    distributed.barrier(run.ranks)  # no rank returns before rank 0 has written the checkpoint
    return TrainResult(str(run.out), run.step, run.chars_seen, run.best_val, val_full, stopped, elapsed, run.history)


def _finish_best(run: _Run, stopped: str) -> float:
    """Give the best checkpoint its loss on the whole held-out part and how the run ended (rank 0)."""
    best = load_checkpoint(run.out, device=run.device)
    # the best weights were validated on exactly these characters already when nothing was cut off
    val_full = run.best_val if len(run.val_eval) == len(run.val_codes) else evaluate_loss(best.model, run.val_codes)
    info = {**best.info, "val_loss_nats": val_full, "val_bpc": bits(val_full), "stopped": stopped}
    save_checkpoint(run.out, best.model, info)
    return val_full


def _open_bar(fraction: float) -> tqdm:
    from tqdm import tqdm

    return tqdm(total=1000, initial=int(fraction * 1000), bar_format="{percentage:3.0f}%|{bar}| {desc}", leave=True)


def _bar_text(elapsed: float, eta: float | None, step: int, train_loss: float, val: float | None,
              best: float | None, speed: float) -> str:
    from tqdm import tqdm

    left = tqdm.format_interval(eta) if eta is not None else "?"
    vals = f" val {val:.3f} (best {best:.3f})" if val is not None and best is not None else ""
    return (f"{tqdm.format_interval(elapsed)}<{left} step {step} loss {train_loss:.3f}{vals} "
            f"{speed:,.0f} char/s")


def _close_bar(bar: tqdm, run: _Run, stopped: str, elapsed: float) -> None:
    from tqdm import tqdm

    if stopped == "budget":  # the bar last moved at a logged step; the budget ran out after it
        bar.n = 1000
        last = "; validating the last weights" if run.last_eval_step != run.step else ""
        bar.set_description_str(f"{tqdm.format_interval(elapsed)} step {run.step}{last}", refresh=True)
    bar.close()


def train(
    data: TextData,
    out: str | Path,
    cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_bar: bool = True,
    threads: int | None = None,
    ranks: Ranks = SINGLE,
    make_plan: PlanMaker | None = None,
    penalty: Callable[[CharLSTM], torch.Tensor] | None = None,
) -> TrainResult:
    """Train on ``data`` and keep the best weights under ``out``; see the module docstring.

    With ``resume`` the saved configuration is used; a ``cfg`` passed along only replaces its
    budget (steps, epochs, minutes), e.g. to extend a run. ``threads`` overrides ``cfg.threads``
    (threads describe the machine, not the run, so a resumed run does not inherit them).
    ``ranks`` is this process's place among several started by torchrun (see
    :mod:`model.distributed`); each trains on its share of every batch's rows, rank 0 saves.

    Two hooks let a caller change what is learned without a loop of its own (fine-tuning uses
    them to keep the old corpus, see :mod:`model.finetune`): ``make_plan`` makes the batches from
    the training codes instead of :class:`BatchPlan` (e.g. mixing in other text), and ``penalty``
    is added to every step's loss (e.g. a pull towards the starting weights); the reported
    training loss stays the plain next-character loss. Neither is saved with the state: a
    resumed run must be given them again.
    """
    if resume and init_from is not None:
        raise ValueError("resume and init_from cannot be combined: a resumed run already has its weights")
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    out = Path(out)
    # find out now, not at the first validation minutes later, that the checkpoint cannot be written
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"{out.parent}: cannot write checkpoints into this folder")
    previous_threads = torch.get_num_threads()
    try:
        run = _start(data, out, cfg, model_cfg, resume, init_from, threads, ranks, make_plan)
        run.penalty = penalty
        try:
            return _train(run, on_progress, should_stop, progress_bar)
        finally:
            run.net = None  # DDP's reducer goes before the process group it talks through
    finally:
        torch.set_num_threads(previous_threads)
        distributed.leave()


_GO, _SPENT, _INTERRUPTED = 0, 1, 2


def _stop_verdict(
    run: _Run, elapsed: float, flag: _StopFlag, should_stop: Callable[[], bool] | None
) -> tuple[int, float]:
    """Whether to take another step (go on, the budget is spent, someone asked to stop), and the
    elapsed time that sets this step's learning rate.

    With several processes the ranks agree: the strongest reason on any rank wins and the
    latest clock counts, so they stop at the same step and step with the same learning rate.
    """
    verdict = _GO
    if run.fraction(elapsed) >= 1.0:
        verdict = _SPENT
    elif flag.requested or (should_stop is not None and should_stop()):
        verdict = _INTERRUPTED
    agreed, elapsed = distributed.max_over_ranks(run.ranks, [verdict, elapsed], run.device)
    return int(agreed), elapsed


def _train(
    run: _Run,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
    progress_bar: bool,
) -> TrainResult:
    """The training loop: optimizer steps until the budget is spent, validating and saving on schedule."""
    cfg = run.cfg

    frac_start = run.fraction(run.elapsed_before)
    bar = _open_bar(frac_start) if progress_bar and run.ranks.main else None
    stopped = "budget"
    run_start = time.perf_counter()
    overhead = 0.0  # seconds spent validating and saving, left out of the training speed
    window_loss, window_n = 0.0, 0
    chars_at_start = run.chars_seen
    last_val: float | None = None
    run.model.train()
    with _StopFlag() as flag:
        while True:
            elapsed = run.elapsed_before + time.perf_counter() - run_start
            verdict, elapsed = _stop_verdict(run, elapsed, flag, should_stop)
            frac = run.fraction(elapsed)
            if verdict == _SPENT:
                break
            if verdict == _INTERRUPTED:
                stopped = "interrupted"
                break
            lr = lr_at(cfg, run.step, frac)
            window_loss += _optimizer_step(run, lr)
            window_n += 1
            is_last = run.max_steps is not None and run.step >= run.max_steps
            do_eval = run.step % cfg.eval_every == 0 or is_last
            if run.step % cfg.log_every != 0 and not do_eval:
                continue

            t_log = time.perf_counter()
            elapsed = run.elapsed_before + t_log - run_start
            train_loss = window_loss / window_n
            window_loss, window_n = 0.0, 0
            val_loss = None
            if do_eval:
                val_loss = last_val = _validate(run, elapsed)
                overhead += time.perf_counter() - t_log
            speed = (run.chars_seen - chars_at_start) / max(1e-9, time.perf_counter() - run_start - overhead)
            run.history.append({"step": run.step, "chars": run.chars_seen, "train_loss": train_loss,
                                "val_loss": val_loss, "lr": lr, "elapsed_s": round(elapsed, 2)})
            frac = run.fraction(elapsed)
            eta = (elapsed - run.elapsed_before) * (1 - frac) / (frac - frac_start) if frac > frac_start else None
            if bar is not None:
                bar.n = int(frac * 1000)
                bar.set_description_str(_bar_text(elapsed, eta, run.step, train_loss, last_val, run.best_val, speed),
                                        refresh=True)
            if on_progress is not None and run.ranks.main:
                on_progress(Progress(run.step, run.chars_seen, frac, train_loss, val_loss, run.best_val, lr, speed,
                                     elapsed, eta))
            if do_eval:
                t_save = time.perf_counter()
                _save_state(run, elapsed)
                _write_reports(run, elapsed, "running")
                overhead += time.perf_counter() - t_save
                if run.bad_evals >= cfg.patience:
                    stopped = "early-stop"
                    break
    elapsed = run.elapsed_before + time.perf_counter() - run_start
    if bar is not None:
        _close_bar(bar, run, stopped, elapsed)
    return _wrap_up(run, elapsed, stopped)
