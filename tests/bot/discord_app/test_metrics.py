"""What an operator's Prometheus and process manager see (``CHARBOT_METRICS_PORT``); nothing without it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import load_config
from bot.discord_app.client import CharBot
from bot.discord_app.metrics import BotMetrics
from corpora.registry import get_corpus
from tests.bot.e2e_bot import bot_on_fake, write_checkpoints
from tests.helpers import eventually, free_port


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_a_busy_model_and_its_queue_show_in_the_metrics_and_the_server_stops_with_the_bot(tmp_path: Path):
    port = free_port()
    slower = write_checkpoints(tmp_path / "slower", hidden_size=256, n_layers=2)
    env = {"CHARBOT_METRICS_PORT": str(port), "CHARBOT_MAX_PENDING": "1", "CHARBOT_CORPORA": "novel"}
    async with bot_on_fake(tmp_path, env=env, checkpoints=slower) as world:
        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await eventually(ready, what="/readyz to say ready once the guild has arrived")
        assert (await get(port, "/livez"))[0] == 200
        length = world.config.limits.max_length
        running = asyncio.ensure_future(world.run("novel", {"prompt": "It was", "length": length}))
        await world.fake.wait_for_request(lambda r: r.method == "PATCH", what="the first edit")
        during = samples((await get(port, "/metrics"))[1])
        refused = await world.run("novel", {"prompt": "Me too"}, user=world.fake.other_member)
        assert "busy" in world.private_answer(refused)
        await running
        after = samples((await get(port, "/metrics"))[1])
    rows = get_corpus("novel").best_of  # the one reply's candidates, side by side in the batch
    assert during[("charbot_engine_batch_size", (("corpus", "novel"),))] == rows
    assert after[("charbot_replies_total", (("corpus", "novel"), ("outcome", "busy"), ("trigger", "slash")))] == 1
    finished = {dict(labels)["outcome"]: v for (name, labels), v in after.items()
                if name == "charbot_replies_total" and ("corpus", "novel") in labels}
    assert finished.get("length", 0) + finished.get("sentence", 0) == 1, finished
    assert after[("charbot_reply_seconds_count", (("corpus", "novel"),))] == 1
    assert after[("charbot_engine_batch_size", (("corpus", "novel"),))] == 0
    assert after[("charbot_finetune_job_state", (("corpus", "novel"), ("state", "running")))] == 0
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the bot: no stale "ready" after shutdown
        await get(port, "/livez")


async def test_without_a_metrics_port_nothing_listens(world) -> None:
    assert world.bot.metrics is None and world.config.metrics_port is None


async def test_a_starting_bot_is_alive_but_not_ready_and_a_taken_port_is_one_clear_error(tmp_path: Path):
    config = load_config(None, {"CHARBOT_DB": str(tmp_path / "x.db")}, require_token=False)
    metrics = BotMetrics(CharBot(config))
    assert metrics.readiness() == (False, "starting: loading models and the database")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"CHARBOT_METRICS_PORT: cannot serve metrics on 127.0.0.1:{port}"):
            await metrics.start("127.0.0.1", port)
    await metrics.stop()
