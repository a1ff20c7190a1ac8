"""Following a fine-tuning job in its channel: one status message edited while it runs, then how it ended.

One follower for every job the bot supervises: a ``/finetune start``, a ``/persona create`` whose
training starts at once, and a job the queue starts later (:attr:`bot.jobs.manager.FinetuneManager.on_start`),
so all of them report alike. Both messages are plain channel messages, not interaction responses,
because an interaction token expires after 15 minutes and a job may run longer; a job the queue
starts may also have been asked for in a channel this process has not cached (another shard), so
the channel is reached by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
from discord.ext import commands

from bot.discord_app.interactions import NO_MENTIONS
from bot.jobs.manager import FinetuneManager, RunningJob
from bot.jobs.messages import who
from corpora.voices import display_name

log = logging.getLogger(__name__)

MAX_MESSAGE = 1900
CLOSE_WAIT_S = 5.0  # at shutdown, how long followers get to post "cancelled: the bot shut down"


class JobFollower:
    """Posts and updates the status of the jobs it is given, each in its own task."""

    def __init__(self, bot: commands.Bot, manager: FinetuneManager) -> None:
        self.bot = bot
        self.manager = manager
        self._tasks: set[asyncio.Task] = set()

    def channel(self, channel_id: int | None) -> discord.abc.Messageable | None:
        """Where a job reports: the cached channel, else one reached by id (no cache needed to post)."""
        if channel_id is None:
            return None
        found = self.bot.get_channel(channel_id)
        if isinstance(found, discord.abc.Messageable):
            return found
        return self.bot.get_partial_messageable(channel_id)

    def follow(self, job: RunningJob, channel: discord.abc.Messageable | None = None) -> None:
        """Report on ``job`` in ``channel`` (default: the channel it was asked for in) until it ends."""
        where = channel if channel is not None else self.channel(job.channel_id)
        task = asyncio.create_task(self._follow(job, where), name=f"finetune-follow-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def started(self, job: RunningJob) -> None:
        """For :attr:`FinetuneManager.on_start`: a queued job has just started in this process."""
        self.follow(job)

    async def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Let followers post how their (cancelled) jobs ended, if they still can; then stop them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()

    async def _follow(self, job: RunningJob, channel: discord.abc.Messageable | None) -> None:
        """Edit one status message while the job runs, then post how it ended."""
        status: discord.Message | None = None
        if channel is not None:
            try:
                status = await channel.send(job.status()[:MAX_MESSAGE], allowed_mentions=NO_MENTIONS)
            except discord.HTTPException:
                log.warning("cannot post the status of fine-tuning job %d in channel %s", job.id, job.channel_id)
        while job.task is not None and not job.task.done():
            await asyncio.wait({job.task}, timeout=self.manager.settings.status_interval_s)
            if status is not None and not job.task.done():
                try:
                    await status.edit(content=job.status()[:MAX_MESSAGE], allowed_mentions=NO_MENTIONS)
                except discord.HTTPException:
                    log.warning("cannot update the status of fine-tuning job %d", job.id)
        try:
            outcome = await self.manager.wait(job)
        except asyncio.CancelledError:
            return
        if channel is None:
            return
        with contextlib.suppress(discord.HTTPException):
            if status is not None:
                await status.edit(content=f"Fine-tuning {display_name(job.corpus)} (job {job.id}): {outcome.state}.",
                                  allowed_mentions=NO_MENTIONS)
        try:
            await channel.send(f"{who(job.started_by)} {outcome.message()}"[:MAX_MESSAGE],
                               allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("cannot post the result of fine-tuning job %d: %s", job.id, outcome.message())
