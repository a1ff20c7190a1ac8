"""`charbot run` as a person starts it: a separate process configured by its environment, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.bot.e2e_bot import write_checkpoints
from tests.bot.fake_discord import FakeDiscord

WORKING = " \u2026"
STOP_WITHIN_S = 10  # generous: the bot stops in well under a second when idle


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into.extend(chunk)


async def test_charbot_run_serves_a_story_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    async with FakeDiscord(interaction_deadline_s=10.0) as fake:
        env = {
            **os.environ,
            "DISCORD_TOKEN": fake.token,
            "CHARBOT_DB": str(tmp_path / "charbot.db"),
            "CHARBOT_DEV_GUILD": fake.guild_id,
            "CHARBOT_CHECKPOINT_DIR": str(checkpoints["tale"].parent),
            "CHARBOT_DEVICE": "cpu",
            "CHARBOT_DISCORD_API": fake.api_base,
            "CHARBOT_DISCORD_GATEWAY": fake.gateway_url,
            "CHARBOT_LOG_LEVEL": "DEBUG",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from charbot.cli import main; raise SystemExit(main(['run']))",
            cwd=tmp_path,  # no .env here: the settings above are all it gets
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # Read the output as it comes, so a chatty bot never blocks on a full pipe.
        out, err = bytearray(), bytearray()
        readers = [
            asyncio.ensure_future(_drain(proc.stdout, out)),  # type: ignore[arg-type]
            asyncio.ensure_future(_drain(proc.stderr, err)),  # type: ignore[arg-type]
        ]
        try:
            ready = asyncio.ensure_future(fake.wait_ready(timeout=120))
            exited = asyncio.ensure_future(proc.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                ready.cancel()
                await asyncio.gather(*readers)
                raise AssertionError(f"charbot run exited with {proc.returncode}:\n{err.decode()}")
            await ready

            inter = await fake.slash("tale", {"prompt": "Once upon a time"})
            final = await inter.wait_for(
                lambda r: r.method == "PATCH" and not r.json["content"].endswith(WORKING), timeout=60
            )
            assert final.status == 200
            assert final.json["content"].startswith("**Once upon a time**")

            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_WITHIN_S)
            except asyncio.TimeoutError:
                raise AssertionError(
                    f"charbot run did not exit within {STOP_WITHIN_S}s of SIGTERM:\n{err.decode()[-3000:]}"
                ) from None
            await asyncio.gather(*readers)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for reader in readers:
                reader.cancel()
        log = err.decode()
        assert proc.returncode == 0, log
        assert "stopped" in log
        assert fake.token not in log + out.decode(), "the token was printed"
        assert not fake.unknown_routes
