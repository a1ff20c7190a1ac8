"""Requests the bot turns down, and the words it uses when something unexpected fails.

A :class:`Refusal` carries a message written for the person who asked (shown privately on
Discord, printed by the CLI); anything else that escapes a command is logged with its
traceback and the person gets :data:`UNEXPECTED` instead of silence.
"""

from __future__ import annotations

UNEXPECTED = (
    "Sorry, something went wrong on my side and I could not finish that. The error was logged; please try again."
)
DATABASE_BUSY = (
    "My database is busy right now (another program is writing to it); nothing was saved. Try again in a moment."
)


class Refusal(Exception):
    """A request the bot declines with a friendly explanation (bad option, busy, not allowed...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
