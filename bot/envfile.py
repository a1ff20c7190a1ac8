"""Settings from a ``.env`` file overlaid with the process environment, and numbers read from them.

Shared by the bot's configuration and the fine-tuning settings, which are read apart (an
operator's ``charbot finetune`` needs no Discord settings) but must parse alike. The file is
read with python-dotenv without copying it into ``os.environ``, so nothing in it leaks into
child processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values


def read_env(env_file: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env_file`` (if it exists) overlaid with ``environ`` (default: ``os.environ``)."""
    env: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def env_number(
    env: Mapping[str, str],
    name: str,
    default: float | None,
    kind: type[int] | type[float] = float,
    error: type[Exception] = ValueError,
) -> float | None:
    """``env[name]`` as ``kind``, ``default`` when unset or blank; ``error`` names the variable."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise error(f"{name} must be a {'whole ' if kind is int else ''}number, got {raw!r}") from None
