"""The bot: loads the models, opens the database, registers the cogs, and shuts down cleanly.

Intents: ``guilds`` (to know the servers and channels), ``guild_messages`` and the privileged
``message_content`` (so /listen can read what people write in listening channels; without
it Discord sends empty message text). Slash commands need no intent.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time

import discord
import torch
from discord import app_commands
from discord.ext import commands

from bot.config import BotConfig
from bot.engines import Models
from bot.errors import Refusal
from bot.interactions import send, send_unexpected
from bot.replies import ReplyService
from bot.store import DatabaseLocked, Store, StoreError
from model import __version__

log = logging.getLogger(__name__)

# The cogs, by module name (each has ``async def setup(bot)``), in the order their commands are registered.
# Loaded by name, so this module imports no cog and no cog needs to import it (they type the bot as commands.Bot).
EXTENSIONS = (
    "bot.cogs.generate",
    "bot.cogs.general",
    "bot.cogs.contributions",
    "bot.cogs.listening",
    "bot.cogs.finetune",
)


def bot_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


class CharTree(app_commands.CommandTree):
    """Every command error ends in a private, friendly answer; unexpected ones are logged in full."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        try:
            if isinstance(original, Refusal):
                await send(interaction, original.message)
            elif isinstance(error, app_commands.NoPrivateMessage):
                await send(interaction, "That command works in servers only.")
            elif isinstance(error, app_commands.CheckFailure):
                await send(interaction, str(error) or "You can't use that command here.")
            elif isinstance(original, DatabaseLocked):
                log.error("%s", original)
                await send(interaction, "My database is busy right now; try again in a moment.")
            elif isinstance(original, StoreError):
                log.error("%s", original)
                await send_unexpected(interaction)
            else:
                command = interaction.command.qualified_name if interaction.command else "?"
                log.error("/%s failed", command, exc_info=original)
                await send_unexpected(interaction)
        except discord.HTTPException:
            log.warning("could not tell the user about an error in interaction %s", interaction.id, exc_info=True)


class CharBot(commands.Bot):
    """The charbot persona on Discord."""

    def __init__(self, config: BotConfig, models: Models | None = None, serve: bool = True) -> None:
        """``models`` may be given preloaded (tests); ``serve=False`` only builds the commands (for sync)."""
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=CharTree,
        )
        self.config = config
        self.models = models
        self.serve = serve
        self.store: Store | None = None
        self.replies: ReplyService | None = None
        self._owns_models = models is None
        self._closing: asyncio.Task | None = None

    async def setup_hook(self) -> None:
        if self.serve:
            self.store = await Store.open(self.config.database)
            if self.models is None:
                t0 = time.perf_counter()
                self.models = await asyncio.to_thread(
                    Models.load, self.config.corpora, self.config.checkpoint_dir, self.config.device,
                    precision=self.config.precision,
                )
                log.info("models loaded in %.1f s", time.perf_counter() - t0)
            self.replies = ReplyService(self.models, self.config.limits)
            device = next(iter(self.models.info.values())).device if self.models.info else "none"
            log.info("charbot %s, Python %s, torch %s, discord.py %s; serving %s on %s; database %s", __version__,
                     platform.python_version(), torch.__version__, discord.__version__,
                     ", ".join(self.models.engines), device, self.config.database)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.serve and self.config.dev_guild_id:
            guild = discord.Object(self.config.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to the development server %s", len(synced), self.config.dev_guild_id)

    async def on_ready(self) -> None:
        log.info("connected as %s (id %s) to %d servers", self.user, self.user.id if self.user else "?",
                 len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        """No text commands: messages only matter to the listening cog's listener."""

    async def close(self) -> None:
        """Finish (or cut, after the grace period) running replies, then disconnect, stop engines, close the DB."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()  # discord.py's own exit waits only for the disconnect, not for our clean-up

    async def _shutdown(self) -> None:
        log.info("shutting down")
        if self.replies is not None:
            await self.replies.drain(self.config.limits.shutdown_grace_s)
        await super().close()
        if self.models is not None and self._owns_models:
            await asyncio.to_thread(self.models.close, False)
        if self.store is not None:
            await self.store.close()
        log.info("stopped")
