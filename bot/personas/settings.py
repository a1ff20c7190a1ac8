"""The bounds on personas, from ``.env`` and the environment, checked once with one-line errors.

Read like :mod:`bot.jobs.settings`, without any Discord setting, so ``charbot persona`` works on a
machine with no bot token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from bot.config import env_number, read_env


class PersonaSettingsError(ValueError):
    """A persona setting is malformed; the message names it."""


@dataclass(frozen=True)
class PersonaSettings:
    """How much of the machine personas may take. Every bound is a CHARBOT_PERSONA_* setting."""

    max_per_server: int = 5  # personas one server may have
    max_files: int = 5  # files in one upload
    max_chars: int = 300_000  # characters of text in one persona (all its files)
    max_file_bytes: int = 2_000_000  # bytes of one uploaded file, checked before it is read
    max_loaded: int = 8  # persona engines one process keeps loaded (least recently used unload first)
    max_disk_mb: float = 200.0  # megabytes of checkpoints one server's personas may keep on disk

    def __post_init__(self) -> None:
        for name, value, least in (("MAX_PER_SERVER", self.max_per_server, 1), ("MAX_FILES", self.max_files, 1),
                                   ("MAX_CHARS", self.max_chars, 2_000), ("MAX_FILE_BYTES", self.max_file_bytes, 1),
                                   ("MAX_LOADED", self.max_loaded, 1), ("MAX_DISK_MB", self.max_disk_mb, 1)):
            if not value >= least:
                raise PersonaSettingsError(f"CHARBOT_PERSONA_{name} must be at least {least:g}; got {value}")

    def lines(self) -> list[str]:
        """The bounds in words, for /help (admins) and ``charbot persona --help``."""
        return [
            f"at most {self.max_per_server} personas per server, {self.max_disk_mb:g} MB of checkpoints per server",
            f"at most {self.max_files} files per persona, {self.max_file_bytes / 1e6:g} MB each, "
            f"{self.max_chars:,} characters in all",
            f"{self.max_loaded} personas loaded at once per bot process (others load on demand)",
        ]


def load_persona_settings(env_file: str | os.PathLike | None = ".env",
                          environ: Mapping[str, str] | None = None) -> PersonaSettings:
    env = read_env(env_file, environ)

    def number(name: str, default: float, kind: type = int) -> float:
        return env_number(env, name, default, kind, PersonaSettingsError)  # type: ignore[return-value]

    d = PersonaSettings()  # the names are spelled out whole, so a search (and .env.example's test) finds them
    return PersonaSettings(
        max_per_server=int(number("CHARBOT_PERSONA_MAX_PER_SERVER", d.max_per_server)),
        max_files=int(number("CHARBOT_PERSONA_MAX_FILES", d.max_files)),
        max_chars=int(number("CHARBOT_PERSONA_MAX_CHARS", d.max_chars)),
        max_file_bytes=int(number("CHARBOT_PERSONA_MAX_FILE_BYTES", d.max_file_bytes)),
        max_loaded=int(number("CHARBOT_PERSONA_MAX_LOADED", d.max_loaded)),
        max_disk_mb=float(number("CHARBOT_PERSONA_MAX_DISK_MB", d.max_disk_mb, float)),
    )
