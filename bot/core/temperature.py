"""The temperature a person may ask for: one check and one wording for the slash commands,
``/temp``, the options check and the CLI, so every door refuses a bad value the same way."""

from __future__ import annotations

import math

from bot.core.refusals import Refusal
from model.sample import MAX_TEMPERATURE

SCALE = "0 = always the likeliest character, 0.8 = the usual, 2 = wild"
RULE = f"Temperature must be a number from 0 to {MAX_TEMPERATURE:g} ({SCALE})"


def check_temperature(value: object) -> float:
    """``value`` (a number, or text that reads as one) as a temperature, or a :class:`Refusal` stating the rule.

    Only a finite number is echoed back, as a number: whatever else was sent is never repeated.
    """
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise Refusal(f"{RULE}.")
    if not 0 <= number <= MAX_TEMPERATURE:
        raise Refusal(f"{RULE}; got {number:g}.")
    return number
