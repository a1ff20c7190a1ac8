"""Training with truncated BPTT: contiguous batches, carried state, AdamW, warm-up and decay.

One function, :func:`train`, read top to bottom. The training state (weights, optimizer,
hidden state, RNG, data position, history) goes to ``<out>.resume.safetensors`` at every
validation and on interruption (Ctrl-C, SIGTERM), so a stopped run resumes where it was (a
killed one from its last validation), and a resumed CPU run equals an uninterrupted one with
the same seed. The best weights by
validation loss are kept under ``out`` itself.
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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from model.batches import BatchPlan
from model.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    read_tensor_file,
    save_checkpoint,
    write_tensor_file,
)
from model.device import pick_device
from model.evaluate import bits, evaluate_loss
from model.fast_step import check_precision, resolve_precision
from model.network import CharLSTM, ModelConfig
from model.textdata import TextData

RESUME_FORMAT = "charbot-train-state"
WARMUP_MAX_FRACTION = 0.05


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
    other processes leave free (see :func:`auto_threads`).
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
        for name in ("max_steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_steps is None and self.epochs is None and self.minutes is None:
            self.epochs = 1.0


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
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".resume.safetensors")


def log_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".log.json")


def plot_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".loss.png")


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


def training_precision(precision: str, device: torch.device) -> str:
    """What the forward and backward passes compute in: ``fp32`` or ``bf16`` (autocast).

    ``auto`` is bf16 on CUDA and on CPUs with native bfloat16 matrix instructions, where it
    trains faster (1.66x fp32 at 128 x 100 on a 2-core EPYC, 1.05x at 16 x 100) and reaches
    the same held-out loss per step (tale, side by side: 1.2383 vs 1.2377 nats after 2,500
    steps of 16 x 100); weights, optimizer state and validation always stay float32.
    """
    if check_precision(precision) == "auto" and device.type == "cuda":
        return "bf16"
    return resolve_precision(precision, device)  # on CPU, the engine's rule: bf16 where it is native


def auto_threads() -> int:
    """Torch CPU threads for a run: the cores that other processes leave free, at least one.

    Torch's default of one thread per core is several times slower, not faster, when other
    work shares the cores: every parallel operation waits for its slowest thread.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, cores - int(busy + 0.5)))


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

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
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
) -> TrainResult:
    """Train on ``data`` and keep the best weights under ``out``; see the module docstring.

    With ``resume`` the saved configuration is used; a ``cfg`` passed along only replaces its
    budget (steps, epochs, minutes), e.g. to extend a run. ``threads`` overrides ``cfg.threads``
    (threads describe the machine, not the run, so a resumed run does not inherit them).
    """
    if resume and init_from is not None:
        raise ValueError("resume and init_from cannot be combined: a resumed run already has its weights")
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    previous_threads = torch.get_num_threads()
    try:
        return _train(data, Path(out), cfg, model_cfg, resume, init_from, on_progress, should_stop, progress_bar,
                      threads)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    data: TextData,
    out: Path,
    cfg: TrainConfig | None,
    model_cfg: ModelConfig | None,
    resume: bool,
    init_from: str | Path | None,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
    progress_bar: bool,
    threads: int | None,
) -> TrainResult:
    rpath = resume_path(out)
    # find out now, not at the first validation minutes later, that the checkpoint cannot be written
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"{out.parent}: cannot write checkpoints into this folder")
    state_tensors: dict[str, torch.Tensor] = {}
    saved: dict = {}
    parent: dict | None = None
    if resume:
        if not rpath.exists():
            raise FileNotFoundError(f"{rpath}: no training state to resume from")
        state_tensors, saved = read_tensor_file(rpath, expect_format=RESUME_FORMAT)
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
        cfg = saved_cfg
        parent = saved.get("parent")
    elif init_from is not None:
        ck = load_checkpoint(init_from)
        model_cfg = ck.config
        parent = {"path": str(init_from), "corpus": ck.info.get("corpus"),
                  "val_loss_nats": ck.info.get("val_loss_nats")}
    if not data.text:
        raise ValueError(f"{data.name}: no text to train on ({data.dropped:,} characters could not be used)")
    cfg = cfg or TrainConfig()
    if threads is not None:
        cfg = replace(cfg, threads=threads)
    model_cfg = model_cfg or ModelConfig()
    train_codes, val_codes = data.split(cfg.val_fraction)
    if len(val_codes) < 2:
        raise ValueError(f"{data.name}: held-out split too small ({len(val_codes)} characters)")

    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), auto_threads()))
    torch.manual_seed(cfg.seed)
    model = CharLSTM(model_cfg)
    if init_from is not None:
        model.load_state_dict(ck.model.state_dict())
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    try:
        plan = BatchPlan(train_codes, cfg.n_seqs, cfg.n_steps, seed=cfg.seed)
    except ValueError as exc:
        raise ValueError(f"{data.name}: training part {exc}") from None
    per_epoch = plan.batches_per_epoch()
    max_steps = cfg.max_steps
    if cfg.epochs is not None:
        by_epochs = max(1, math.ceil(cfg.epochs * per_epoch))
        max_steps = by_epochs if max_steps is None else min(max_steps, by_epochs)

    step, epoch, index, chars_seen, elapsed_before = 0, 0, 0, 0, 0.0
    best_val: float | None = None
    bad_evals = 0
    history: list[dict] = []
    h_state = model.init_state(cfg.n_seqs, device)
    if resume:
        model.load_state_dict({k[len("model."):]: v for k, v in state_tensors.items() if k.startswith("model.")})
        _restore_optimizer(opt, state_tensors, saved["optimizer"])
        h_state = (state_tensors["hidden.h"].to(device), state_tensors["hidden.c"].to(device))
        torch.set_rng_state(state_tensors["rng.cpu"])
        if device.type == "cuda" and "rng.cuda" in state_tensors:
            torch.cuda.set_rng_state(state_tensors["rng.cuda"], device)
        step, epoch, index = saved["step"], saved["epoch"], saved["index"]
        chars_seen, elapsed_before = saved["chars_seen"], saved["elapsed_s"]
        best_val, bad_evals, history = saved["best_val"], saved["bad_evals"], saved["history"]
    last_eval_step = max((h["step"] for h in history if h.get("val_loss") is not None), default=-1)

    precision = training_precision(cfg.precision, device)
    info_base = {
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
    val_eval = val_codes if cfg.eval_max_chars is None else val_codes[: cfg.eval_max_chars + 1]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def fraction(elapsed: float) -> float:
        parts = []
        if max_steps is not None:
            parts.append(step / max_steps)
        if cfg.minutes is not None:
            parts.append(elapsed / (cfg.minutes * 60))
        return min(1.0, max(parts))

    def save_best(elapsed: float) -> None:
        save_checkpoint(out, model, {**info_base, "steps": step, "chars_seen": chars_seen,
                                     "best_val_loss": best_val, "train_seconds": elapsed,
                                     "created": datetime.now(timezone.utc).isoformat()})

    def save_state(elapsed: float) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        tensors.update(opt_tensors)
        tensors["hidden.h"], tensors["hidden.c"] = h_state[0].detach(), h_state[1].detach()
        tensors["rng.cpu"] = torch.get_rng_state()
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        header = {
            "format": RESUME_FORMAT,
            "data_sha256": data.text_sha256,
            "train_config": asdict(cfg),
            "model_config": model_cfg.to_dict(),
            "optimizer": opt_meta,
            "step": step,
            "epoch": epoch,
            "index": index,
            "chars_seen": chars_seen,
            "elapsed_s": elapsed,
            "best_val": best_val,
            "bad_evals": bad_evals,
            "history": history,
            "parent": parent,
        }
        write_tensor_file(rpath, tensors, header)

    def write_reports(elapsed: float, status: str) -> None:
        _write_log(out, {"status": status, "info": info_base, "model_config": model_cfg.to_dict(),
                         "step": step, "chars_seen": chars_seen, "elapsed_s": elapsed,
                         "best_val_loss": best_val, "history": history})
        _plot(out, history, f"{data.name}: {model_cfg.n_layers}x{model_cfg.hidden_size} LSTM")

    frac_start = fraction(elapsed_before)
    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=1000, initial=int(frac_start * 1000), bar_format="{percentage:3.0f}%|{bar}| {desc}",
                   leave=True)
    stopped = "budget"
    run_start = time.perf_counter()
    overhead = 0.0  # seconds spent validating and saving, left out of the training speed
    window_loss, window_n = 0.0, 0
    chars_at_start = chars_seen
    last_val: float | None = None
    model.train()
    with _StopFlag() as flag:
        while True:
            elapsed = elapsed_before + time.perf_counter() - run_start
            frac = fraction(elapsed)
            if frac >= 1.0:
                break
            if flag.requested or (should_stop is not None and should_stop()):
                stopped = "interrupted"
                break
            lr = lr_at(cfg, step, frac)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = plan.batch(epoch, index)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            h_state = (h_state[0].detach(), h_state[1].detach())
            with autocast:
                logits, h_state = model(x, h_state)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            chars_seen += x.numel()
            index += 1
            if index == per_epoch:
                epoch, index = epoch + 1, 0
                h_state = model.init_state(cfg.n_seqs, device)
            window_loss += loss.item()
            window_n += 1
            is_last = max_steps is not None and step >= max_steps
            do_eval = step % cfg.eval_every == 0 or is_last
            if step % cfg.log_every == 0 or do_eval:
                t_log = time.perf_counter()
                elapsed = elapsed_before + t_log - run_start
                train_loss = window_loss / window_n
                window_loss, window_n = 0.0, 0
                val_loss = None
                if do_eval:
                    val_loss = evaluate_loss(model, val_eval)
                    if not math.isfinite(val_loss):
                        raise FloatingPointError(
                            f"validation loss became {val_loss} at step {step}; try a lower learning rate"
                        )
                    last_val, last_eval_step = val_loss, step
                    if best_val is None or val_loss < best_val:
                        best_val, bad_evals = val_loss, 0
                        save_best(elapsed)
                    else:
                        bad_evals += 1
                    overhead += time.perf_counter() - t_log
                speed = (chars_seen - chars_at_start) / max(1e-9, time.perf_counter() - run_start - overhead)
                history.append({"step": step, "chars": chars_seen, "train_loss": train_loss,
                                "val_loss": val_loss, "lr": lr, "elapsed_s": round(elapsed, 2)})
                frac = fraction(elapsed)
                eta = (elapsed - elapsed_before) * (1 - frac) / (frac - frac_start) if frac > frac_start else None
                if bar is not None:
                    bar.n = int(frac * 1000)
                    bar.set_description_str(_bar_text(elapsed, eta, step, train_loss, last_val, best_val, speed),
                                            refresh=True)
                if on_progress is not None:
                    on_progress(Progress(step, chars_seen, frac, train_loss, val_loss, best_val, lr, speed,
                                         elapsed, eta))
                if do_eval:
                    t_save = time.perf_counter()
                    save_state(elapsed)
                    write_reports(elapsed, "running")
                    overhead += time.perf_counter() - t_save
                    if bad_evals >= cfg.patience:
                        stopped = "early-stop"
                        break
    elapsed = elapsed_before + time.perf_counter() - run_start
    if bar is not None:
        if stopped == "budget":  # the bar last moved at a logged step; the budget ran out after it
            bar.n = 1000
            last = "; validating the last weights" if last_eval_step != step else ""
            bar.set_description_str(f"{tqdm.format_interval(elapsed)} step {step}{last}", refresh=True)
        bar.close()
    if stopped != "interrupted" and last_eval_step != step:
        # the budget ran out between validations: the last weights still deserve their chance
        val_loss = evaluate_loss(model, val_eval)
        history.append({"step": step, "chars": chars_seen, "train_loss": None, "val_loss": val_loss,
                        "lr": None, "elapsed_s": round(elapsed, 2)})
        if math.isfinite(val_loss) and (best_val is None or val_loss < best_val):
            best_val = val_loss
            save_best(elapsed)
    save_state(elapsed)
    val_full = None
    if best_val is not None:  # this run has written ``out``; an older file there is left alone otherwise
        best = load_checkpoint(out, device=device)
        # the best weights were validated on exactly these characters already when nothing was cut off
        val_full = best_val if len(val_eval) == len(val_codes) else evaluate_loss(best.model, val_codes)
        info = {**best.info, "val_loss_nats": val_full, "val_bpc": bits(val_full), "stopped": stopped}
        save_checkpoint(out, best.model, info)
    write_reports(elapsed, stopped)
    return TrainResult(str(out), step, chars_seen, best_val, val_full, stopped, elapsed, history)


def _bar_text(elapsed: float, eta: float | None, step: int, train_loss: float, val: float | None,
              best: float | None, speed: float) -> str:
    from tqdm import tqdm

    left = tqdm.format_interval(eta) if eta is not None else "?"
    vals = f" val {val:.3f} (best {best:.3f})" if val is not None and best is not None else ""
    return (f"{tqdm.format_interval(elapsed)}<{left} step {step} loss {train_loss:.3f}{vals} "
            f"{speed:,.0f} char/s")
