"""The queue of fine-tunes waiting for room, on SQLite and on PostgreSQL (each test runs on both): a claim
is taken by one process only, every queued job runs exactly once however many processes drain the queue,
a dead claimant's entry goes back at the next start, and a CLI process runs only what it submitted."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.manager import FinetuneManager, Queued, RunningJob
from bot.jobs.settings import FinetuneSettings
from bot.store import Store, open_store
from bot.store.jobs import DONE, FinetuneStore
from bot.store.queue import AlreadyQueued, JobQueue, QueuedJob, claimant
from bot.store.schema import MIGRATIONS
from tests.helpers import contributed_texts, eventually, fake_finetune, fake_runs

HOST = socket.gethostname()


def dead_pid() -> int:
    """An id no process of this machine has: process ids stay below pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


# ---- the table ----------------------------------------------------------------------------


async def test_entries_wait_oldest_first_and_are_claimed_released_and_done(database):
    async with await open_store(database) as store:
        q = JobQueue(store)
        a = await q.put("g1-ann", "discord:1", 1, 2, 3.0, False)
        b = await q.put("g1-bob", "cli:op", None, None, None, True)
        assert a.id < b.id and (a.corpus, a.guild_id, a.channel_id, a.minutes, a.force) == ("g1-ann", 1, 2, 3.0, False)
        assert (b.minutes, b.force, b.claimed_by) == (None, True, None)
        assert [e.id for e in await q.waiting()] == [a.id, b.id]
        assert (await q.of_corpus("g1-bob")).id == b.id and await q.of_corpus("g1-cat") is None

        got = await q.claim()
        assert got.id == a.id and got.claimed_by == claimant() == f"{HOST}:{os.getpid()}"
        assert [e.id for e in await q.waiting()] == [b.id]
        assert await q.claim(skip={"g1-bob"}) is None  # its corpus is busy here: left for later
        assert await q.claim(only=a.id) is None  # taken already
        await q.release(a.id)
        assert (await q.claim(only=b.id)).id == b.id  # that entry alone, though an older one waits
        assert await q.drop("g1-bob") == 0  # a claimed entry is being started: not dropped
        assert await q.drop("g1-ann") == 1 and await q.get(a.id) is None
        await q.done(b.id)
        assert await q.waiting() == [] and await q.get(b.id) is None


async def test_of_two_processes_claiming_at_once_each_entry_goes_to_one(database):
    async with await open_store(database) as one, await open_store(database) as two:
        ids = [(await JobQueue(one).put(f"g1-p{i}", "discord:1", 1, 2, None, False)).id for i in range(6)]
        claims = await asyncio.gather(*(JobQueue(s).claim() for _ in range(6) for s in (one, two)))
        won = [c.id for c in claims if c is not None]
        assert sorted(won) == ids  # every entry claimed, none twice
        assert await JobQueue(one).claim() is None



async def test_one_corpus_is_queued_once_even_by_two_processes_at_the_same_instant(database):
    async with await open_store(database) as one, await open_store(database) as two:
        results = await asyncio.gather(*(JobQueue(s).put("g1-ann", f"discord:{i}", 1, 2, None, False)
                                         for i, s in enumerate((one, two, one, two))), return_exceptions=True)
        queued = [r for r in results if isinstance(r, QueuedJob)]
        refused = [r for r in results if isinstance(r, AlreadyQueued)]
        assert len(queued) == 1 and len(refused) == 3, results
        assert {r.entry.id for r in refused} == {queued[0].id}
        assert [e.id for e in await JobQueue(one).waiting()] == [queued[0].id]
        claimed = await JobQueue(two).claim()  # being started: a new entry still waits for it to leave
        with pytest.raises(AlreadyQueued):
            await JobQueue(one).put("g1-ann", "discord:9", 1, 2, None, False)
        await JobQueue(two).done(claimed.id)
        assert (await JobQueue(one).put("g1-ann", "discord:9", 1, 2, None, False)).started_by == "discord:9"


async def test_a_database_that_queued_one_corpus_twice_keeps_the_older_entry_when_migrated(database):
    async with await open_store(database) as store:
        await store.write([("DROP INDEX one_queued_job_per_corpus", ())])
        for who in ("discord:1", "discord:2"):
            await store.write([(
                "INSERT INTO job_queue (corpus, started_by, forced, created) VALUES (?, ?, 0, '2026-01-01')",
                ("g1-ann", who),
            )])
        await store.write([("UPDATE schema_version SET version = ? WHERE id = 1", (len(MIGRATIONS) - 1,))])
    async with await open_store(database) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert [e.started_by for e in await JobQueue(store).waiting()] == ["discord:1"]
        with pytest.raises(AlreadyQueued):
            await JobQueue(store).put("g1-ann", "discord:3", 1, 2, None, False)

async def test_entries_of_dead_claimants_on_this_machine_are_handed_back(database):
    async with await open_store(database) as store:
        q = JobQueue(store)
        gone, alive = dead_pid(), os.getppid()
        owners = [f"{HOST}:{gone}", f"{HOST}:{alive}", f"elsewhere:{gone}", f"{HOST}:{os.getpid()}", "garbage"]
        for i, who in enumerate(owners):
            entry = await q.put(f"g1-p{i}", "discord:1", 1, 2, None, False)
            await store.write([("UPDATE job_queue SET claimed_by = ? WHERE id = ?", (who, entry.id))])
        # This process's own claims are a previous life's: recover() runs at start, before it claims any.
        assert await q.release_dead(lambda pid: pid != gone) == 2
        assert [e.corpus for e in await q.waiting()] == ["g1-p0", "g1-p3"]


