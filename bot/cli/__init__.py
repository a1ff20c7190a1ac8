"""The ``charbot`` command: one sub-command module per job, listed in COMMAND_MODULES.

Each module in ``bot.cli`` has ``register(subparsers)`` adding its parsers, each
parser with ``func(args) -> int``. Errors a user can cause are ``UserError`` (or a
``CheckpointError``/``FileNotFoundError``/``ValueError``) and print one line, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from model import __version__

COMMAND_MODULES = [
    "bot.cli.train",
    "bot.cli.evaluate",
    "bot.cli.sample",
    "bot.cli.reply",
    "bot.cli.chat",
    "bot.cli.corpora",
    "bot.cli.ship",
    "bot.cli.card",
    "bot.cli.run",
    "bot.cli.sync",
    "bot.cli.bench",
    "bot.cli.finetune",
    "bot.cli.persona",
]


def build_parser() -> argparse.ArgumentParser:
    from bot.cli.common import Parser

    parser = Parser(  # its sub-commands' parsers are Parsers too
        prog="charbot",
        description="Character-level LSTM storytellers: train, evaluate, sample, and run the Discord bot.",
    )
    parser.add_argument("--version", action="version", version=f"charbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bot.cli.common import UserError
    from model.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, CheckpointError, OSError, ValueError, FloatingPointError) as exc:
        # OSError covers a missing file, a folder given as a file, no permission, a full disk
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the exception held
        if getattr(args, "json", False):
            print(json.dumps({"error": message}))
        print(f"charbot {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"charbot {args.command}: interrupted", file=sys.stderr)
        return 130


