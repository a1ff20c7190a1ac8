"""/persona create|list|info|retrain|delete: a server's own personas, trained from its admins' text (issue 24).

Thin: every check and every answer is :class:`bot.personas.service.PersonaService`'s (the bot's
``personas``); this cog only fetches the uploaded files. Each file's declared name and size are
checked first (:func:`bot.personas.uploads.check_declared`), so a file that is too big or not
text is never downloaded. The training is an ordinary fine-tuning job of the bot's manager,
reported in the channel by the bot's follower (:mod:`bot.discord_app.following`) like a
/finetune job: the manager's queue hands it every job it starts, at once or later (``on_start``);
/persona retrain's job goes the same way.

/persona create takes as many file options as ``CHARBOT_PERSONA_MAX_FILES`` says (up to
:data:`MAX_FILE_OPTIONS`: Discord allows 25 options per command), so its options are built when
the cog loads. (No ``from __future__ import annotations`` here: discord.py reads the option
types from the callbacks' annotations.)
"""

import inspect
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.refusals import Refusal
from bot.core.sanitise import quote
from bot.discord_app.choices import voice_choices
from bot.discord_app.interactions import defer, is_admin, send
from bot.personas.service import PersonaService
from bot.personas.settings import PersonaSettings, PersonaSettingsError, load_persona_settings
from bot.personas.uploads import File, check_count, check_declared
from corpora.voices import NAME_RULE, STYLE_HELP

log = logging.getLogger(__name__)

MAX_FILE_OPTIONS = 20  # Discord allows 25 options per command; name, style, minutes and force take four
STYLE_CHOICES = [app_commands.Choice(name=f"{style}: {about}"[:100], value=style)
                 for style, about in STYLE_HELP.items()]


def file_options(max_files: int) -> list[str]:
    """The names of create's file options: ``file``, then ``file2`` ... up to the configured number."""
    return ["file", *(f"file{i}" for i in range(2, min(max_files, MAX_FILE_OPTIONS) + 1))]


def configured_max_files(bot: commands.Bot) -> int:
    """How many files one upload may have: the running service's bound, else the settings' (``charbot sync``
    builds the commands without a service, and must publish the same options)."""
    service = getattr(bot, "personas", None)
    if service is not None:
        return service.settings.max_files
    try:
        return load_persona_settings().max_files
    except PersonaSettingsError:
        return PersonaSettings().max_files


