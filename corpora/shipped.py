"""Where the shipped checkpoints live: ``checkpoints/<corpus>.safetensors`` at the project root.

``CHARBOT_CHECKPOINT_DIR`` points elsewhere (an installed package has no project root, and
a deployment may keep its weights on another disk). The commands pass their settings (``.env``
overlaid with the environment, as the bot reads them: the ``.env`` reader is the bot's, and
corpora imports nothing of the bot); without settings the environment alone is read. Only the
path is decided here; loading and verifying is :func:`model.checkpoint.load_checkpoint`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corpora.paths import PROJECT_ROOT
from model.checkpoint import checkpoint_file

CHECKPOINT_DIR_ENV = "CHARBOT_CHECKPOINT_DIR"
CARD_NAME = "MODEL_CARD.md"


class ShippedMissing(FileNotFoundError):
    """No shipped checkpoint for a corpus; the message says where it looked and how to make one."""


def checkpoint_dir(env: Mapping[str, str] | None = None) -> Path:
    """``CHARBOT_CHECKPOINT_DIR`` from ``env`` (default: ``os.environ``), else ``checkpoints/`` at the project root."""
    folder = ((os.environ if env is None else env).get(CHECKPOINT_DIR_ENV) or "").strip()
    return Path(folder).expanduser() if folder else PROJECT_ROOT / "checkpoints"


def shipped_path(name: str, env: Mapping[str, str] | None = None) -> Path:
    """Where the shipped checkpoint of corpus ``name`` is (or would be) stored."""
    return checkpoint_file(checkpoint_dir(env), name)


def shipped_checkpoint(name: str) -> Path:
    """The path of corpus ``name``'s shipped checkpoint; ShippedMissing with a how-to if absent."""
    path = shipped_path(name)
    if not path.is_file():
        raise ShippedMissing(
            f"no shipped checkpoint for {name!r}: {path} does not exist; ship a trained run with "
            f"`charbot ship RUN.safetensors {name}`, or set {CHECKPOINT_DIR_ENV} to the folder holding {path.name}"
        )
    return path
