"""Running the bot until SIGTERM/Ctrl-C, and the one-off global command sync.

Login problems a person can fix (a rejected token, the Message Content intent not enabled)
become one-line :class:`BotStartError` messages instead of tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import discord

from bot.config import BotConfig, ConfigError
from bot.core.engines import Models
from bot.discord_app.client import CharBot, new_bot
from bot.discord_app.endpoints import discord_endpoints

log = logging.getLogger(__name__)

PORTAL = "https://discord.com/developers/applications"


class BotStartError(Exception):
    """The bot could not connect for a reason the person running it can fix."""


def _token(config: BotConfig) -> str:
    if config.token is None:
        raise ConfigError("DISCORD_TOKEN is not set")
    return config.token.reveal()


async def serve(config: BotConfig, models: Models | None = None) -> None:
    """Run the bot until it is closed (SIGTERM and SIGINT close it cleanly)."""
    token = _token(config)
    with discord_endpoints(config.discord_api, config.discord_gateway):
        bot = new_bot(config, models)
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, lambda s=sig: (log.info("got %s", s.name), loop.create_task(bot.close())))
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
        try:
            async with bot:
                await bot.start(token)
        except discord.LoginFailure:
            raise BotStartError(f"Discord rejected DISCORD_TOKEN; reset it in {PORTAL} > your app > Bot") from None
        except discord.PrivilegedIntentsRequired:
            raise BotStartError(
                f"Discord refused the Message Content intent; turn it on in {PORTAL} > your app > Bot > "
                "Privileged Gateway Intents (/listen needs it to read messages)"
            ) from None
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)


async def sync_commands(config: BotConfig, guild_id: int | None = None) -> list[str]:
    """Publish the slash commands globally (or to one server) and return their names."""
    token = _token(config)
    with discord_endpoints(config.discord_api, config.discord_gateway):
        bot = CharBot(config, serve=False)
        try:
            async with bot:
                await bot.login(token)
                guild = discord.Object(guild_id) if guild_id else None
                if guild is not None:
                    bot.tree.copy_global_to(guild=guild)
                synced = await bot.tree.sync(guild=guild)
        except discord.LoginFailure:
            raise BotStartError(f"Discord rejected DISCORD_TOKEN; reset it in {PORTAL} > your app > Bot") from None
    return [c.name for c in synced]
