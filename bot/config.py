"""Bot settings from ``.env`` and the environment, checked once at start with one-line errors.

The ``.env`` file is read with python-dotenv without copying it into ``os.environ``, so the
token is not inherited by child processes; variables already in the environment win over the
file. The token is wrapped in :class:`Secret`, whose repr and str never show it, and
:class:`RedactingFormatter` removes it from every log line in case a library prints it.

:func:`read_env` and :func:`env_number` are the one ``.env`` reader and number parser: the
fine-tuning settings (read apart, so ``charbot finetune`` needs no Discord settings) and the
commands that only need a folder (``card``, ``ship``, ``bench``) use them too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from bot.discord_limits import LONGEST_REPLY_CHARS, MESSAGE_CHARS
from corpora.shipped import checkpoint_dir as shipped_dir

TOKEN_HELP = "copy it from https://discord.com/developers/applications > your app > Bot > Reset Token"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{18,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


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


class Secret:
    """A value that must never be printed or logged; ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> None:  # pickling would write the token somewhere
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how hard the bot may be pushed."""

    max_prompt_chars: int = 500
    default_length: int = 400
    max_length: int = 1500
    max_contribution_chars: int = 4000
    cooldown_s: float = 5.0
    max_pending: int = 32
    edit_interval_s: float = 1.5
    shutdown_grace_s: float = 10.0
    max_per_channel: int = 4  # replies being written in one channel at once; more are told to wait
    chain_chars: int = 600  # how much of a reply chain primes the next reply
    chain_messages: int = 6  # how many messages back a reply chain is followed
    button_hours: float = 24.0  # how long Continue and Another work under a reply

    def __post_init__(self) -> None:
        for name in ("max_prompt_chars", "default_length", "max_length", "max_contribution_chars", "max_pending",
                     "max_per_channel", "chain_chars", "chain_messages"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.default_length > self.max_length:
            raise ConfigError(f"default length {self.default_length} is over the maximum length {self.max_length}")
        if self.max_length > LONGEST_REPLY_CHARS:
            raise ConfigError(f"max length must be at most {LONGEST_REPLY_CHARS} characters "
                              f"(Discord messages hold {MESSAGE_CHARS})")
        if self.max_prompt_chars > 1000:
            raise ConfigError("max prompt length must be at most 1000 characters")
        if self.chain_chars > 2000:
            raise ConfigError("chain_chars must be at most 2000 characters")
        if not self.button_hours > 0:
            raise ConfigError("button_hours must be more than 0")
        for name in ("cooldown_s", "edit_interval_s", "shutdown_grace_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} cannot be negative")


@dataclass(frozen=True)
class BotConfig:
    """Everything the bot and the local CLI read from the environment."""

    token: Secret | None = field(default=None, repr=False)
    database: Path | str = Path("charbot.db")  # a SQLite file, or a postgresql:// URL (kept as text)
    dev_guild_id: int | None = None
    admin_ids: frozenset[int] = frozenset()
    device: str = "auto"
    precision: str = "auto"  # the engines' (model.device.GENERATION_PRECISIONS); auto is measured at load
    state_dir: Path | None = None  # CHARBOT_STATE_DIR; None: charbot-state/ beside the SQLite database
    checkpoint_dir: Path = shipped_dir({})  # CHARBOT_CHECKPOINT_DIR, else the shipped checkpoints/
    corpora: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    discord_api: str | None = None
    discord_gateway: str | None = None
    log_level: str = "INFO"
    # Gateway shards: None runs one plain connection (the default); a number or "auto" (Discord's
    # recommendation from /gateway/bot) runs discord.py's AutoShardedBot; shard_ids picks the ones
    # this process owns, so a cluster is several processes with the same count.
    shard_count: int | str | None = None
    shard_ids: tuple[int, ...] | None = None
    # Prometheus metrics, liveness and readiness over HTTP (bot.discord_app.metrics); None: no server.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def precision_cache(self) -> Path | None:
        """Where the engines keep their measured ``auto`` precisions: ``precision.json`` in the state folder."""
        if self.state_dir is None and is_postgres_url(self.database):
            return None  # not reachable: load_config refuses PostgreSQL without a state folder
        return (self.state_dir or state_dir({}, self.database)) / PRECISION_CACHE_NAME

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={loggable(getattr(self, k))!r}"
            for k in ("database", "dev_guild_id", "admin_ids", "device", "precision", "state_dir",
                      "checkpoint_dir", "corpora", "limits", "discord_api", "discord_gateway", "log_level",
                      "shard_count", "shard_ids", "metrics_port", "metrics_host")
        )
        return f"BotConfig(token={'set' if self.token else 'unset'}, {shown})"

    __str__ = __repr__


def is_postgres_url(value: object) -> bool:
    """Whether a CHARBOT_DB value names a PostgreSQL server rather than a SQLite file (the one test of it)."""
    return str(value).startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """A database URL without its password, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def loggable(value: object) -> object:
    """``value`` as it may be logged: a database URL loses its password."""
    return redact_url(value) if isinstance(value, str) and is_postgres_url(value) else value


