"""Small helpers the sub-commands share: errors, JSON output, texts by name or path, the bot's models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.device import GENERATION_PRECISIONS

if TYPE_CHECKING:
    from bot.config import BotConfig, Limits
    from bot.core.engines import Models
    from bot.core.replies import ReplyService
    from bot.jobs.manager import FinetuneManager
    from bot.jobs.settings import FinetuneSettings
    from bot.personas.service import PersonaService
    from bot.store import Store
    from model.textdata import TextData


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback."""


class Parser(argparse.ArgumentParser):
    """charbot's parsers. One with ``intermixed`` set takes options between optional positionals
    (``charbot reply tale --seed 3 words``), which argparse's one-pass matching refuses: it gives
    every optional positional its value, or none, at the first run of words."""

    intermixed = False
    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed or self._mixing:
            return super().parse_known_args(args, namespace)
        self._mixing = True  # parse_known_intermixed_args calls this method twice itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


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
    models = Models.load(config.corpora if corpora is None else corpora, checkpoints,
                         device=args.device or config.device, precision=args.precision or config.precision,
                         precision_cache=config.precision_cache)
    return config, models


def add_database_flags(p: argparse.ArgumentParser, state: bool = True) -> None:
    """``--db`` (and ``--state-dir``): the bot's own database and versions, for the commands that share them."""
    p.add_argument("--db", help="database file or postgresql:// URL (default: CHARBOT_DB from .env, else charbot.db)")
    if state:
        p.add_argument("--state-dir", help="where versions live (default: CHARBOT_STATE_DIR, else charbot-state/ "
                       "beside the database)")


def job_settings(args: argparse.Namespace, writes_versions: bool = True) -> tuple[Path | str, FinetuneSettings, Path]:
    """The bot's database, fine-tuning settings and checkpoints folder, found as the bot finds them
    (``--db``, ``--state-dir``, ``--checkpoints`` and ``--env-file`` win), so a command works on the
    very database and versions the bot serves from. A SQLite file must exist: a mistyped path would
    otherwise start an empty database the bot never reads. With PostgreSQL, a command that writes
    versions (``writes_versions``) needs the state folder every bot machine reads."""
    from dataclasses import replace

    from bot.config import is_postgres_url, load_config, read_env
    from bot.jobs.settings import load_settings

    config = load_config(args.env_file, require_token=False)
    db = args.db or config.database
    state_dir = getattr(args, "state_dir", None)
    if not is_postgres_url(db):  # a SQLite file must exist; a server is checked when the store opens
        db = Path(db).expanduser()
        if not db.is_file():
            raise UserError(f"{db}: no such database (give the bot's database with --db)")
    elif writes_versions and not (state_dir or read_env(args.env_file).get("CHARBOT_STATE_DIR")):
        raise UserError("with a PostgreSQL database the versions live on storage every machine reads: "
                        "give --state-dir or set CHARBOT_STATE_DIR (the bots' own)")
    settings = load_settings(db, args.env_file)
    if state_dir:
        settings = replace(settings, state_dir=Path(state_dir).expanduser())
    checkpoints = Path(args.checkpoints).expanduser() if getattr(args, "checkpoints", None) else config.checkpoint_dir
    return db, settings, checkpoints


def local_manager(args: argparse.Namespace, config: BotConfig, store: Store, database: Path | str) -> FinetuneManager:
    """The bot's fine-tuning manager over ``database`` and its versions, for a command that reads them (which
    version a persona serves) or scrubs them (/forget in ``charbot chat``); it starts no job of the queue's."""
    from bot.core.engines import base_checkpoint
    from bot.jobs.manager import FinetuneManager
    from bot.jobs.settings import load_settings
    from bot.store.jobs import FinetuneStore

    checkpoints = Path(args.checkpoints).expanduser() if args.checkpoints else config.checkpoint_dir
    settings = load_settings(database, args.env_file)  # the state folder is the bot's (CHARBOT_STATE_DIR or beside)
    return FinetuneManager(FinetuneStore(store), settings, lambda corpus: base_checkpoint(corpus, checkpoints),
                           serves_queue=False)


async def persona_replies(args: argparse.Namespace, config: BotConfig, store: Store, models: Models, limits: Limits,
                          database: Path | str) -> tuple[ReplyService, PersonaService]:
    """A ReplyService set up for personas as the bot's is: every stored persona registered, each one's
    checkpoint found by the persona service (:meth:`~bot.personas.service.PersonaService.locate`), the
    verbatim-copy guard over the stored texts; so ``charbot reply --persona`` and ``charbot chat
    --server`` print what /say would post."""
    from bot.core.replies import ReplyService
    from bot.core.verbatim import VerbatimGuard
    from bot.personas.service import PersonaService
    from bot.personas.settings import load_persona_settings

    manager = local_manager(args, config, store, database)
    persona_settings = load_persona_settings(args.env_file)
    models.max_personas = persona_settings.max_loaded
    personas = PersonaService(store, manager, persona_settings, models)
    await personas.register_all()
    guard = VerbatimGuard()
    await guard.sync(store)
    service = ReplyService(models, limits, guard=guard)
    service.locate = personas.locate
    return service, personas
