"""The bot stays connected while it writes, and a shutdown in the middle of a reply still ends that reply."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
from pathlib import Path

from bot.discord_app.client import EXTENSIONS
from tests.bot.e2e_bot import bot_on_fake, write_checkpoints

HEARTBEAT_MS = 50
# Generous on purpose (40 heartbeat intervals): this only proves the event loop is never blocked for long,
# on a shared, busy CPU; a bot that generated on the event loop would stall for the whole reply.
MAX_GAP_S = 2.0


def test_every_cog_module_is_an_extension_the_client_loads() -> None:
    cogs = Path(__file__).resolve().parents[3] / "bot" / "discord_app" / "cogs"
    assert set(EXTENSIONS) == {f"bot.discord_app.cogs.{p.stem}" for p in cogs.glob("*.py") if p.stem != "__init__"}
    for name in EXTENSIONS:
        assert inspect.iscoroutinefunction(importlib.import_module(name).setup), name


async def test_heartbeats_keep_flowing_while_a_long_reply_is_written(tmp_path: Path) -> None:
    await check_heartbeats_flow_during_a_long_reply(tmp_path, device="cpu")


async def check_heartbeats_flow_during_a_long_reply(tmp_path: Path, device: str) -> None:
    """The bot on the fake Discord, its models on ``device``, writes a long reply: the gateway never waits."""
    slower = write_checkpoints(tmp_path / "slower", hidden_size=256, n_layers=2)
    env = {"CHARBOT_DEVICE": device}
    async with bot_on_fake(tmp_path, env=env, heartbeat_interval_ms=HEARTBEAT_MS, checkpoints=slower) as world:
        assert {info.device for info in world.bot.models.info.values()} == {device if device != "cuda" else "cuda:0"}
        fake = world.fake
        await fake.wait_heartbeats(2)
        length = world.config.limits.max_length
        inter = await world.run("novel", {"prompt": "It was a long story", "length": length})
        start, end = inter.callbacks[0].at, inter.requests[-1].at
        await fake.wait_until(lambda: fake.heartbeats[-1] > end, what="a heartbeat after the reply")

        assert end - start > 3 * HEARTBEAT_MS / 1000, f"the reply took {end - start:.2f}s: too short to show anything"
        during = [t for t in fake.heartbeats if start <= t <= end]
        around = [max(t for t in fake.heartbeats if t < start), *during, min(t for t in fake.heartbeats if t > end)]
        gaps = [b - a for a, b in itertools.pairwise(around)]
        assert max(gaps) < MAX_GAP_S, f"heartbeats stalled for {max(gaps):.2f}s while the reply was written"
        assert len(fake.heartbeat_acks) == len(fake.heartbeats)
        assert len(fake.identifies) == 1 and not fake.resumes, "the bot lost its gateway connection"
        assert world.bot.latency < MAX_GAP_S  # discord.py saw our acknowledgements come back


async def test_a_shutdown_during_a_reply_finishes_that_reply_with_a_note(tmp_path: Path) -> None:
    slower = write_checkpoints(tmp_path / "slower", hidden_size=256, n_layers=2)
    env = {"CHARBOT_SHUTDOWN_GRACE": "0"}
    async with bot_on_fake(tmp_path, env=env, checkpoints=slower) as world:
        length = world.config.limits.max_length
        running = asyncio.ensure_future(world.run("novel", {"prompt": "It was", "length": length}))
        first_edit = await world.fake.wait_for_request(lambda r: r.method == "PATCH", what="the first edit")
        assert first_edit.json["content"].endswith(" \u2026")
        await world.bot.close()
        inter = await running
        final = world.final(inter)
        assert final.endswith("*(cut short: the bot is restarting)*")
        assert len(final) <= 2000


async def test_a_reply_whose_message_was_deleted_stops_being_written(tmp_path: Path) -> None:
    slower = write_checkpoints(tmp_path / "slower", hidden_size=256, n_layers=2)
    async with bot_on_fake(tmp_path, checkpoints=slower) as world:
        length = world.config.limits.max_length
        running = asyncio.ensure_future(world.run("novel", {"prompt": "It was", "length": length}))
        await world.fake.wait_for_request(lambda r: r.method == "PATCH", what="the first edit")
        inter = next(iter(world.fake.interactions.values()))
        world.fake.delete_response(inter)
        await running
        statuses = [r.status for r in inter.requests]
        assert statuses[-1] == 404 and statuses.count(404) == 1, "the bot kept editing a deleted message"
        assert world.bot.replies.in_flight() == 0


async def test_after_discord_asks_for_a_reconnect_the_bot_resumes_and_keeps_answering(tmp_path: Path) -> None:
    async with bot_on_fake(tmp_path) as world:
        await world.fake.send_op(7)
        await world.fake.wait_until(lambda: world.fake.resumes, what="the bot to resume")
        assert world.fake.resumes[0]["session_id"] == world.fake.session_id
        inter = await world.run("tale", {"prompt": "Still here"})
        assert world.final(inter).startswith("**Still here**")
        assert len(world.fake.identifies) == 1
