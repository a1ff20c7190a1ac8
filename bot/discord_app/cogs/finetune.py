"""/finetune start|status|cancel and /rollback (admins): teach a model the contributed text, or undo it.

The job runs in its own niced process (see :mod:`bot.jobs.manager`); this cog only starts it
and hands it to the bot's follower (:mod:`bot.discord_app.following`), which keeps one status
message in the channel up to date and posts the result there. The manager is the bot's
(``bot.finetune``), shared with the persona cog.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.refusals import Refusal
from bot.discord_app.cogs.contributions import CORPUS_CHOICES
from bot.discord_app.interactions import defer, is_admin, send
from bot.jobs.manager import FinetuneManager, FinetuneRefused, Served
from bot.jobs.messages import seen_from, status_text, versions_text, who
from corpora.voices import parse_key

log = logging.getLogger(__name__)

MAX_MESSAGE = 1900


class Finetune(commands.Cog):
    """Fine-tuning jobs and checkpoint versions, for admins."""

    finetune = app_commands.Group(
        name="finetune", description="(Admins) Teach a model the text people contributed",
        guild_only=True, default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def manager(self) -> FinetuneManager | None:
        """The bot's fine-tuning manager (:class:`bot.discord_app.client.CharBot` makes it; personas share it)."""
        return getattr(self.bot, "finetune", None)

    def _manager(self) -> FinetuneManager:
        if self.manager is None:
            raise Refusal(f"Sorry, {getattr(self.bot, 'finetune_off', 'fine-tuning is not set up')}.", "unavailable")
        return self.manager

    def _corpus(self, corpus: str) -> str:
        if self.manager is None or corpus not in self.manager.serving:
            raise Refusal(f"This bot does not serve **{corpus}**.", "unavailable")
        return corpus

    # ---- /finetune ----------------------------------------------------------------------

    @finetune.command(name="start", description="(Admins) Fine-tune a corpus's model on its contributions")
    @app_commands.describe(corpus="which model learns", minutes="time budget (early stopping may end it sooner)",
                           force="serve the result even if it forgets the corpus or learns nothing (default: no)",
                           without_forgotten="take out texts deleted with /forget: retrain from the newest version "
                                             "that never saw them, or roll back to it (default: no)")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.check(is_admin)
    async def start(
        self, interaction: discord.Interaction, corpus: app_commands.Choice[str],
        minutes: app_commands.Range[float, 0.1, 600.0] = None, force: bool = False,
        without_forgotten: bool = False,
    ) -> None:
        manager = self._manager()
        name = self._corpus(corpus.value)
        await defer(interaction)  # starting a job writes to the database, which may be busy
        by = f"discord:{interaction.user.id}"
        try:
            if without_forgotten:
                started = await manager.retrain_without_forgotten(name, by, minutes, interaction.guild_id,
                                                                  interaction.channel_id, force=force)
            else:
                started = await manager.start(name, by, minutes, interaction.guild_id, interaction.channel_id,
                                              force=force)
        except FinetuneRefused as exc:
            raise Refusal(f"I can't start that: {exc}") from None
        if isinstance(started, Served):
            await send(interaction, f"Too little text remains to fine-tune **{name}** without the forgotten texts, "
                       f"so it now serves **{started.label}**, the newest version that never saw them; the versions "
                       "that did were deleted.")
            return
        job = started
        start = f"from {job.parent.label} without the forgotten texts, " if without_forgotten else ""
        forced = " (forced: served whatever the checks say)" if force else ""
        await send(interaction, f"Started fine-tuning **{name}** (job {job.id}) {start}on {job.chars:,} characters "
                   f"from {job.contributions} contributions{forced}. "
                   f"I keep a status message in this channel up to date and "
                   f"post the results here when it ends; `/finetune cancel` stops it.")
        self.bot.followers.follow(job, interaction.channel or self.bot.get_channel(interaction.channel_id))

    @finetune.command(name="status", description="(Admins) How the fine-tuning is going, or how it went")
    @app_commands.describe(corpus="only this corpus")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.check(is_admin)
    async def status(self, interaction: discord.Interaction, corpus: app_commands.Choice[str] = None) -> None:
        manager = self._manager()
        await defer(interaction)
        text = await status_text(manager, corpus.value if corpus else None, seen_from(interaction.guild_id))
        await send(interaction, text[:MAX_MESSAGE])

    @finetune.command(name="cancel", description="(Admins) Stop a fine-tune; the served model stays as it is")
    @app_commands.describe(corpus="whose fine-tune to stop")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.check(is_admin)
    async def cancel(self, interaction: discord.Interaction, corpus: app_commands.Choice[str]) -> None:
        manager = self._manager()
        await defer(interaction)
        job = await manager.cancel(corpus.value, f"cancelled by {who(f'discord:{interaction.user.id}')}")
        if job is not None:
            await send(interaction, f"Stopping the fine-tune of **{corpus.value}** (job {job.id}) at its next "
                       "training step; the served model stays as it is.")
            return
        other = await manager.store.running_job(corpus.value)
        if other is not None:
            raise Refusal(f"The fine-tune of {corpus.value} (job {other.id}) runs in another process "
                          f"(pid {other.owner_pid} on {other.owner_host}); stop it there.")
        raise Refusal(f"No fine-tune of **{corpus.value}** is running.")

    # ---- /rollback ----------------------------------------------------------------------

    @app_commands.command(name="rollback", description="(Admins) Serve an earlier version of a corpus's model")
    @app_commands.describe(corpus="which model", version="version number, 0 = the original; default: the previous one")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.check(is_admin)
    async def rollback(
        self, interaction: discord.Interaction, corpus: app_commands.Choice[str],
        version: app_commands.Range[int, 0, 1_000_000] = None,
    ) -> None:
        manager = self._manager()
        name = self._corpus(corpus.value)
        await defer(interaction)  # checking a checkpoint takes a moment
        try:
            before, after = await manager.rollback(name, version)
        except FinetuneRefused as exc:
            raise Refusal(f"I can't roll back: {exc}") from None
        await send(interaction, f"**{name}** now serves **{after.label}** (was {before.label}); replies use it "
                   "from now on.")

    # ---- for /model ---------------------------------------------------------------------

    async def versions_text(self) -> str:
        """The version lines /model adds (empty when nothing was fine-tuned)."""
        if self.manager is None:
            return ""
        corpora = [c for c in self.manager.serving if parse_key(c) is None]  # never another server's persona
        return await versions_text(self.manager, corpora)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Finetune(bot))
