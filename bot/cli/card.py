"""``charbot card``: write checkpoints/MODEL_CARD.md from the shipped checkpoints."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bot.cli.common import UserError, add_env_file_flag, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        help="generate the model card (checkpoints/MODEL_CARD.md) from the shipped checkpoints",
        description="Write the model card from the shipped checkpoints' metadata: architecture, parameters, "
        "training data and time, characters seen, device, held-out loss measured now (the function `charbot eval` "
        "uses), target, parent, and three samples (temperatures 0.5, 0.8, 1.0) from a fixed seed and prime. With a "
        "base.safetensors there, the general base too: its loss on its mixture and on each part's held-out split, "
        "next to each part's own checkpoint, against the target of at most 0.05 nats/char worse.",
    )
    p.add_argument("--dir", help="folder of the shipped checkpoints (default: CHARBOT_CHECKPOINT_DIR from the "
                   "environment or .env, else checkpoints/)")
    p.add_argument("--out", help="where to write the card (default: MODEL_CARD.md in that folder); '-' prints it")
    p.add_argument("--experiments", metavar="JSON",
                   help="extra rows: a JSON list of {label, checkpoint | corpus + val_loss_nats, note}")
    p.add_argument("--bench", action="append", default=[], metavar="BENCH_MD",
                   help="add a `charbot bench` report (its bench.md) as a speed section (repeatable)")
    p.add_argument("--target", action="append", default=[], metavar="NAME=BPC",
                   help="held-out target in bits/char for a corpus (repeatable), e.g. --target tale=2.0")
    p.add_argument("--seed", type=int, default=1234, help="seed of the samples (default 1234)")
    p.add_argument("--length", type=int, default=300, help="characters per sample at most (default 300)")
    p.add_argument("--device", default="cpu", help="device for samples and measurement (default cpu, as recorded)")
    add_env_file_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def parse_targets(items: list[str]) -> dict[str, float]:
    targets = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name or not number > 0:
            raise UserError(f"--target {item!r}: expected NAME=BITS_PER_CHAR, e.g. tale=2.0")
        targets[name] = number
    return targets


def card_command(args: argparse.Namespace) -> str:
    """The command line that makes this card, as the card quotes it."""
    parts = ["charbot", "card"]
    for flag, value in (("--dir", args.dir), ("--experiments", args.experiments)):
        if value:
            parts += [flag, value]
    for item in args.target:
        parts += ["--target", item]
    for item in args.bench:
        parts += ["--bench", item]
    if args.env_file != ".env":
        parts += ["--env-file", args.env_file]
    if args.seed != 1234:
        parts += ["--seed", str(args.seed)]
    if args.length != 300:
        parts += ["--length", str(args.length)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from bot.config import read_env
    from corpora.card import build_card, write_card
    from corpora.registry import CORPORA
    from corpora.shipped import CARD_NAME, checkpoint_dir

    targets = parse_targets(args.target)
    unknown = [n for n in targets if n not in CORPORA]
    if unknown:
        raise UserError(f"--target: unknown corpus {unknown[0]!r} (corpora: {', '.join(CORPORA)})")
    if args.length < 1:
        raise UserError("--length must be at least 1")
    command = card_command(args)
    folder = Path(args.dir) if args.dir else checkpoint_dir(read_env(args.env_file))
    text = build_card(folder, experiments=args.experiments, targets=targets, seed=args.seed, length=args.length,
                      device=args.device, command=command, bench=args.bench)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = write_card(text, args.out or folder / CARD_NAME)
    emit(args, {"card": str(out), "chars": len(text)}, f"wrote {out}")
    return 0
