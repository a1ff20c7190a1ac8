"""Thin discord.py cogs: each turns an interaction into a call to the plain modules and sends the answer.

Every message goes out with ``AllowedMentions.none()`` passed explicitly (the bot's default is
the same), so nothing the bot posts can ping anyone, whatever the text says.
"""

import logging

import discord

from charbot.bot.actions import Answer
from charbot.bot.errors import UNEXPECTED

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
