"""/temp, /model and /help: per-person settings and what the bot runs."""

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import answers
from bot.discord_app.interactions import defer, may_manage_server, send, send_answer


class General(commands.Cog):
    """Commands for everyone that are not about one corpus."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="temp", description="Show or set your default temperature in this server")
    @app_commands.describe(value="0 = predictable ... 2 = wild; leave out to see yours",
                           reset="forget your default (each corpus uses its own)")
    @app_commands.guild_only()
    async def temp(self, interaction: discord.Interaction, value: float | None = None, reset: bool = False) -> None:
        await defer(interaction)  # before the database: another program may hold it past Discord's 3 s
        answer = await answers.temp(self.bot.store, interaction.guild_id, interaction.user.id, value, reset)
        await send_answer(interaction, answer)

    @app_commands.command(name="model", description="Which model each corpus runs, and how good it is")
    @app_commands.guild_only()
    async def model(self, interaction: discord.Interaction) -> None:
        await defer(interaction)  # the version list is read from the database
        text = answers.model_text(self.bot.models.info)
        finetune = self.bot.get_cog("Finetune")  # bot.discord_app.cogs.finetune: checkpoint versions, when loaded
        if finetune is not None and (versions := await finetune.versions_text()):
            text += "\n" + versions
        await send(interaction, text)  # send() fits it to Discord's limit, with an ellipsis

    @app_commands.command(name="help", description="What I can do")
    async def help(self, interaction: discord.Interaction) -> None:
        personas = getattr(self.bot, "personas", None)  # bot.personas.service.PersonaService, when on
        bounds = personas.settings.lines() if personas is not None and self.admin_here(interaction) else ()
        text = answers.help_text(persona_bounds=bounds)
        conversation = self.bot.get_cog("Conversation")  # bot.discord_app.cogs.conversation: this channel's persona
        if conversation is not None and self.bot.store is not None:
            await defer(interaction)  # the channel's settings are read from the database
            text = await conversation.describe_here(interaction.guild_id, interaction.channel_id) + "\n\n" + text
        await send(interaction, text)


    def admin_here(self, interaction: discord.Interaction) -> bool:
        """Whether the person may use the admin commands here (the same rule :func:`is_admin` checks)."""
        return interaction.guild_id is not None and answers.may_administer(
            interaction.user.id, may_manage_server(interaction.permissions), self.bot.config.admin_ids)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(General(bot))
