"""Gateway shards: a cluster is several ``charbot run`` processes, each owning some shards of one count.

Discord sends a guild's events to shard ``(guild_id >> 22) % shard_count`` only, so each process
answers its own guilds and nothing is answered twice. Each process's metrics (scraped during the
run) say which shards it holds and which replies it wrote.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.bench.fake_discord import FakeDiscord, FakeDiscordError, shard_of
from tests.bot.e2e_bot import answered, bot_on_fake, write_checkpoints
from tests.helpers import BotProcess, free_port, start_bot

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of a bot's /metrics, by (name, sorted labels)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def written_by(port: int, replies: int, timeout: float = 60.0) -> dict[tuple[str, tuple], float]:
    """The process's metrics once it has finished ``replies`` replies (answered is not finished: the
    first message goes out at once and the reply is written into it afterwards)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        figures = await scrape(port)
        if figures.get(("charbot_reply_seconds_count", (("corpus", "tale"),)), 0) >= replies:
            return figures
        if asyncio.get_running_loop().time() > deadline:
            return figures  # the assertions below say what is missing
        await asyncio.sleep(0.1)


async def probe(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status


async def test_two_processes_with_one_shard_each_answer_only_their_own_guilds_once(tmp_path):
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    async with FakeDiscord(interaction_deadline_s=30.0, recommended_shards=2) as fake:
        guilds = {0: fake.add_guild("Even shard", shard=0, shard_count=2),
                  1: fake.add_guild("Odd shard", shard=1, shard_count=2)}
        ports = {0: free_port(), 1: free_port()}
        env = {"CHARBOT_DB": str(tmp_path / "cluster.db"), "CHARBOT_EDIT_INTERVAL": "0.05",
               "CHARBOT_SHUTDOWN_GRACE": "2", "CHARBOT_CORPORA": "tale"}
        procs = {
            shard: BotProcess(await start_bot(fake, tmp_path, checkpoints["tale"].parent,
                                              args=("--shard-ids", str(shard), "--shard-count", "2"),
                                              CHARBOT_METRICS_PORT=str(ports[shard]), **env))
            for shard in (0, 1)
        }
        try:
            try:
                await fake.wait_shards_ready([0, 1], timeout=120)
            except FakeDiscordError as exc:
                logs = "\n----\n".join(p.log[-4000:] for p in procs.values())
                raise AssertionError(f"{exc}\nthe bots' logs:\n{logs}") from None
            assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
            for port in ports.values():  # ready once its shard has its guilds
                for _ in range(200):
                    if await probe(port, "/readyz") == 200:
                        break
                    await asyncio.sleep(0.1)
                assert await probe(port, "/readyz") == 200 and await probe(port, "/livez") == 200

            asked = {}
            for shard, guild in guilds.items():
                for n in range(shard + 1):  # 1 reply in the even guild, 2 in the odd one
                    user = (fake.member, fake.other_member)[n]
                    inter = await fake.slash("tale", {"prompt": f"Once {n}", "length": 20}, guild=guild, user=user)
                    asked.setdefault(shard, []).append(inter)
            everything = [i for inters in asked.values() for i in inters]
            await fake.wait_until(lambda: all(answered(i) for i in everything), 60, "every reply")
            for inter in everything:
                assert len([c for c in inter.callbacks if c.status < 300]) == 1, "answered twice"
                assert inter.original["content"].startswith("**Once"), inter.original["content"]
            figures = {shard: await written_by(port, shard + 1) for shard, port in ports.items()}
        finally:
            codes = await asyncio.gather(*(p.stop() for p in procs.values()))
    logs = {shard: p.log for shard, p in procs.items()}
    assert codes == [0, 0], "\n----\n".join(log[-3000:] for log in logs.values())

    routed = {guild: shard for event, guild, shard in fake.dispatched if event == "INTERACTION_CREATE"}
    assert routed == {guilds[0]: 0, guilds[1]: 1}
    for shard in (0, 1):
        mine = [g for g in fake.guild_channels if shard_of(g, 2) == shard]
        line = next(line for line in logs[shard].splitlines() if f"shard {shard} of 2 ready:" in line)
        assert f"ready: {len(mine)} servers" in line
        assert all(g in line for g in mine) and not any(g in line for g in fake.guild_channels if g not in mine)
        assert f"shard {1 - shard} of 2 ready" not in logs[shard]
        f = figures[shard]
        other = str(1 - shard)
        assert f[("charbot_guilds", (("shard", str(shard)),))] == len(mine)
        assert ("charbot_guilds", (("shard", other),)) not in f
        assert ("charbot_gateway_latency_seconds", (("shard", str(shard)),)) in f
        assert ("charbot_gateway_latency_seconds", (("shard", other),)) not in f
        written = sum(v for (name, labels), v in f.items() if name == "charbot_replies_total"
                      and ("corpus", "tale") in labels and dict(labels)["outcome"] in ("sentence", "length", "stop"))
        assert written == shard + 1, f"shard {shard} wrote {written} replies: {[k for k in f if 'replies' in k[0]]}"
        assert f[("charbot_reply_seconds_count", (("corpus", "tale"),))] == shard + 1
        assert f[("charbot_served_version", (("corpus", "tale"),))] == 0
        assert f[("charbot_engine_queue_depth", (("corpus", "tale"),))] == 0
        assert ("charbot_event_loop_lag_seconds", ()) in f
        assert f[("charbot_finetune_job_state", (("corpus", "tale"), ("state", "running")))] == 0


async def test_shard_count_auto_takes_discords_recommendation(tmp_path):
    env = {"CHARBOT_SHARD_COUNT": "auto", "CHARBOT_CORPORA": "tale"}
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    async with bot_on_fake(tmp_path, env=env, checkpoints=checkpoints,
                           fake_options={"recommended_shards": 2}) as world:
        fake = world.fake
        # discord.py waits 5 s between two identifies of one process, as Discord's identify limit asks.
        await fake.wait_shards_ready([0, 1], timeout=60)
        await world.fake.wait_until(world.bot.is_ready, 30, "the bot to be ready on both shards")
        assert any(r.key == "GET /gateway/bot" for r in fake.requests)
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
        assert world.bot.shard_count == 2 and sorted(world.bot.shards) == [0, 1]
        inter = await world.run("tale", {"prompt": "Sharded", "length": 20})
        assert world.public_answer(inter).startswith("**Sharded**")
