"""/contribute (a modal for up to 4000 characters), /forget and /optout."""

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import actions
from bot.errors import Refusal
from bot.interactions import send, send_answer, send_unexpected
from corpora.registry import CORPORA

log = logging.getLogger(__name__)

CORPUS_CHOICES = [app_commands.Choice(name=name, value=name) for name in CORPORA]
MODAL_MAX = 4000  # Discord's limit for one text input


class ContributionModal(discord.ui.Modal):
    """A text box for a contribution; saved (and acknowledged) only once it is on disk."""

    def __init__(self, bot: commands.Bot, corpus: str) -> None:
        super().__init__(title=f"Teach the {corpus} model"[:45], timeout=900)
        self.bot = bot
        self.corpus = corpus
        self.text = discord.ui.TextInput(
            label="Your text", style=discord.TextStyle.paragraph, min_length=1,
            max_length=min(MODAL_MAX, bot.config.limits.max_contribution_chars),
            placeholder=CORPORA[corpus].description[:100],
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        answer = await actions.contribute(
            self.bot.store, interaction.guild_id, interaction.channel_id, interaction.user.id, self.corpus,
            self.text.value, "modal", self.bot.config.limits,
        )
        await send_answer(interaction, answer)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        if isinstance(error, Refusal):
            await send(interaction, error.message)
            return
        log.error("saving a contribution failed", exc_info=error)
        await send_unexpected(interaction)


class Contributions(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="contribute", description="Offer a text to teach one of the models")
    @app_commands.describe(corpus="which model your text is for")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.guild_only()
    async def contribute(self, interaction: discord.Interaction, corpus: app_commands.Choice[str]) -> None:
        await interaction.response.send_modal(ContributionModal(self.bot, corpus.value))

    @app_commands.command(name="forget", description="Delete everything you contributed in this server")
    @app_commands.guild_only()
    async def forget(self, interaction: discord.Interaction) -> None:
        await send_answer(interaction, await actions.forget(self.bot.store, interaction.guild_id, interaction.user.id))

    @app_commands.command(name="optout", description="Stop your messages in listening channels from being stored")
    @app_commands.describe(undo="opt back in")
    @app_commands.guild_only()
    async def optout(self, interaction: discord.Interaction, undo: bool = False) -> None:
        answer = await actions.optout(self.bot.store, interaction.guild_id, interaction.user.id, undo)
        await send_answer(interaction, answer)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Contributions(bot))