def _database(env: Mapping[str, str]) -> Path | str:
    """CHARBOT_DB: a SQLite file (default charbot.db), or a PostgreSQL URL for bots on several machines.

    With PostgreSQL the fine-tuning versions cannot live "beside the database", so CHARBOT_STATE_DIR
    must name storage every machine reads (a shared filesystem): the database records which
    version is served, the files are loaded from there.
    """
    raw = (env.get("CHARBOT_DB") or "charbot.db").strip()
    if not is_postgres_url(raw):
        return Path(raw).expanduser()
    if not (env.get("CHARBOT_STATE_DIR") or "").strip():
        raise ConfigError("CHARBOT_DB is a PostgreSQL URL: set CHARBOT_STATE_DIR to a folder every machine running "
                          "the bot reads and writes (the fine-tuned versions live there)")
    return raw


STATE_DIR_NAME = "charbot-state"  # beside the database unless CHARBOT_STATE_DIR says otherwise
PRECISION_CACHE_NAME = "precision.json"  # in the state folder: the engines' measured ``auto`` precisions


def state_dir(env: Mapping[str, str], database: Path | str) -> Path:
    """The bot's state folder: CHARBOT_STATE_DIR, else ``charbot-state`` beside the SQLite database,
    so what is kept there (fine-tuned versions, the precision cache) travels with the database."""
    state = (env.get("CHARBOT_STATE_DIR") or "").strip()
    return Path(state).expanduser() if state else Path(database).expanduser().resolve().parent / STATE_DIR_NAME


def check_token(raw: str | None) -> Secret:
    """The bot token as a Secret, or a ConfigError that never quotes the token."""
    if raw is None or not raw.strip():
        raise ConfigError(f"DISCORD_TOKEN is not set: put DISCORD_TOKEN=... in .env ({TOKEN_HELP})")
    token = raw.strip().strip("'\"").strip()
    if token.lower().startswith("bot "):
        raise ConfigError("DISCORD_TOKEN must be the bare token, without the 'Bot ' prefix")
    if not _TOKEN_RE.match(token):
        raise ConfigError(
            f"DISCORD_TOKEN does not look like a bot token (expected three dot-separated parts, "
            f"got {len(token)} characters); {TOKEN_HELP}"
        )
    return Secret(token)


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    return env_number(env, name, default, int, ConfigError)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return env_number(env, name, default, float, ConfigError)


