"""Fine-tuning settings from ``.env`` and the environment, checked once with one-line errors.

Read apart from the bot's own :mod:`bot.config` so ``charbot finetune`` on an
operator's machine needs no Discord settings at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import STATE_DIR_NAME, env_number, read_env, state_dir
from bot.jobs.guard import DEFAULT_MAX_CORPUS_RISE
from model.finetune import MIN_CHARS, FinetuneConfig

__all__ = ["STATE_DIR_NAME", "FinetuneSettings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """A fine-tuning setting is malformed; the message names it."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Where versions live, how many are kept, and how hard a job may push the machine."""

    state_dir: Path
    keep_versions: int = 5
    default_minutes: float = 10.0
    max_minutes: float = 60.0
    min_chars: int = MIN_CHARS
    threads: int | None = 1
    nice: int = 10
    max_running: int = 1
    status_interval_s: float = 15.0
    max_corpus_rise: float = DEFAULT_MAX_CORPUS_RISE  # nats the corpus held-out loss may rise (the guard)
    replay: float = FinetuneConfig.replay  # share of each batch replayed from the corpus's training text
    config: dict = field(default_factory=dict)  # overrides for FinetuneConfig (tests, experiments)
    command: tuple[str, ...] | None = None  # replaces `python -m bot.jobs.job`

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise SettingsError("CHARBOT_KEEP_VERSIONS must be at least 1")
        if not 0 < self.default_minutes <= self.max_minutes:
            raise SettingsError("fine-tuning minutes: need 0 < default <= maximum")
        if self.min_chars < 200:
            raise SettingsError("CHARBOT_FINETUNE_MIN_CHARS must be at least 200")
        if self.threads is not None and self.threads < 1:
            raise SettingsError("CHARBOT_FINETUNE_THREADS must be at least 1")
        if not 0 <= self.nice <= 19:
            raise SettingsError("CHARBOT_FINETUNE_NICE must be from 0 to 19")
        if self.max_running < 1:
            raise SettingsError("CHARBOT_FINETUNE_MAX_RUNNING must be at least 1")
        if self.status_interval_s < 1:
            raise SettingsError("CHARBOT_FINETUNE_STATUS_INTERVAL must be at least 1 second")
        if not self.max_corpus_rise >= 0:
            raise SettingsError("CHARBOT_FINETUNE_MAX_CORPUS_RISE must be 0 or more (nats per character)")
        if not 0 <= self.replay <= 0.9:
            raise SettingsError("CHARBOT_FINETUNE_REPLAY must be from 0 (off) to 0.9")

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "finetune-jobs"


def load_settings(
    database: str | Path, env_file: str | os.PathLike | None = ".env", environ: Mapping[str, str] | None = None
) -> FinetuneSettings:
    """Settings for a bot or CLI using ``database``; the state folder defaults to ``charbot-state``
    beside the database, so versions travel with the database they are recorded in."""
    env = read_env(env_file, environ)
    threads = int(env_number(env, "CHARBOT_FINETUNE_THREADS", 1, int, SettingsError))
    return FinetuneSettings(
        state_dir=state_dir(env, database),
        keep_versions=int(env_number(env, "CHARBOT_KEEP_VERSIONS", 5, int, SettingsError)),
        default_minutes=env_number(env, "CHARBOT_FINETUNE_MINUTES", 10.0, error=SettingsError),
        max_minutes=env_number(env, "CHARBOT_FINETUNE_MAX_MINUTES", 60.0, error=SettingsError),
        min_chars=int(env_number(env, "CHARBOT_FINETUNE_MIN_CHARS", MIN_CHARS, int, SettingsError)),
        threads=threads,
        nice=int(env_number(env, "CHARBOT_FINETUNE_NICE", 10, int, SettingsError)),
        max_running=int(env_number(env, "CHARBOT_FINETUNE_MAX_RUNNING", 1, int, SettingsError)),
        status_interval_s=env_number(env, "CHARBOT_FINETUNE_STATUS_INTERVAL", 15.0, error=SettingsError),
        max_corpus_rise=env_number(env, "CHARBOT_FINETUNE_MAX_CORPUS_RISE", DEFAULT_MAX_CORPUS_RISE,
                                   error=SettingsError),
        replay=env_number(env, "CHARBOT_FINETUNE_REPLAY", FinetuneConfig.replay, error=SettingsError),
    )
