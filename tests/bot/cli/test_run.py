"""``charbot run`` as a process: connects, answers, and on SIGTERM/Ctrl-C leaves no reply half-written.

The process talks to the fake Discord on 127.0.0.1 through the documented CHARBOT_DISCORD_API and
CHARBOT_DISCORD_GATEWAY settings, exactly as a deployment talks to Discord.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.bench.fake_discord import FakeDiscord
from bot.core.render import CUT_SHORT
from tests.helpers import start_bot

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_a_signal_stops_the_bot_cleanly_and_no_reply_is_left_unfinished(tmp_path, tiny_checkpoint_dir, sig):
    async with FakeDiscord(interaction_deadline_s=30.0) as fake:
        bot = await start_bot(fake, tmp_path, tiny_checkpoint_dir, CHARBOT_SHUTDOWN_GRACE="0")
        try:
            await fake.wait_ready(timeout=60)
            inter = await fake.slash("novel", {"prompt": "Anna looked at him", "length": 1500})
            await inter.wait_callback(timeout=30)
            bot.send_signal(sig)
            out, err = await asyncio.wait_for(bot.communicate(), 60)
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
    log = err.decode()
    assert bot.returncode == 0, log[-2000:]
    assert "shutting down" in log and "stopped" in log
    assert fake.token not in log and fake.token not in out.decode()
    final = inter.original["content"]
    assert final.startswith("**Anna looked at him**")
    assert final.endswith(CUT_SHORT) or not final.endswith(" \u2026"), "the reply was left looking unfinished"


async def test_a_rejected_token_is_one_line(tmp_path, tiny_checkpoint_dir):
    wrong = "c29tZW9uZS1lbHNlcy10b2tlbg.AAAAAA.bm90LXRoZS10b2tlbi10aGUtYm90LWhhcw"
    async with FakeDiscord() as fake:
        assert fake.token != wrong
        bot = await start_bot(fake, tmp_path, tiny_checkpoint_dir, token=wrong)
        _out, err = await asyncio.wait_for(bot.communicate(), 60)
    last = err.decode().strip().splitlines()[-1]
    assert bot.returncode == 2
    assert last.startswith("charbot run: error: Discord rejected DISCORD_TOKEN")
    assert "Traceback" not in err.decode() and wrong not in err.decode()


async def test_sync_publishes_the_commands_globally_with_their_options_and_admin_defaults():
    from bot.config import load_config
    from bot.discord_app.serve import sync_commands

    async with FakeDiscord() as fake:
        config = load_config(None, {"DISCORD_TOKEN": fake.token, "CHARBOT_DISCORD_API": fake.api_base,
                                    "CHARBOT_DISCORD_GATEWAY": fake.gateway_url, "CHARBOT_MAX_LENGTH": "1200"})
        names = await sync_commands(config)
        published = {c["name"]: c for c in fake.commands[None]}
    assert set(names) == set(published)
    assert {"tale", "faq", "novel", "temp", "model", "help", "contribute", "forget", "optout", "listen",
            "unlisten"} <= set(names)
    options = {o["name"]: o for o in published["faq"]["options"]}
    assert set(options) == {"question", "length", "temperature"} and options["question"]["required"]
    assert options["length"]["max_value"] == 1200 and not options["length"].get("required")
    assert next(o["name"] for o in published["tale"]["options"]) == "prompt"
    manage_guild = str(1 << 5)
    for admin_only in ("listen", "unlisten"):
        assert published[admin_only]["default_member_permissions"] == manage_guild
    assert published["tale"].get("default_member_permissions") is None
    assert [c["name"] for c in published["contribute"]["options"][0]["choices"]] == ["tale", "faq", "novel"]


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder charbot may not create files in (chmod for ordinary users; /proc where tests run as root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/proc/self").is_dir():
        return Path("/proc")
    pytest.skip("no folder here is unwritable for root")


@pytest.mark.parametrize("where", ["unwritable folder", "a folder named like the file"])
async def test_a_database_that_cannot_be_created_stops_the_start_with_one_line(tmp_path, tiny_checkpoint_dir, where):
    if where == "unwritable folder":
        db = _unwritable_folder(tmp_path) / "charbot.db"
    else:
        db = tmp_path / "charbot.db"
        db.mkdir()
    async with FakeDiscord() as fake:
        bot = await start_bot(fake, tmp_path, tiny_checkpoint_dir, CHARBOT_DB=str(db))
        _out, err = await asyncio.wait_for(bot.communicate(), 60)
    log = err.decode()
    assert bot.returncode == 2, log[-2000:]
    assert log.strip().splitlines()[-1].startswith(f"charbot run: error: {db}: cannot open the database"), log[-2000:]
    assert "Traceback" not in log and "Event loop is closed" not in log, log[-3000:]
    assert not db.is_file()
