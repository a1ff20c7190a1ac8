"""``charbot train``: train a model on a text file or a corpus by name."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from bot.cli.common import UserError, add_json_flag, emit, load_text

if TYPE_CHECKING:
    from model.train import TrainResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a char-LSTM on a text file or a named corpus",
        description="Train a char-LSTM with truncated BPTT. The best checkpoint by validation loss is kept "
        "at --out; <out>.resume.safetensors, <out>.log.json and <out>.loss.png are written beside it. "
        "On several GPUs or CPU processes: torchrun --nproc-per-node N -m bot train ... (each process trains on "
        "its share of every batch's rows; --batch-seqs must be a multiple of N).",
    )
    p.add_argument("text", help="a UTF-8 text file, a corpus name (see: charbot corpora list), or base: the training "
                   "splits of tale and novel together, validated on their held-out splits")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    b = p.add_argument_group("budget (the first reached ends the run; default 1 epoch; counts resumed parts too)")
    b.add_argument("--minutes", type=float)
    b.add_argument("--epochs", type=float)
    b.add_argument("--steps", type=int)
    m = p.add_argument_group("model (ignored with --init-from / --resume)")
    m.add_argument("--hidden", type=int, default=512, help="LSTM hidden size (default 512)")
    m.add_argument("--layers", type=int, default=2, help="LSTM layers (default 2)")
    m.add_argument("--embed", type=int, default=64, help="embedding size (default 64)")
    m.add_argument("--dropout", type=float, default=0.2, help="dropout (default 0.2)")
    t = p.add_argument_group("optimization")
    t.add_argument("--batch-seqs", type=int, default=16, help="parallel sequences per batch (default 16)")
    t.add_argument("--batch-steps", type=int, default=100,
                   help="truncated BPTT length: characters the gradient flows back through (default 100)")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    t.add_argument("--warmup", type=int, default=100,
                   help="warm-up steps (default 100; never more than 5%% of the budget)")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default 1.0)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of the text (default 0.1)")
    t.add_argument("--eval-every", type=int, default=200, help="validate every N steps (default 200)")
    t.add_argument("--patience", type=int, default=10, help="stop after N validations without improvement")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: the cores other work leaves free)")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="compute in bf16 (autocast; weights stay fp32) or fp32; auto: bf16 on CUDA and on CPUs "
                        "with native bfloat16 instructions (default auto)")
    r = p.add_argument_group(
        "regularisation (training only, after AWD-LSTM; each a drop probability, default 0 = off; "
        "checkpoints keep the same weights and shapes)")
    r.add_argument("--weight-drop", type=float, default=0.0,
                   help="DropConnect on the LSTM's hidden-to-hidden weights, one mask per batch")
    r.add_argument("--embed-dropout", type=float, default=0.0,
                   help="drop whole character embeddings, per sequence for the whole window")
    r.add_argument("--input-dropout", type=float, default=0.0,
                   help="variational (locked) dropout on the LSTM input: one mask per sequence, shared over time")
    r.add_argument("--layer-dropout", type=float, default=0.0,
                   help="variational dropout between LSTM layers (replaces --dropout there; needs 2+ layers)")
    r.add_argument("--output-dropout", type=float, default=0.0,
                   help="variational dropout on the LSTM output before the softmax layer (replaces --dropout there)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run exactly where it stopped")
    p.add_argument("--init-from", help="fine-tune: start from this checkpoint's weights and shape")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.distributed import ranks_from_env
    from model.network import ModelConfig
    from model.train import TrainConfig, train

    if args.resume and args.init_from:
        raise UserError("--resume and --init-from cannot be combined")
    try:
        ranks = ranks_from_env()  # several processes when started by torchrun
        if not args.resume:
            ranks.rows(args.batch_seqs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    data = load_text(args.text)
    budget_given = any(v is not None for v in (args.minutes, args.epochs, args.steps))
    cfg = None
    if not args.resume or budget_given:
        cfg = TrainConfig(
            n_seqs=args.batch_seqs, n_steps=args.batch_steps, lr=args.lr, warmup_steps=args.warmup,
            weight_decay=args.weight_decay, grad_clip=args.clip, val_fraction=args.val_fraction,
            eval_every=args.eval_every, patience=args.patience, max_steps=args.steps, epochs=args.epochs,
            minutes=args.minutes, seed=args.seed, device=args.device, threads=args.threads,
            precision=args.precision, weight_drop=args.weight_drop, embed_dropout=args.embed_dropout,
            input_dropout=args.input_dropout, layer_dropout=args.layer_dropout, output_dropout=args.output_dropout,
        )
    model_cfg = ModelConfig(embed_size=args.embed, hidden_size=args.hidden, n_layers=args.layers, dropout=args.dropout)
    result = train(
        data, args.out, cfg, model_cfg, resume=args.resume, init_from=args.init_from, threads=args.threads,
        progress_bar=not (args.quiet or args.json), ranks=ranks,
    )
    code = 130 if result.stopped == "interrupted" else 0  # scripts must not take a cut run for a finished one
    if ranks.main:  # rank 0 speaks for the run
        _report(args, result)
    if ranks.distributed:
        _exit_now(code)
    return code


def _report(args: argparse.Namespace, result: TrainResult) -> None:
    from model.evaluate import bits

    payload = {
        "out": result.out, "steps": result.steps, "chars_seen": result.chars_seen, "stopped": result.stopped,
        "seconds": round(result.elapsed_s, 1), "best_val_loss": result.best_val_loss,
        "val_loss_nats": result.val_loss_nats,
        "val_bpc": bits(result.val_loss_nats) if result.val_loss_nats is not None else None,
    }
    if result.val_loss_nats is None:
        human = f"stopped ({result.stopped}) at step {result.steps} before any validation; resume with --resume"
    else:
        human = (f"{result.stopped}: {result.steps} steps, {result.chars_seen:,} characters in "
                 f"{result.elapsed_s:.0f} s; validation loss {result.val_loss_nats:.4f} nats "
                 f"({bits(result.val_loss_nats):.4f} bits) per character; best checkpoint at {result.out}")
        if result.stopped == "interrupted":
            human += "; continue with --resume"
    emit(args, payload, human)


def _exit_now(code: int) -> NoReturn:
    """End a torchrun rank without Python's interpreter teardown, once its work is saved and said.

    PyTorch's gloo backend can abort a rank there ("terminate called without an active
    exception": a C++ thread destroyed while still joinable), which torchrun then reports as a
    failed run although training finished; measured about 1 run in 10 on a loaded 2-core machine.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
