"""Small helpers the sub-commands share: errors, JSON output, texts by name or path, the bot's models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from model.device import GENERATION_PRECISIONS

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.core.engines import Models
    from model.textdata import TextData


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback."""


def emit(args: argparse.Namespace, payload: dict, human: str) -> None:
    """Print ``payload`` as JSON with ``--json``, else the human-readable text."""
    if getattr(args, "json", False):
        print(json.dumps(payload))
    else:
        print(human)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def add_env_file_flag(parser: argparse.ArgumentParser) -> None:
    """``--env-file``: the settings file read as the bot reads it (the environment wins over it)."""
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")


def load_text(name_or_path: str) -> TextData:
    """A TextData from a file path, a registered corpus name (cleaned), or a mixture name (``base``: see
    corpora.mixture), so every command that takes a text takes what ``charbot train`` trained on."""
    from corpora.mixture import MIXTURES, load_mixture
    from corpora.registry import CORPORA, load_corpus
    from model.textdata import TextData

    path = Path(name_or_path)
    if path.exists():  # a folder too: from_file says what is wrong with it
        return TextData.from_file(path)
    if name_or_path in CORPORA:
        return load_corpus(name_or_path)
    if name_or_path in MIXTURES:
        try:
            return load_mixture(name_or_path)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None
    known = ", ".join(sorted(CORPORA)) or "none"
    raise UserError(f"{name_or_path}: no such file, and not a corpus name (corpora: {known}; "
                    f"mixtures: {', '.join(MIXTURES)})")


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The options of the commands that load the bot's models (`reply`, `chat`)."""
    p.add_argument("--checkpoints", help="folder holding <corpus>.safetensors (default: CHARBOT_CHECKPOINT_DIR, "
                   "else the shipped checkpoints/ folder)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: CHARBOT_DEVICE, else auto)")
    p.add_argument("--precision", choices=GENERATION_PRECISIONS,
                   help="what the engine computes in: auto measures the fastest within the fidelity bounds once per "
                        "checkpoint and machine (kept in precision.json in the state folder); fp32 gives the text "
                        "`charbot sample` gives (default: CHARBOT_PRECISION, else auto)")
    add_env_file_flag(p)


def load_models(args: argparse.Namespace, corpora: list[str] | None) -> tuple[BotConfig, Models]:
    """Settings and models; ``corpora`` None means every corpus the bot serves."""
    from pathlib import Path

    from bot.config import load_config
    from bot.core.engines import Models

    config = load_config(args.env_file, require_token=False)
    checkpoints = Path(args.checkpoints) if args.checkpoints else config.checkpoint_dir
    models = Models.load(corpora or config.corpora, checkpoints, device=args.device or config.device,
                         precision=args.precision or config.precision, precision_cache=config.precision_cache)
    return config, models


