"""Killing the whole bot (SIGKILL of ``charbot run``) in the middle of a fine-tune, then starting it again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from bot.bench.fake_discord import FakeDiscord, RecordedRequest
from bot.core.render import WORKING
from tests.helpers import contributed_texts, eventually, start_bot

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it


def db_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def finished(request: RecordedRequest) -> bool:
    """The edit that completes a reply (unfinished ones end with the working marker)."""
    return request.method == "PATCH" and not request.json["content"].endswith(WORKING)


def posts(fake: FakeDiscord) -> list[str]:
    return [m["content"] for ms in fake.channel_messages.values() for m in ms.values()]


async def test_a_bot_killed_mid_job_serves_the_old_model_and_after_restart_the_job_is_failed_and_the_next_works(
    tmp_path, tiny_checkpoint_dir
):
    from bot.store import open_store

    db = tmp_path / "bot.db"
    async with await open_store(db) as store:
        for text in contributed_texts(n=12):
            await store.add_contribution(1, 2, 3, "tale", text, "modal")
    env = {"CHARBOT_FINETUNE_NICE": "1", "CHARBOT_FINETUNE_STATUS_INTERVAL": "1", "CHARBOT_SHUTDOWN_GRACE": "5"}
    async with FakeDiscord(interaction_deadline_s=30.0) as fake:
        bot = await start_bot(fake, tmp_path, tiny_checkpoint_dir, **env)
        try:
            await fake.wait_ready(timeout=60)
            before = await fake.slash("tale", {"prompt": "The king", "temperature": 0, "length": 60})
            await before.wait_for(finished, timeout=30)
            base_reply = before.original["content"]
            await fake.slash("finetune start", {"corpus": "tale", "minutes": 5}, user=fake.admin)
            progress = await eventually(lambda: db_rows(db, "SELECT progress FROM jobs WHERE progress LIKE '%step%'"),
                                        timeout=120, interval=0.1, what="the job to be training")
            child = json.loads(progress[0][0])["pid"]
            bot.send_signal(signal.SIGKILL)
            await bot.wait()
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
        await eventually(lambda: not _alive(child), timeout=60, interval=0.1,
                         what="the training process to stop once its bot was gone")
        assert db_rows(db, "SELECT state FROM jobs") == [("running",)]  # nobody could record the end
        assert len(db_rows(db, "SELECT id FROM contributions")) == 12
        assert db_rows(db, "SELECT COUNT(*) FROM checkpoint_versions") == [(0,)]

        first_session = fake.session_id
        bot = await start_bot(fake, tmp_path, tiny_checkpoint_dir, **env)
        try:
            await fake.wait_until(lambda: fake.session_id not in (None, first_session), 60, "the restarted bot")
            await fake.wait_ready(timeout=60)
            state, error = db_rows(db, "SELECT state, error FROM jobs WHERE id = 1")[0]
            assert state == "failed" and "interrupted" in error
            again = await fake.slash("tale", {"prompt": "The king", "temperature": 0, "length": 60})
            await again.wait_for(finished, timeout=30)
            assert again.original["content"] == base_reply  # still the old model
            # forced: whether the corpus's own text is on this machine for the guard is not what this tests
            await fake.slash("finetune start", {"corpus": "tale", "minutes": 0.5, "force": True}, user=fake.admin)
            await fake.wait_until(lambda: any("now serving v1" in p for p in posts(fake)), 120, "the next job's result")
            bot.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bot.communicate(), 60)
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
    assert db_rows(db, "SELECT id, state FROM jobs") == [(1, "failed"), (2, "done")]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status and os.path.exists(f"/proc/{pid}")
