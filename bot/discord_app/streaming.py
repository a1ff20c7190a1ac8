"""Writing a reply into a Discord message as it grows: one loop for every way the bot speaks.

The reply service yields the message as it should look now (at most once per edit interval,
:meth:`bot.core.replies.ReplyStream.updates`); here each snapshot becomes an edit. A failed
intermediate edit is skipped (the next one catches up), a failed final edit is reported, and a
message someone deleted stops the generation. Buttons are attached to the final edit only, so
nobody presses Continue on half a reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import discord
from discord.ext import commands

from bot.core.conversation import BUTTONS, custom_id, remember
from bot.core.replies import ReplyRequest, ReplyStream, ReplyUpdate
from bot.discord_app.interactions import NO_MENTIONS
from model.sample import Finish

log = logging.getLogger(__name__)

BUTTON_VIEW_S = 1.0  # presses are handled by the conversation cog's listener, not by a stored view

# edit(text, view): apply one snapshot; the view is given with the final one.
Edit = Callable[[str, "discord.ui.View | None"], Awaitable[None]]


def buttons() -> discord.ui.View:
    """Continue and Another under a finished reply.

    The view is only the buttons' description: every press reaches the conversation cog through
    its interaction listener (after a restart too), so the view times out at once instead of
    being kept in discord.py's memory for every reply ever posted.
    """
    view = discord.ui.View(timeout=BUTTON_VIEW_S)
    for action, label in BUTTONS.items():
        style = discord.ButtonStyle.primary if action == "continue" else discord.ButtonStyle.secondary
        view.add_item(discord.ui.Button(label=label, style=style, custom_id=custom_id(action)))
    return view


async def stream_into(reply: ReplyStream, edit: Edit, with_buttons: bool = False) -> ReplyUpdate | None:
    """Edit each snapshot of ``reply`` in; the final update, or None when the message was deleted."""
    async with aclosing(reply.updates()) as updates:
        async for update in updates:
            finished = update.done and update.generation is not None and update.generation.finish != Finish.CANCELLED
            view = buttons() if with_buttons and finished else None
            try:
                await edit(update.text, view)
            except discord.NotFound:
                log.info("a %s reply's message was deleted; stopping it", reply.request.trigger)
                return None
            except discord.HTTPException:
                if update.done:
                    raise
                log.warning("an intermediate edit failed; the next one will catch up", exc_info=True)
            if update.done:
                return update
    return None


async def post_with_buttons(
    bot: commands.Bot, interaction: discord.Interaction, reply: ReplyStream, words_are_askers: bool = True
) -> None:
    """Write ``reply`` into the interaction's (deferred) response, buttons under the finished one, and
    keep what the buttons need (a slash command, the context menu, a Continue press)."""
    posted: list[discord.Message] = []

    async def edit(text: str, view: discord.ui.View | None) -> None:
        extra = {"view": view} if view is not None else {}
        posted[:] = [await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **extra)]

    final = await stream_into(reply, edit, with_buttons=True)
    if final is not None and posted:
        await keep_for_buttons(bot, posted[0].id, interaction.guild_id, reply.request, final, words_are_askers)


_KEEPING: set[asyncio.Task] = set()  # records being written, held so they are not collected half-way


async def keep_for_buttons(
    bot: commands.Bot, message_id: int, guild_id: int | None, request: ReplyRequest, final: ReplyUpdate,
    words_are_askers: bool = True,
) -> None:
    """Record the posted reply in the background: the reply is done when its final edit lands and never
    waits on a database another program holds; a busy (or, at shutdown, closed) one costs the buttons."""
    if final.generation is None or final.generation.finish == Finish.CANCELLED or bot.replies.closing:
        return  # cut short by a shutdown: no buttons were shown

    async def keep() -> None:
        try:
            await remember(bot.store, bot.config.limits, message_id, guild_id, request, final, words_are_askers)
        except Exception as exc:  # the store is busy, or closed by a shutdown that began meanwhile
            log.warning("the buttons under message %s will not work: %s", message_id, exc)

    task = asyncio.create_task(keep(), name=f"keep-buttons-{message_id}")
    _KEEPING.add(task)
    task.add_done_callback(_KEEPING.discard)
