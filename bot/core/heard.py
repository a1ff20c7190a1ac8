"""A message as the reply core hears it: the facts the Discord front end (or ``charbot chat``)
hands over, and all that the rules for keeping it (:mod:`bot.core.collect`) or answering it
(:mod:`bot.core.conversation`) read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heard:
    """One message: where, who, what, and what kind of author sent it."""

    guild_id: int | None  # None: a direct message
    channel_id: int
    author_id: int
    content: str
    author_is_bot: bool = False
    is_webhook: bool = False
    is_system: bool = False
    mentions_me: bool = False
    replies_to_me: bool = False  # it answers one of the bot's messages