# ---- managers draining it (a stand-in child: a job takes a Python start-up) ------------------


class Machine:
    """Managers over one database, as bot and CLI processes of one machine sharing it."""

    def __init__(self, database: str, tmp: Path, base: str) -> None:
        self.database, self.tmp, self.base = database, tmp, Path(base)
        self.gate = tmp / "gate"
        self.stores: list[Store] = []
        self.managers: list[FinetuneManager] = []

    async def manager(self, serves_queue: bool = True, max_running: int = 1) -> FinetuneManager:
        store = await open_store(self.database)
        self.stores.append(store)
        settings = FinetuneSettings(state_dir=self.tmp / "state", min_chars=200, max_running=max_running,
                                    command=fake_finetune(self.gate))
        manager = FinetuneManager(FinetuneStore(store), settings, lambda corpus: self.base, serves_queue=serves_queue)
        self.managers.append(manager)
        return manager

    async def personas(self, *keys: str) -> None:
        """Text to train on for each key (a persona's uploaded text is stored as contributions)."""
        for key in keys:
            for text in contributed_texts(n=2, seed=len(key)):
                await self.stores[0].add_contribution(1, 2, 3, key, text, "modal")

    async def jobs(self) -> list:
        return await FinetuneStore(self.stores[0]).recent_jobs(limit=100)

    async def close(self) -> None:
        for m in self.managers:
            await m.close(grace_s=10)
        for s in self.stores:
            await s.close()


@pytest.fixture
async def machine(database, tmp_path, random_checkpoint) -> AsyncIterator[Machine]:
    m = Machine(database, tmp_path, random_checkpoint)
    yield m
    await m.close()


async def all_done(machine: Machine, n: int) -> bool:
    jobs = await machine.jobs()
    return len(jobs) == n and all(j.state != "running" for j in jobs) and not await machine.managers[0].queue.waiting()


@pytest.mark.slow
async def test_two_processes_draining_one_queue_run_every_job_exactly_once(machine):
    machine.gate.touch()  # jobs end as soon as they start
    one, two = await machine.manager(max_running=2), await machine.manager(max_running=2)
    keys = [f"g1-p{i}" for i in range(6)]
    await machine.personas(*keys)
    for key in keys:  # queued while the machine was busy
        await one.queue.put(key, "discord:3", 1, 2, 1.0, False)
    await asyncio.gather(one.drain(), two.drain())  # each finished job drains again, in its own process
    await eventually(lambda: all_done(machine, 6), timeout=60, interval=0.05, what="every queued job to end")
    assert sorted(fake_runs(machine.gate)) == keys  # each ran once
    jobs = await machine.jobs()
    assert sorted(j.corpus for j in jobs) == keys and {j.state for j in jobs} == {DONE}
    for key in keys:
        assert (await one.served(key)).version == 1


@pytest.mark.slow
async def test_submit_queues_when_the_machine_is_full_and_the_queue_moves_on_when_the_job_ends(machine):
    bot = await machine.manager()
    await machine.personas("g1-ann", "g1-bob", "g1-cat")
    first = await bot.submit("g1-ann", "discord:3", 1.0, 1, 2)
    assert isinstance(first, RunningJob) and first.corpus == "g1-ann"
    second, third = await bot.submit("g1-bob", "discord:3", 1.0, 1, 2), await bot.submit("g1-cat", "discord:3")
    assert second == Queued(second.id, "g1-bob", 0) and third == Queued(third.id, "g1-cat", 1)
    assert await bot.queued("g1-cat") == third and await bot.queued("g1-ann") is None
    machine.gate.touch()
    await eventually(lambda: all_done(machine, 3), timeout=60, interval=0.05, what="the queue to empty")
    assert fake_runs(machine.gate) == ["g1-ann", "g1-bob", "g1-cat"]  # in the order they were asked for
    assert {j.state for j in await machine.jobs()} == {DONE}


@pytest.mark.slow
async def test_a_cli_process_runs_only_what_it_submitted_and_leaves_the_rest_to_the_bot(machine):
    bot, cli = await machine.manager(), await machine.manager(serves_queue=False)
    await machine.personas("g1-old", "g1-mine")
    old = await bot.queue.put("g1-old", "discord:3", 1, 2, 1.0, False)  # the bot's, waiting (say it is busy)
    job = await cli.submit("g1-mine", "cli:op", 1.0)
    assert isinstance(job, RunningJob) and job.corpus == "g1-mine"
    machine.gate.touch()
    assert (await cli.wait(job)).state == DONE
    await asyncio.sleep(0.3)  # a bot would have taken the next entry by now
    assert fake_runs(machine.gate) == ["g1-mine"] and [e.id for e in await bot.queue.waiting()] == [old.id]
    assert [j.corpus for j in await bot.drain()] == ["g1-old"]


@pytest.mark.slow
async def test_a_dead_claimants_entry_goes_back_at_the_next_start_and_then_runs(machine):
    machine.gate.touch()
    bot = await machine.manager()
    await machine.personas("g1-ann")
    entry = await bot.queue.put("g1-ann", "discord:3", 1, 2, 1.0, False)
    await machine.stores[0].write([("UPDATE job_queue SET claimed_by = ? WHERE id = ?",
                                    (f"{HOST}:{dead_pid()}", entry.id))])  # it died between claim and start
    assert await bot.drain() == []  # still claimed: nobody else takes it
    await bot.recover()
    (job,) = await bot.drain()
    outcome = await bot.wait(job)
    assert job.corpus == "g1-ann" and outcome.state == DONE, outcome.message()
    assert fake_runs(machine.gate) == ["g1-ann"] and await bot.queue.get(entry.id) is None
