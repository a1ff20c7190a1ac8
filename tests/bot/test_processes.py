"""Several bot processes on one machine share one SQLite file (WAL).

What one process writes (settings, contributions, opt-outs) the others read; one fine-tuning
job per corpus runs across all of them, and a dead holder does not keep the lock; a version
installed or rolled back anywhere is served everywhere within a few seconds. Real processes:
``charbot run`` twice, each on its own fake Discord that shows the same guild and people (as a
rolling restart or a resharded cluster does), and a third process holding a job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.bench.fake_discord import CALLBACK_MESSAGE, FakeDiscord, FakeInteraction
from bot.core.engines import file_version
from tests.bot.e2e_bot import answered, write_checkpoints
from tests.helpers import BotProcess, eventually, start_bot

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

# Version changes are polled every 2 s (bot.jobs.manager.SYNC_EVERY_S); "a few seconds", with room for a busy CPU.
SERVED_EVERYWHERE_S = 20.0


def answer_text(inter: FakeInteraction) -> str:
    """What the person sees as the answer (a message, or the deferral filled in or followed up)."""
    callback = inter.callbacks[0].json
    if callback["type"] == CALLBACK_MESSAGE:
        return callback["data"]["content"]
    if inter.original is not None:
        return inter.original["content"]
    return inter.followups[0]["content"]


async def ask(fake: FakeDiscord, command: str, options: dict | None = None, **kw) -> str:
    inter = await fake.slash(command, options, **kw)
    await fake.wait_until(lambda: answered(inter), 60, f"an answer to /{command}")
    assert len([c for c in inter.callbacks if c.status < 300]) == 1
    return answer_text(inter)


async def serves(fake: FakeDiscord, corpus: str, version: str) -> str:
    """Ask /model until it shows ``corpus`` answering from the checkpoint with ``version``."""
    async def check() -> str | None:
        text = await ask(fake, "model")
        line = next(line for line in text.splitlines() if line.startswith(f"**{corpus}**"))
        return text if f"`{version}`" in line else None

    return await eventually(check, what=f"{corpus} served from {version}", timeout=SERVED_EVERYWHERE_S,
                            interval=0.5)


async def rows(database: str, sql: str, params: tuple = ()) -> list[tuple]:
    from bot.store import open_store

    async with await open_store(database) as store:
        return await store.fetchall(sql, params)


async def test_two_bot_processes_share_settings_contributions_opt_outs_and_served_versions(tmp_path, database):
    """On SQLite, two processes of one machine; on PostgreSQL, as two machines would (the versions on
    storage both read, named by CHARBOT_STATE_DIR)."""
    from bot.jobs.manager import FinetuneManager
    from bot.jobs.settings import load_settings
    from bot.store import open_store
    from bot.store.jobs import FinetuneStore

    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    db = database
    env = {"CHARBOT_DB": db, "CHARBOT_EDIT_INTERVAL": "0.05", "CHARBOT_SHUTDOWN_GRACE": "2",
           "CHARBOT_CORPORA": "tale"}
    if db.startswith("postgresql"):
        env["CHARBOT_STATE_DIR"] = str(tmp_path / "shared-storage")
    async with FakeDiscord(interaction_deadline_s=30.0) as one, one.twin() as two:
        a = BotProcess(await start_bot(one, tmp_path, checkpoints["tale"].parent, **env))
        b = BotProcess(await start_bot(two, tmp_path, checkpoints["tale"].parent, **env))
        try:
            await asyncio.gather(one.wait_ready(timeout=120), two.wait_ready(timeout=120))

            # A setting written through one process is what the other reads.
            assert "now 0.7" in await ask(one, "temp", {"value": 0.7})
            assert "is 0.7" in await ask(two, "temp")

            # An opt-out made through one process is honoured by the other's listening channel,
            # and what the other collected is the first one's to delete.
            assert "won't store" in await ask(one, "optout")
            await ask(two, "listen", {"corpus": "tale"}, user=two.admin, channel="stories")
            await two.post_message("Opted out, so never stored here.", channel="stories")
            await two.post_message("A tale worth keeping for later.", author=two.other_member, channel="stories")
            await eventually(lambda: rows(db, "SELECT text FROM contributions"), what="the kept message",
                             interval=0.2)
            assert await rows(db, "SELECT text FROM contributions") == [("A tale worth keeping for later.",)]
            assert "Deleted 1 contribution" in await ask(one, "forget", user=one.other_member)
            assert await rows(db, "SELECT COUNT(*) FROM contributions") == [(0,)]

            # A version installed beside the bots (as `charbot finetune --install` does) is served by both ...
            newer = write_checkpoints(tmp_path / "newer", hidden_size=24)["tale"]
            async with await open_store(db) as store:
                manager = FinetuneManager(FinetuneStore(store), load_settings(db, None, env),
                                          lambda corpus: checkpoints[corpus])
                await manager.import_checkpoint("tale", newer, "operator")
            await asyncio.gather(serves(one, "tale", file_version(newer)), serves(two, "tale", file_version(newer)))

            # ... and a rollback through one bot process reaches the other.
            assert "now serves **base** (was v1)" in await ask(one, "rollback", {"corpus": "tale"}, user=one.admin)
            await serves(two, "tale", file_version(checkpoints["tale"]))
        finally:
            codes = await asyncio.gather(a.stop(), b.stop())
    assert codes == [0, 0], a.log[-3000:] + "\n----\n" + b.log[-3000:]
    for bot in (a, b):
        assert "Traceback" not in bot.log, bot.log[-3000:]
    assert "now serving v1 (changed by another process)" in b.log
    assert "now serving base (changed by another process)" in b.log


_HOLD_JOB = """
import asyncio, sys
from bot.store import open_store
from bot.store.jobs import FinetuneStore

async def main():
    store = await open_store(sys.argv[1])
    job = await FinetuneStore(store).create_job("tale", "process " + sys.argv[2], {})
    print(job, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def hold_job(db: Path, name: str) -> tuple[asyncio.subprocess.Process, int]:
    """Another process that starts a fine-tuning job for tale and keeps it (never finishes it)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOLD_JOB, str(db), name,
                                                stdout=asyncio.subprocess.PIPE, env=os.environ.copy())
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip().isdigit(), line
    return proc, int(line)


async def test_one_job_per_corpus_across_processes_and_a_dead_holder_releases_it(tmp_path):
    from bot.store import open_store
    from bot.store.jobs import FinetuneStore, JobConflict

    db = tmp_path / "shared.db"
    async with await open_store(db) as store:
        jobs = FinetuneStore(store)
        holder, held = await hold_job(db, "A")
        try:
            with pytest.raises(JobConflict, match=f"job {held}, started by process A"):
                await jobs.create_job("tale", "process B", {})
            other = await jobs.create_job("faq", "process B", {})  # the lock is per corpus
            await jobs.finish_job(other, "cancelled")

            holder.send_signal(signal.SIGKILL)  # the holder dies without a word
            await holder.wait()
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.wait()
        mine = await jobs.create_job("tale", "process B", {})
        assert (await jobs.job(held)).state == "failed"
        assert "interrupted" in (await jobs.job(held)).error
        assert (await jobs.running_job("tale")).id == mine

        # And a live holder in another process still wins against a third one.
        await jobs.finish_job(mine, "cancelled")
        holder, held = await hold_job(db, "C")
        try:
            with pytest.raises(JobConflict):
                await jobs.create_job("tale", "process B", {})
            assert await jobs.fail_interrupted() == []  # a restart beside a live holder leaves its job alone
        finally:
            holder.kill()
            await holder.wait()
