"""One temperature rule, worded once, whichever door a value comes through."""

from __future__ import annotations

import math

import pytest

from bot.cli.repl import parse_generation
from bot.config import Limits
from bot.core import answers
from bot.core.refusals import Refusal
from bot.core.replies import make_request
from bot.core.temperature import RULE, check_temperature


@pytest.mark.parametrize("good,expected", [(0, 0.0), (0.8, 0.8), (2, 2.0), ("1.5", 1.5), (" 0.3 ", 0.3)])
def test_numbers_and_text_that_reads_as_one_pass(good, expected):
    assert check_temperature(good) == expected


@pytest.mark.parametrize("bad", [-0.1, 2.01, 5, math.nan, math.inf, "hot", "", None, True, [1.0]])
def test_anything_else_is_refused_with_the_rule(bad):
    with pytest.raises(Refusal) as err:
        check_temperature(bad)
    assert err.value.message.startswith(RULE)
    assert "0 to 2" in err.value.message and "0 = always the likeliest character" in err.value.message


def test_only_a_finite_number_is_echoed():
    with pytest.raises(Refusal, match=r"; got 5\.$"):
        check_temperature(5)
    with pytest.raises(Refusal) as err:
        check_temperature("<@&123> @everyone")
    assert err.value.message == f"{RULE}."


class Untouched:
    """A store that fails the test if a refused value reaches it."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the store was asked for {name}")


async def test_the_slash_command_temp_and_the_cli_say_the_same_words():
    said = []
    for door in (
        lambda: make_request("tale", "Once", Limits(), temperature=5),
        lambda: parse_generation("Once --temperature 5"),
    ):
        with pytest.raises(Refusal) as err:
            door()
        said.append(err.value.message)
    with pytest.raises(Refusal) as err:
        await answers.temp(Untouched(), 1, 2, 5)
    said.append(err.value.message)
    assert said == [f"{RULE}; got 5."] * 3
