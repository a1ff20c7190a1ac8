"""Answering a Discord interaction: the sends every cog and the client's error handler share.

Every message goes out with ``AllowedMentions.none()`` passed explicitly (the bot's default is
the same), so nothing the bot posts can ping anyone, whatever the text says. This lives outside
``bot.cogs`` so that the client, which loads the cogs by name, never imports that package.
"""

import logging

import discord
from discord import app_commands

from bot import actions
from bot.actions import Answer
from bot.errors import UNEXPECTED

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


async def send(interaction: discord.Interaction, text: str, ephemeral: bool = True) -> None:
    """Answer the interaction, or follow up if it was already answered (e.g. deferred)."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)


async def send_answer(interaction: discord.Interaction, answer: Answer) -> None:
    await send(interaction, answer.text, answer.ephemeral)


async def send_unexpected(interaction: discord.Interaction) -> None:
    """Tell the person something failed; never raises (the failure is already being logged)."""
    try:
        await send(interaction, UNEXPECTED)
    except discord.HTTPException:
        log.warning("could not tell the user about an error (interaction %s)", interaction.id)


class NotAdmin(app_commands.CheckFailure):
    """Raised by the admin check; its message is shown to the person."""


async def is_admin(interaction: discord.Interaction) -> bool:
    """The bot's own half of the admin check (Discord's default permissions are the other half)."""
    has_manage_guild = bool(interaction.permissions and interaction.permissions.manage_guild)
    if actions.may_administer(interaction.user.id, has_manage_guild, interaction.client.config.admin_ids):
        return True
    raise NotAdmin("Only server admins (Manage Server permission) can do that.")
