"""``charbot ship``: a training run's best checkpoint becomes a corpus's (or the base's) shipped checkpoint."""

from __future__ import annotations

import argparse

from bot.cli.common import UserError, add_env_file_flag, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ship",
        help="store a training run's best checkpoint in 16 bits as checkpoints/NAME.safetensors",
        description="Convert a run's checkpoint to bf16 (or fp16) storage as the shipped checkpoint of corpus NAME "
        "(or of the general base model: NAME base, measured on the mixture's held-out split). "
        "The held-out loss is measured before and after the conversion (CPU, whole held-out split, the function "
        "`charbot eval` uses); shipping is refused if it moves by more than --max-shift. The measured loss of the "
        "stored weights is recorded in the file, so `charbot eval checkpoints/NAME.safetensors NAME` reproduces it. "
        "The folder is CHARBOT_CHECKPOINT_DIR (from the environment or --env-file), else checkpoints/.",
    )
    p.add_argument("run_checkpoint", help="the run's best checkpoint, e.g. runs/tale.safetensors")
    p.add_argument("name", help="corpus name (tale, faq or novel), or base: the general base model")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16", help="storage type (default bf16)")
    p.add_argument("--max-shift", type=float, default=0.005,
                   help="largest allowed change of held-out loss, nats/char (default 0.005)")
    p.add_argument("--force", action="store_true", help="replace an existing shipped checkpoint")
    add_env_file_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.config import read_env
    from corpora.mixture import known_name
    from corpora.release import ship
    from corpora.shipped import shipped_path
    from model.evaluate import bits

    try:
        known_name(args.name)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    dest = shipped_path(args.name, read_env(args.env_file))
    r = ship(args.run_checkpoint, args.name, dtype=args.dtype, max_shift=args.max_shift, dest=dest, force=args.force)
    payload = {"path": str(r.path), "corpus": r.corpus, "dtype": r.dtype, "bytes": r.bytes, "val_chars": r.val_chars,
               "loss_before_nats": r.loss_before, "loss_after_nats": r.loss_after, "shift_nats": r.shift,
               "val_bpc": bits(r.loss_after)}
    human = (f"shipped {r.corpus} as {r.path} ({r.dtype}, {r.bytes:,} bytes): held-out loss {r.loss_before:.4f} -> "
             f"{r.loss_after:.4f} nats/char ({r.shift:+.5f}), {bits(r.loss_after):.4f} bits/char over "
             f"{r.val_chars:,} characters")
    emit(args, payload, human)
    return 0