class Personas(commands.Cog):
    """A server's own personas: admins create and delete them, everyone lists them (and talks with /say)."""

    persona = app_commands.Group(name="persona", description="This server's own personas, trained on its text",
                                 guild_only=True)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.persona.add_command(build_create(self, configured_max_files(bot)))

    def service(self) -> PersonaService:
        """The bot's persona service, or a Refusal saying why personas are off."""
        service = getattr(self.bot, "personas", None)
        if service is None:
            raise Refusal(f"Sorry, {getattr(self.bot, 'personas_off', 'personas are not set up on this bot')}.",
                          "unavailable")
        return service

    # ---- /persona create ------------------------------------------------------------------

    async def create(
        self, interaction: discord.Interaction, name: str, style: app_commands.Choice[str],
        files: list[discord.Attachment], minutes: float | None = None, force: bool = False,
    ) -> None:
        """Check the declared files, download them, and let the service create the persona and start its training."""
        service = self.service()
        await defer(interaction)  # downloading and storing the text takes longer than Discord waits
        check_count(len(files), service.settings)
        for attachment in files:  # before a single byte is downloaded
            check_declared(attachment.filename, attachment.size, service.settings)
        uploads = [File(attachment.filename, await self.download(attachment)) for attachment in files]
        created = await service.create(
            interaction.guild_id, name, style.value, uploads, interaction.user.id, interaction.channel_id,
            minutes=minutes, force=force, started_by=f"discord:{interaction.user.id}",
        )
        # No follower to start here: the job went through the manager's queue, which hands every job it
        # starts (this one now, or a queued one later) to the bot's follower (FinetuneManager.on_start).
        await send(interaction, created.message())

    @staticmethod
    async def download(attachment: discord.Attachment) -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException as exc:
            log.warning("could not download attachment %s: %s", attachment.id, exc)
            raise Refusal(f"I could not download {quote(attachment.filename)} from Discord; upload it again.",
                          "unavailable") from None

    # ---- /persona list, info, delete ------------------------------------------------------

    @persona.command(name="list", description="This server's personas and whether they are ready")
    async def list_(self, interaction: discord.Interaction) -> None:
        service = self.service()
        await defer(interaction)
        await send(interaction, await service.list_text(interaction.guild_id))

    @persona.command(name="info", description="One persona: its text, its training and its versions")
    @app_commands.describe(name="which persona (/persona list)")
    async def info(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        service = self.service()
        await defer(interaction)
        await send(interaction, await service.info_text(interaction.guild_id, name))

    @persona.command(name="retrain", description="(Admins) Train a persona again on the text it keeps")
    @app_commands.describe(
        name="which persona (/persona list)",
        minutes="training time budget (early stopping may end it sooner)",
        force="serve the result even if it is no better than the general base (default: no)",
    )
    @app_commands.check(is_admin)
    async def retrain(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100],
        minutes: app_commands.Range[float, 0.1, 600.0] | None = None, force: bool = False,
    ) -> None:
        """For a persona whose training was refused, cancelled or cut short: no upload, its stored text again.
        Reported in the channel like /persona create's training (the manager's queue hands the job to the follower)."""
        service = self.service()
        await defer(interaction)
        retrained = await service.retrain(interaction.guild_id, name, minutes=minutes, force=force,
                                          started_by=f"discord:{interaction.user.id}",
                                          channel_id=interaction.channel_id)
        await send(interaction, retrained.message())

    @persona.command(name="delete", description="(Admins) Delete a persona: its text, its models and its index")
    @app_commands.describe(name="which persona (/persona list)")
    @app_commands.check(is_admin)
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        service = self.service()
        await defer(interaction)  # a running training is stopped first, which takes a moment
        await send(interaction, await service.delete(interaction.guild_id, name))

    @info.autocomplete("name")
    @retrain.autocomplete("name")
    @delete.autocomplete("name")
    async def persona_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await voice_choices(self.bot, interaction.guild_id, current)


def build_create(cog: Personas, max_files: int) -> app_commands.Command:
    """/persona create name style file [file2 ...] [minutes] [force], admins only."""
    names = file_options(max_files)

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        files = [f for f in (options.pop(n, None) for n in names) if f is not None]
        await cog.create(interaction, files=files, **options)

    keyword = inspect.Parameter.KEYWORD_ONLY
    callback.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction),
        inspect.Parameter("name", keyword, annotation=app_commands.Range[str, 2, 32]),
        inspect.Parameter("style", keyword, annotation=app_commands.Choice[str]),
        inspect.Parameter("file", keyword, annotation=discord.Attachment),
        *(inspect.Parameter(n, keyword, annotation=discord.Attachment, default=None) for n in names[1:]),
        inspect.Parameter("minutes", keyword, annotation=app_commands.Range[float, 0.1, 600.0], default=None),
        inspect.Parameter("force", keyword, annotation=bool, default=False),
    ])
    callback = app_commands.describe(
        name=f"the persona's name: {NAME_RULE}"[:100],
        style="how it speaks",
        file="a .txt or .md file (UTF-8) with the text it learns from",
        **{n: "another .txt or .md file" for n in names[1:]},
        minutes="training time budget (early stopping may end it sooner)",
        force="serve the result even if it is no better than the general base (default: no)",
    )(callback)
    callback = app_commands.choices(style=STYLE_CHOICES)(callback)
    callback = app_commands.check(is_admin)(callback)
    return app_commands.Command(name="create", description="(Admins) Make a persona that speaks like your text",
                                callback=callback)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Personas(bot))
