"""The options an interaction carries, checked against what the command declares.

Discord's client enforces option types, choices and required options, but an interaction is
just JSON: a stale client, a user-installed app or a crafted request can send a string where a
number is declared, a choice outside the list, or leave a required option out. discord.py
passes most of that through to the callback (a number option is not converted, so a string
would reach ``float()`` deep inside a command). The tree runs :func:`check_options` before any
command, so every such request gets one clear refusal that names the option and never repeats
the value sent.
"""

from __future__ import annotations

import math
from typing import Any

from discord import AppCommandOptionType, app_commands

KINDS = {
    AppCommandOptionType.string: "text",
    AppCommandOptionType.integer: "a whole number",
    AppCommandOptionType.number: "a number",
    AppCommandOptionType.boolean: "true or false",
}
ATTACHMENT = AppCommandOptionType.attachment.value
BOUNDED = (AppCommandOptionType.string, AppCommandOptionType.integer, AppCommandOptionType.number)
STALE = "Discord showed you an older version of this command; try again in a minute (or restart Discord)."


class BadOption(app_commands.AppCommandError):
    """An option that does not fit its declaration; the message is for the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _fits(kind: AppCommandOptionType, value: Any) -> bool:
    if kind is AppCommandOptionType.string:
        return isinstance(value, str)
    if kind is AppCommandOptionType.boolean:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is AppCommandOptionType.integer:
        return isinstance(value, int)
    if kind is AppCommandOptionType.number:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, (str, int))  # users, channels, roles: a snowflake


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def check_options(command: app_commands.Command, options: list[dict]) -> None:
    """Raise :class:`BadOption` unless ``options`` (the interaction's, for ``command``) fit its parameters."""
    params = {p.display_name: p for p in command.parameters}
    if not isinstance(options, list):
        raise BadOption(STALE)
    seen = set()
    files = sum(p.type is AppCommandOptionType.attachment for p in params.values())
    for option in options:
        name = option.get("name") if isinstance(option, dict) else None
        param = params.get(name) if isinstance(name, str) else None
        if param is None and files and isinstance(option, dict) and option.get("type") == ATTACHMENT:
            raise BadOption(f"That is more files than this command takes: at most {files}.")
        if param is None or name in seen:
            raise BadOption(STALE)
        seen.add(name)
        value = option.get("value")
        kind = param.type
        if option.get("type", kind.value) != kind.value or not _fits(kind, value):
            raise BadOption(f"The **{name}** option must be {KINDS.get(kind, 'something else')}.")
        if param.choices:
            if value not in [c.value for c in param.choices]:
                allowed = ", ".join(str(c.value) for c in param.choices)
                raise BadOption(f"The **{name}** option must be one of: {allowed}.")
            continue
        low, high = param.min_value, param.max_value
        size, unit = (len(value), " characters long") if kind is AppCommandOptionType.string else (value, "")
        if kind in BOUNDED and ((low is not None and size < low) or (high is not None and size > high)):
            raise BadOption(f"The **{name}** option must be {_range(low, high)}{unit}.")
    missing = [p.display_name for p in params.values() if p.required and p.display_name not in seen]
    if missing:
        raise BadOption(f"The **{missing[0]}** option is required.")
