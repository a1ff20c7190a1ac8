"""Autocomplete for options that name a voice: this server's personas, and the corpora where those may be
named too (/channel).

Only suggestions: the person may still type anything, and the command checks what it gets
(:meth:`bot.personas.service.PersonaService.get` and :func:`bot.core.replies.make_request` turn another
server's persona down like a name that does not exist). Names are asked of the persona service for the
server the interaction comes from, so another server's never show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from discord import app_commands
from discord.ext import commands

from bot.store import StoreError

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # the most suggestions Discord shows


def rank(names: Sequence[str], typed: str) -> list[str]:
    """``names`` that fit what was typed so far: those starting with it first, then those containing it."""
    typed = typed.strip().lower()
    starts = [n for n in names if n.lower().startswith(typed)]
    inside = [n for n in names if typed in n.lower() and n not in starts]
    return (starts + inside)[:MAX_CHOICES]


async def voice_choices(
    bot: commands.Bot, guild_id: int | None, typed: str, corpora: Sequence[str] = ()
) -> list[app_commands.Choice[str]]:
    """Suggestions for a voice option: ``corpora``, then this server's persona names."""
    names = list(corpora)
    personas = getattr(bot, "personas", None)
    if personas is not None:
        try:
            names += [n for n in await personas.names(guild_id) if n not in names]
        except StoreError as exc:  # a busy database: suggest what needs none, the person can still type
            log.info("no persona names to suggest: %s", exc)
    return [app_commands.Choice(name=n, value=n) for n in rank(names, typed)]
