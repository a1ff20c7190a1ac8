"""Autocomplete for options naming a voice: what fits what was typed, this server's personas only."""

from __future__ import annotations

from types import SimpleNamespace

from bot.discord_app.choices import MAX_CHOICES, rank, voice_choices
from bot.store import StoreError


def test_names_starting_with_what_was_typed_come_first_then_those_containing_it() -> None:
    names = ["tale", "faq", "novel", "rules", "house-rules", "lore"]
    assert rank(names, "ru") == ["rules", "house-rules"]
    assert rank(names, " L") == ["lore", "tale", "novel", "rules", "house-rules"]
    assert rank(names, "") == names
    assert len(rank([f"p{i}" for i in range(40)], "p")) == MAX_CHOICES  # Discord shows at most 25


class Personas:
    def __init__(self, by_server: dict[int, list[str]], busy: bool = False) -> None:
        self.by_server, self.busy = by_server, busy

    async def names(self, guild_id: int | None) -> list[str]:
        if self.busy:
            raise StoreError("the database is busy")
        return [] if guild_id is None else self.by_server.get(guild_id, [])


async def test_only_this_servers_personas_are_suggested_and_a_busy_database_still_gets_an_answer() -> None:
    bot = SimpleNamespace(personas=Personas({1: ["rules"], 2: ["lore"]}))
    assert [c.value for c in await voice_choices(bot, 1, "")] == ["rules"]
    assert [c.value for c in await voice_choices(bot, 2, "", ["tale", "novel"])] == ["tale", "novel", "lore"]
    assert await voice_choices(bot, None, "") == []
    busy = SimpleNamespace(personas=Personas({1: ["rules"]}, busy=True))
    assert [c.value for c in await voice_choices(busy, 1, "", ["tale"])] == ["tale"]
    assert await voice_choices(SimpleNamespace(personas=None), 1, "r") == []
