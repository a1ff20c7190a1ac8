"""Requests the bot turns down, and the words it uses when something unexpected fails.

A :class:`Refusal` carries a message written for the person who asked (shown privately on
Discord, printed by the CLI) and a kind that code reads (metrics count refusals by kind, never
by their wording, which may change); anything else that escapes a command is logged with its
traceback and the person gets :data:`UNEXPECTED` instead of silence.
"""

from __future__ import annotations

from typing import Literal

# invalid: the request itself (a bad option, an empty prompt); busy: the engine's queue is full
# (add capacity); cooldown: this person asked again too soon; restarting: the bot is shutting down;
# unavailable: the model or feature is not on this bot; not_allowed: servers or admins only.
RefusalKind = Literal["invalid", "busy", "cooldown", "restarting", "unavailable", "not_allowed"]

UNEXPECTED = (
    "Sorry, something went wrong on my side and I could not finish that. The error was logged; please try again."
)
DATABASE_BUSY = (
    "My database is busy right now (another program is writing to it); nothing was saved. Try again in a moment."
)


class Refusal(Exception):
    """A request the bot declines with a friendly explanation (bad option, busy, not allowed...)."""

    def __init__(self, message: str, kind: RefusalKind = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