def _ids(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = (env.get(name) or "").replace(" ", "")
    ids = set()
    for part in filter(None, raw.split(",")):
        if not part.isdigit():
            raise ConfigError(f"{name} must be comma-separated Discord user IDs (digits), got {part!r}")
        ids.add(int(part))
    return frozenset(ids)


def _loopback_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """A test-only endpoint override; refused unless it is on this machine, so the token stays here."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {raw!r}")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"{name} may only point at this machine (127.0.0.1/localhost), for testing; got {raw!r}")
    return raw.rstrip("/")


def _corpora(env: Mapping[str, str]) -> tuple[str, ...]:
    from corpora.registry import CORPORA

    raw = (env.get("CHARBOT_CORPORA") or "").replace(" ", "")
    names = tuple(filter(None, raw.split(","))) or tuple(CORPORA)
    unknown = [n for n in names if n not in CORPORA]
    if unknown:
        raise ConfigError(f"CHARBOT_CORPORA: unknown corpus {', '.join(unknown)} (known: {', '.join(CORPORA)})")
    return names


def _precision(env: Mapping[str, str]) -> str:
    """CHARBOT_PRECISION: auto (measured at load, the default), fp32, bf16 or int8.

    The list is the engine's own, imported here (as :func:`_corpora` imports the registry) so that
    importing this module stays light.
    """
    raw = (env.get("CHARBOT_PRECISION") or "").strip().lower()
    if not raw:
        return "auto"
    from model.device import GENERATION_PRECISIONS

    if raw not in GENERATION_PRECISIONS:
        raise ConfigError(f"CHARBOT_PRECISION must be {', '.join(GENERATION_PRECISIONS[:-1])} or "
                          f"{GENERATION_PRECISIONS[-1]}, got {raw!r}")
    return raw


def parse_shards(count: str | None, ids: str | None, where: str = "CHARBOT_SHARD_COUNT/CHARBOT_SHARD_IDS") -> tuple[
    int | str | None, tuple[int, ...] | None
]:
    """``(shard_count, shard_ids)`` from their text forms ("4" or "auto"; "0,1"), checked together.

    Shard ids without a number of shards cannot be placed (Discord routes a guild to shard
    ``(guild_id >> 22) % count``, so every process of a cluster must use the same count).
    """
    raw = (count or "").strip().lower()
    shard_count: int | str | None
    if not raw:
        shard_count = None
    elif raw == "auto":
        shard_count = "auto"
    elif raw.isdigit() and int(raw) >= 1:
        shard_count = int(raw)
    else:
        raise ConfigError(f"{where}: the shard count must be a whole number of at least 1, or auto; got {count!r}")
    raw_ids = (ids or "").replace(" ", "")
    if not raw_ids:
        return shard_count, None
    parts = raw_ids.split(",")
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{where}: shard ids must be comma-separated numbers like 0,1; got {ids!r}")
    shard_ids = tuple(sorted({int(p) for p in parts}))
    if not isinstance(shard_count, int):
        raise ConfigError(f"{where}: shard ids need a shard count that is a number (the same in every process)")
    if shard_ids[-1] >= shard_count:
        raise ConfigError(f"{where}: shard ids run from 0 to {shard_count - 1} with {shard_count} shards; "
                          f"got {shard_ids[-1]}")
    return shard_count, shard_ids


def load_config(
    env_file: str | os.PathLike | None = ".env",
    environ: Mapping[str, str] | None = None,
    require_token: bool = True,
) -> BotConfig:
    """Read settings from ``env_file`` (if it exists) overlaid with ``environ`` (default os.environ)."""
    env = read_env(env_file, environ)
    token = check_token(env.get("DISCORD_TOKEN")) if require_token else None
    limits = Limits(
        max_prompt_chars=_int(env, "CHARBOT_MAX_PROMPT", Limits.max_prompt_chars),
        default_length=_int(env, "CHARBOT_DEFAULT_LENGTH", Limits.default_length),
        max_length=_int(env, "CHARBOT_MAX_LENGTH", Limits.max_length),
        max_contribution_chars=_int(env, "CHARBOT_MAX_CONTRIBUTION", Limits.max_contribution_chars),
        cooldown_s=_float(env, "CHARBOT_COOLDOWN", Limits.cooldown_s),
        max_pending=_int(env, "CHARBOT_MAX_PENDING", Limits.max_pending),
        edit_interval_s=_float(env, "CHARBOT_EDIT_INTERVAL", Limits.edit_interval_s),
        shutdown_grace_s=_float(env, "CHARBOT_SHUTDOWN_GRACE", Limits.shutdown_grace_s),
        max_per_channel=_int(env, "CHARBOT_MAX_PER_CHANNEL", Limits.max_per_channel),
        chain_chars=_int(env, "CHARBOT_CHAIN_CHARS", Limits.chain_chars),
        chain_messages=_int(env, "CHARBOT_CHAIN_MESSAGES", Limits.chain_messages),
        button_hours=_float(env, "CHARBOT_BUTTON_HOURS", Limits.button_hours),
    )
    level = (env.get("CHARBOT_LOG_LEVEL") or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"CHARBOT_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    precision = _precision(env)
    database = _database(env)
    shard_count, shard_ids = parse_shards(env.get("CHARBOT_SHARD_COUNT"), env.get("CHARBOT_SHARD_IDS"))
    metrics_port = _int(env, "CHARBOT_METRICS_PORT", None)
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise ConfigError(f"CHARBOT_METRICS_PORT must be a TCP port from 1 to 65535, got {metrics_port}")
    return BotConfig(
        token=token,
        database=database,
        dev_guild_id=_int(env, "CHARBOT_DEV_GUILD", None),
        admin_ids=_ids(env, "CHARBOT_ADMINS"),
        device=(env.get("CHARBOT_DEVICE") or "auto").strip(),
        precision=precision,
        state_dir=state_dir(env, database) if (env.get("CHARBOT_STATE_DIR") or "").strip() else None,
        checkpoint_dir=shipped_dir(env),
        corpora=_corpora(env),
        limits=limits,
        discord_api=_loopback_url(env, "CHARBOT_DISCORD_API", ("http", "https")),
        discord_gateway=_loopback_url(env, "CHARBOT_DISCORD_GATEWAY", ("ws", "wss")),
        log_level=level,
        shard_count=shard_count,
        shard_ids=shard_ids,
        metrics_port=metrics_port,
        metrics_host=(env.get("CHARBOT_METRICS_HOST") or "127.0.0.1").strip(),
    )


class RedactingFormatter(logging.Formatter):
    """A log formatter that replaces the secrets it knows with ``[redacted]`` in every line."""

    def __init__(self, fmt: str, secrets: list[Secret]) -> None:
        super().__init__(fmt)
        self._values = [s.reveal() for s in secrets if s and s.reveal()]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for value in self._values:
            text = text.replace(value, "[redacted]")
        return text


def setup_logging(config: BotConfig, stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or ``stream``) at the configured level, with the token redacted."""
    handler = logging.StreamHandler(stream)
    secrets = [config.token] if config.token else []
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(config.log_level)
    logging.getLogger("discord.http").setLevel(max(logging.INFO, root.level))
    return handler
