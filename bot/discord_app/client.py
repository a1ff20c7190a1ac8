"""The bot: loads the models, opens the database, registers the cogs, and shuts down cleanly.

Intents: ``guilds`` (to know the servers and channels), ``guild_messages`` and
``dm_messages`` (mentions, replies to the bot and direct messages: Discord sends the text of
those even without the next one), and the privileged ``message_content``, which /listen and
chiming in need to read ordinary messages. Slash commands need no intent.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from pathlib import Path

import discord
import torch
from discord import app_commands
from discord.ext import commands

from bot.config import BotConfig, loggable
from bot.core.answers import SERVERS_ONLY
from bot.core.engines import Models, base_checkpoint
from bot.core.refusals import DATABASE_BUSY, UNEXPECTED, Refusal
from bot.core.replies import ReplyService
from bot.core.verbatim import VerbatimGuard
from bot.discord_app.following import JobFollower
from bot.discord_app.interactions import send
from bot.discord_app.metrics import BotMetrics
from bot.discord_app.options import STALE, BadOption, check_options
from bot.jobs.manager import FinetuneManager
from bot.jobs.settings import SettingsError, load_settings
from bot.personas.service import PersonaService
from bot.personas.settings import PersonaSettingsError, load_persona_settings
from bot.store import DatabaseLocked, Store, StoreError, open_store
from bot.store.jobs import FinetuneStore
from corpora.voices import parse_key
from model import __version__

log = logging.getLogger(__name__)

# The cogs, by module name (each has ``async def setup(bot)``), in the order their commands are registered.
# Loaded by name, so this module imports no cog and no cog needs to import it (they type the bot as commands.Bot).
GUARD_SYNC_S = 5.0  # how soon the verbatim-copy guard knows a new contribution

EXTENSIONS = (
    "bot.discord_app.cogs.generate",
    "bot.discord_app.cogs.general",
    "bot.discord_app.cogs.contributions",
    "bot.discord_app.cogs.listening",
    "bot.discord_app.cogs.finetune",
    "bot.discord_app.cogs.personas",
    "bot.discord_app.cogs.conversation",
)


def bot_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


class CharTree(app_commands.CommandTree):
    """Every interaction is checked before any command runs, and every error ends in one private answer.

    Before a command: an unknown command or subcommand, a guild-only command from a direct
    message and options that do not fit their declaration (:mod:`bot.discord_app.options`) are turned
    down. Afterwards, whatever a command raised, discord.py's own conversion errors included,
    the person gets one clear message (never the raw value they sent) and the log one line;
    only unexpected errors are logged with their traceback.
    """

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.type is not discord.InteractionType.application_command:
            return True
        data = interaction.data or {}
        if data.get("type", 1) != 1:
            return True  # a message menu ("Continue this") has no options to check
        try:
            command, options = self._get_app_command_options(data)
        except app_commands.AppCommandError:
            raise
        except Exception:  # a payload discord.py cannot even walk (options that are not a list of objects...)
            raise BadOption(STALE) from None
        root = command.root_parent or command
        if interaction.guild_id is None and (command.guild_only or root.guild_only):
            raise app_commands.NoPrivateMessage()
        check_options(command, options)
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        name = _command_name(interaction)
        if isinstance(original, Refusal):
            log.info("/%s refused: %s", name, original.message)
            text = original.message
        elif isinstance(error, BadOption):
            log.info("/%s refused: bad option: %s", name, error.message)
            text = error.message
        elif isinstance(error, app_commands.NoPrivateMessage):
            log.info("/%s refused: sent from a direct message", name)
            text = SERVERS_ONLY
        elif isinstance(error, app_commands.CheckFailure):
            log.info("/%s refused: %s", name, error)
            text = str(error) or "You can't use that command here."
        elif isinstance(error, app_commands.TransformerError):
            log.info("/%s refused: an option did not convert (%s)", name, error.type.name)
            text = "One of the options was not valid; check them and try again."
        elif isinstance(error, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
            log.warning("/%s: not a command this bot has in that form (%s)", name, type(error).__name__)
            text = STALE
        elif isinstance(original, DatabaseLocked):
            log.warning("/%s: %s", name, original)
            text = DATABASE_BUSY
        elif isinstance(original, StoreError):
            log.error("/%s: %s", name, original)
            text = UNEXPECTED
        else:
            log.error("/%s failed", name, exc_info=original)
            text = UNEXPECTED
        try:
            await send(interaction, text)
        except Exception:  # the person is gone, or the interaction expired: nothing more to do
            log.warning("could not tell the user about an error in interaction %s", interaction.id, exc_info=True)


def _command_name(interaction: discord.Interaction) -> str:
    """The command as typed, from the payload (``interaction.command`` may be unknown to this bot)."""
    data = interaction.data if isinstance(interaction.data, dict) else {}
    parts = [str(data.get("name") or data.get("custom_id") or "?")]
    options = data.get("options")
    while isinstance(options, list) and options and isinstance(options[0], dict) and options[0].get("type") in (1, 2):
        parts.append(str(options[0].get("name")))
        options = options[0].get("options")
    return " ".join(parts)[:100]


class CharBot(commands.Bot):
    """The charbot persona on Discord.

    Besides the models, the database and the reply service, the bot owns what several cogs share:
    the fine-tuning manager (``finetune``: /finetune's jobs and the personas' trainings run through
    the one manager, so one bound on running jobs and one queue hold for both), the persona service
    (``personas``) and the follower that reports jobs in their channels (``followers``). Each is None
    when it is switched off, with the reason in ``finetune_off`` / ``personas_off``; replies go on.
    """

    def __init__(self, config: BotConfig, models: Models | None = None, serve: bool = True) -> None:
        """``models`` may be given preloaded (tests); ``serve=False`` only builds the commands (for sync)."""
        shards = {}
        if isinstance(self, commands.AutoShardedBot):  # ShardedCharBot: None lets Discord recommend the count
            shards = {"shard_count": config.shard_count if isinstance(config.shard_count, int) else None,
                      "shard_ids": list(config.shard_ids) if config.shard_ids else None}
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=CharTree,
            **shards,
        )
        self.config = config
        self.models = models
        self.serve = serve
        self.store: Store | None = None
        self.replies: ReplyService | None = None
        self._owns_models = models is None
        self._closing: asyncio.Task | None = None
        self.metrics: BotMetrics | None = None
        self._guard_sync: asyncio.Task | None = None
        self.finetune: FinetuneManager | None = None
        self.finetune_off = "fine-tuning is not set up on this bot"
        self.personas: PersonaService | None = None
        self.personas_off = "personas are not set up on this bot"
        self.followers: JobFollower | None = None

    async def setup_hook(self) -> None:
        if self.serve:
            self.store = await open_store(self.config.database)
            if self.models is None:
                t0 = time.perf_counter()
                self.models = await asyncio.to_thread(
                    Models.load, self.config.corpora, self.config.checkpoint_dir, self.config.device,
                    precision=self.config.precision, precision_cache=self.config.precision_cache,
                )
                log.info("models loaded in %.1f s", time.perf_counter() - t0)
            guard = VerbatimGuard()
            await guard.sync(self.store)
            self.replies = ReplyService(self.models, self.config.limits, guard=guard)
            self._guard_sync = asyncio.create_task(self._sync_guard(guard), name="verbatim-guard-sync")
            await self._start_finetune()
            if self.config.metrics_port is not None:
                self.metrics = BotMetrics(self)
                self.metrics.watch(self.replies)
                await self.metrics.start(self.config.metrics_host, self.config.metrics_port)
            device = next(iter(self.models.info.values())).device if self.models.info else "none"
            log.info("charbot %s, Python %s, torch %s, discord.py %s; serving %s on %s; database %s", __version__,
                     platform.python_version(), torch.__version__, discord.__version__,
                     ", ".join(self.models.engines), device, loggable(self.config.database))
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.serve and self.config.dev_guild_id:
            guild = discord.Object(self.config.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to the development server %s", len(synced), self.config.dev_guild_id)

    async def _start_finetune(self) -> None:
        """The fine-tuning manager and the persona service; a bad setting switches them off with its
        reason (the commands say it), and the bot still serves replies."""
        try:
            settings = load_settings(self.config.database)
        except SettingsError as exc:
            self.finetune_off = f"fine-tuning is switched off on this bot: {exc}"
            self.personas_off = f"personas need fine-tuning, which is switched off on this bot: {exc}"
            log.error("%s", self.finetune_off)
            return
        manager = FinetuneManager(FinetuneStore(self.store), settings, self._base, self._serve)
        await manager.recover()
        await manager.restore_served(list(self.models.engines))
        self.finetune = manager
        self.followers = JobFollower(self, manager)
        manager.on_start = self.followers.started  # a job the queue starts later is reported like any other
        try:
            persona_settings = load_persona_settings()
        except PersonaSettingsError as exc:
            self.personas_off = f"personas are switched off on this bot: {exc}"
            log.error("%s", self.personas_off)
        else:
            self.personas = PersonaService(self.store, manager, persona_settings, self.models)
            self.models.max_personas = persona_settings.max_loaded
            self.replies.locate = self.personas.locate
            log.info("%d server personas registered", await self.personas.register_all())
        manager.follow_served()

    def _base(self, corpus: str) -> Path:
        return base_checkpoint(corpus, self.config.checkpoint_dir)

    async def _serve(self, corpus: str, path: Path, version: int) -> None:
        """Serve a new checkpoint of ``corpus``: new replies use it, running ones finish on the old one.

        A persona whose engine is not loaded now is left alone: it loads the served version on its
        next reply (:meth:`bot.core.replies.ReplyService.ready`)."""
        if parse_key(corpus) is None:
            await asyncio.to_thread(self.models.swap, corpus, path)
        elif corpus in self.models.engines:
            await asyncio.to_thread(self.models.load_persona, corpus, path)

    async def on_ready(self) -> None:
        shards = ""
        if self.shard_count is not None and isinstance(self, commands.AutoShardedBot):
            shards = f" on shards {','.join(map(str, sorted(self.shards)))} of {self.shard_count}"
        log.info("connected as %s (id %s) to %d servers%s", self.user, self.user.id if self.user else "?",
                 len(self.guilds), shards)

    async def on_shard_ready(self, shard_id: int) -> None:
        """One line per shard with its servers, so an operator sees which process owns which."""
        mine = sorted(g.id for g in self.guilds if g.shard_id == shard_id)
        log.info("shard %d of %s ready: %d servers (%s)", shard_id, self.shard_count, len(mine),
                 ", ".join(map(str, mine[:20])) + (", ..." if len(mine) > 20 else ""))

    async def on_message(self, message: discord.Message) -> None:
        """No text commands: messages matter only to the cogs' listeners (conversation, listening)."""

    async def close(self) -> None:
        """Finish (or cut, after the grace period) running replies, then disconnect, stop engines, close the DB."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()  # discord.py's own exit waits only for the disconnect, not for our clean-up

    async def _sync_guard(self, guard: VerbatimGuard) -> None:
        """Keep the verbatim-copy guard up to date with contributions (this process's and others')."""
        while True:
            await asyncio.sleep(GUARD_SYNC_S)
            try:
                if self.store is not None:
                    await guard.sync(self.store)
            except Exception as exc:  # a busy or unreachable database: try again next time
                log.warning("could not update the verbatim-copy guard: %s", exc)

    async def _shutdown(self) -> None:
        log.info("shutting down")
        if self._guard_sync is not None:
            self._guard_sync.cancel()
        if self.replies is not None:
            await self.replies.drain(self.config.limits.shutdown_grace_s)
        if self.finetune is not None:  # running jobs are cancelled; their followers may still say so
            await self.finetune.close(grace_s=self.config.limits.shutdown_grace_s)
        if self.followers is not None:
            await self.followers.close()
        await super().close()
        if self.models is not None and self._owns_models:
            await asyncio.to_thread(self.models.close, False)
        if self.store is not None:
            await self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()
        log.info("stopped")


class ShardedCharBot(CharBot, commands.AutoShardedBot):
    """The same bot over several gateway shards (``CHARBOT_SHARD_COUNT``), or some of them (``shard_ids``).

    discord.py's AutoShardedBot runs one gateway connection per shard in this process; Discord
    sends each server's events only to shard ``(guild_id >> 22) % shard_count``, so processes
    that own different shards of the same count never see, or answer, the same interaction.
    """


def new_bot(config: BotConfig, models: Models | None = None, serve: bool = True) -> CharBot:
    """A :class:`ShardedCharBot` when shards are configured, else the plain one-connection :class:`CharBot`."""
    return (ShardedCharBot if config.sharded else CharBot)(config, models, serve)
