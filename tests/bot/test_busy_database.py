"""A database another program holds, end to end: every interaction is acknowledged within Discord's 3 s,
nothing is lost once the lock is gone, and replies never wait on a write.

The other program is a real second process (tests.helpers.write_lock_held) that has written and not
committed, as a second charbot or ``charbot finetune`` on the same file would.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.bench.fake_discord import CALLBACK_DEFERRED, EPHEMERAL, LOADING, FakeInteraction
from tests.bot.e2e_bot import BotUnderTest, answered, bot_on_fake
from tests.helpers import write_lock_held

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

DISCORD_WINDOW_S = 3.0  # Discord drops an interaction not acknowledged within this


def acknowledged_in_time(inter: FakeInteraction) -> None:
    """The first answer was a private "thinking..." deferral, well inside Discord's window."""
    callback = inter.callbacks[0]
    assert callback.json["type"] == CALLBACK_DEFERRED and 0 < callback.status < 300, callback.json
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert callback.at - inter.sent_at < DISCORD_WINDOW_S, f"acknowledged after {callback.at - inter.sent_at:.1f} s"


def still_thinking(inter: FakeInteraction) -> bool:
    return inter.original is not None and bool(inter.original["flags"] & LOADING)


async def test_temp_and_a_contribution_wait_for_the_lock_then_both_are_saved(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path) as world:
        world.store.busy_timeout_s = 60  # surely longer than the other program holds the lock here
        bob = int(world.fake.member.id)
        opened = await world.run("contribute", {"corpus": "tale"})
        async with write_lock_held(world.config.database) as other_program:
            temp = await world.fake.slash("temp", {"value": 0.5})
            submitted = await world.fake.submit_modal(opened, ["A story written while the database was busy."])
            for inter in (temp, submitted):
                await inter.wait_callback(timeout=30)
                acknowledged_in_time(inter)
            # Acknowledged before the database answered: both are still "thinking" while the lock is held.
            assert still_thinking(temp) and still_thinking(submitted)
            await other_program.release()
            await world.settled(temp)
            await world.settled(submitted)
        assert "now 0.5" in world.private_answer(temp)
        assert "Thank you" in world.private_answer(submitted)
        assert await world.store.get_temperature(world.guild, bob) == 0.5
        assert [c.text for c in await world.store.contributions(world.guild)] == [
            "A story written while the database was busy."
        ]


async def test_a_lock_that_outlasts_the_wait_gets_busy_through_the_deferral_and_the_text_back(
    tmp_path: Path,
) -> None:
    text = "My long story, typed once, not to be lost: " + "and then " * 100
    async with bot_on_fake(tmp_path) as world:
        world.store.busy_timeout_s = 0.5  # the bound on a write's wait (5 s in production)
        bob = int(world.fake.member.id)
        opened = await world.run("contribute", {"corpus": "novel"})
        async with write_lock_held(world.config.database):
            temp = await world.run("temp", {"value": 0.7})
            submitted = await world.submit(opened, [text])
            acknowledged_in_time(temp)
            acknowledged_in_time(submitted)
            assert "database is busy" in world.private_answer(temp)
            assert "database is busy" in world.private_answer(submitted)
            handed_back = await world.fake.wait_until(
                lambda: [r for r in submitted.requests if r.files], what="the text handed back as a file"
            )
            assert handed_back[0].files == ["your-contribution.txt"]
            assert submitted.followups[-1]["flags"] & EPHEMERAL
        # The lock is gone: the next write from the same person works at once.
        assert "now 0.7" in world.private_answer(await world.run("temp", {"value": 0.7}))
        assert await world.store.get_temperature(world.guild, bob) == 0.7
        assert await world.store.contributions(world.guild) == []


async def test_a_reply_does_not_wait_behind_another_members_write(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path) as world:
        world.store.busy_timeout_s = 60
        async with write_lock_held(world.config.database) as other_program:
            temp = await world.fake.slash("temp", {"value": 1.5}, user=world.fake.other_member)
            await temp.wait_callback(timeout=30)
            tale = await world.run("tale", {"prompt": "Once upon a time"})  # no temperature: reads /temp's
            assert answered(tale) and not tale.original["content"].endswith(" \u2026"), "the tale did not finish"
            assert tale.callbacks[0].at - tale.sent_at < DISCORD_WINDOW_S
            assert still_thinking(temp), "the write should still be waiting for the other program"
            await other_program.release()
            await world.settled(temp)
        assert "now 1.5" in world.private_answer(temp)


async def test_a_bad_contribution_does_not_jam_the_database_for_anyone(world: BotUnderTest) -> None:
    opened = await world.run("contribute", {"corpus": "tale"})
    answer = world.private_answer(await world.submit(opened, ["A tale \udcff of the \ud800 broken bytes"]))
    assert "Thank you" in answer and "left out 2 characters" in answer
    assert [c.text for c in await world.store.contributions(world.guild)] == ["A tale  of the  broken bytes"]
    # Before the fix the transaction stayed open: every later write failed and other programs were locked out.
    assert "now 0.4" in world.private_answer(await world.run("temp", {"value": 0.4}, user=world.fake.other_member))
    other = sqlite3.connect(world.config.database, isolation_level=None, timeout=1)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
    await asyncio.sleep(0)


WRITES = [("forget", {}), ("optout", {}), ("optout", {"undo": True}), ("temp", {"reset": True}),
          ("listen", {"corpus": "faq"}), ("unlisten", {})]


WRITE_IDS = [f"{c}{'-' + next(iter(o)) if o else ''}" for c, o in WRITES]


@pytest.mark.parametrize(("command", "options"), WRITES, ids=WRITE_IDS)
async def test_every_write_command_answers_busy_privately_in_time_and_works_after(
    tmp_path: Path, command: str, options: dict
) -> None:
    async with bot_on_fake(tmp_path) as world:
        world.store.busy_timeout_s = 0.5
        admin = world.fake.admin  # may use every command
        async with write_lock_held(world.config.database):
            inter = await world.run(command, options, user=admin)
            assert inter.callbacks[0].json["type"] == CALLBACK_DEFERRED
            assert inter.callbacks[0].at - inter.sent_at < DISCORD_WINDOW_S
            assert "database is busy" in world.private_answer(inter)  # private, even after a public deferral
        world.answer(await world.run(command, options, user=admin))  # the same command now goes through
