"""Answering a Discord interaction: the sends every cog and the client's error handler share.

Every message goes out with ``AllowedMentions.none()`` passed explicitly (the bot's default is
the same), so nothing the bot posts can ping anyone, whatever the text says, and is cleaned
(:func:`bot.core.sanitise.clean_text`: no control characters, direction overrides or broken
surrogates) and held to Discord's length limit first. Person-given text inside an answer is
quoted with :func:`bot.core.sanitise.quote`; the bot's own mentions (who started a fine-tune) stay
readable as names. Commands that touch the
database :func:`defer` before their first query: Discord drops an interaction not answered
within 3 s, and a database another program holds may take longer than that; the answer then
fills in the deferred response. This lives outside ``bot.discord_app.cogs`` so that the client, which loads
the cogs by name, never imports that package.
"""

import logging

import discord
from discord import app_commands

from bot.core import answers
from bot.core.answers import Answer
from bot.core.refusals import UNEXPECTED
from bot.core.sanitise import clean_text
from bot.discord_limits import MESSAGE_CHARS

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
_DEFERRED = "charbot_deferred_ephemeral"  # in Interaction.extras: how the response was deferred
_FILLED = "charbot_deferred_filled"


def postable(text: str) -> str:
    """``text`` as it may be posted: cleaned, never empty, within Discord's message limit."""
    text = clean_text(text)[0] or "\u2026"
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "\u2026"


async def defer(interaction: discord.Interaction, ephemeral: bool = True) -> None:
    """Acknowledge now ("thinking..."), answer later with :func:`send`; ``ephemeral`` as the answer will be."""
    if interaction.response.is_done():
        return
    await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    interaction.extras[_DEFERRED] = ephemeral


async def send(interaction: discord.Interaction, text: str, ephemeral: bool = True) -> None:
    """Answer the interaction, fill in its deferred response, or follow up if it was already answered.

    A deferred response keeps the visibility it was deferred with, so an answer that must be
    seen differently (a private error after a public deferral) replaces it: the "thinking"
    message is deleted and the answer follows up on its own.
    """
    text = postable(text)
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
        return
    deferred = interaction.extras.get(_DEFERRED)
    if deferred is not None and not interaction.extras.get(_FILLED):
        interaction.extras[_FILLED] = True
        if deferred != ephemeral:
            await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)


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


def may_manage_server(permissions: discord.Permissions | None) -> bool:
    """Manage Server, or Administrator, which Discord treats as every permission."""
    return bool(permissions and (permissions.administrator or permissions.manage_guild))


async def is_admin(interaction: discord.Interaction) -> bool:
    """The bot's own half of the admin check (Discord's default permissions are the other half)."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    has_manage_guild = may_manage_server(interaction.permissions)
    if answers.may_administer(interaction.user.id, has_manage_guild, interaction.client.config.admin_ids):
        return True
    raise NotAdmin("Only server admins (Manage Server permission) can do that.")
