"""/listen and /unlisten (admins only), and storing what people write in listening channels."""

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import answers, collect
from bot.core.heard import Heard
from bot.discord_app.cogs.contributions import CORPUS_CHOICES
from bot.discord_app.interactions import defer, is_admin, send_answer
from bot.store import DatabaseLocked

log = logging.getLogger(__name__)


class Listening(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="listen", description="(Admins) Store messages people write here for a corpus")
    @app_commands.describe(corpus="which model the messages will teach")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.check(is_admin)
    async def listen(self, interaction: discord.Interaction, corpus: app_commands.Choice[str]) -> None:
        await defer(interaction, ephemeral=False)  # the answer announces it to the channel
        answer = await answers.listen(self.bot.store, interaction.guild_id, interaction.channel_id, corpus.value)
        await send_answer(interaction, answer)

    @app_commands.command(name="unlisten", description="(Admins) Stop storing messages in this channel")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.check(is_admin)
    async def unlisten(self, interaction: discord.Interaction) -> None:
        await defer(interaction, ephemeral=False)
        answer = await answers.unlisten(self.bot.store, interaction.guild_id, interaction.channel_id)
        await send_answer(interaction, answer)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        incoming = Heard(
            guild_id=message.guild.id if message.guild else None,
            channel_id=message.channel.id,
            author_id=message.author.id,
            content=message.content,
            author_is_bot=message.author.bot,
            is_webhook=message.webhook_id is not None,
            is_system=message.is_system(),
        )
        try:
            cid = await collect.collect(self.bot.store, incoming, self.bot.config.limits)
        except DatabaseLocked as exc:
            log.warning("message %s from a listening channel was not stored: %s", message.id, exc)
            return
        except Exception:
            log.exception("could not store message %s from a listening channel", message.id)
            return
        if cid is not None:
            log.debug("stored message %s as contribution #%s", message.id, cid)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Listening(bot))
