"""A ``charbot run`` process of its own, talking to a fake Discord: for the capacity bench and the tests.

The bot runs as operators run it (its own process, configured by environment variables), so what
is measured or tested includes its start, its event loop and its gateway connection, not an
in-process stand-in. The child imports this very checkout (``PYTHONPATH``), not whatever copy of
the project the virtual environment happens to have installed, so the code measured is the code
that asked for the measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.bench.fake_discord import FakeDiscord

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def start_bot(fake: FakeDiscord, tmp_path: Path, checkpoints: Path, token: str | None = None,
                    args: tuple[str, ...] = (), **extra: str) -> asyncio.subprocess.Process:
    """``charbot run [args]`` (as ``python -m bot run``) in its own process, talking to the fake Discord ``fake``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARBOT_", "DISCORD_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        DISCORD_TOKEN=token or fake.token, CHARBOT_DB=str(tmp_path / "bot.db"), CHARBOT_CHECKPOINT_DIR=str(checkpoints),
        CHARBOT_DEV_GUILD=fake.guild_id, CHARBOT_DEVICE="cpu", CHARBOT_DISCORD_API=fake.api_base,
        CHARBOT_DISCORD_GATEWAY=fake.gateway_url, CHARBOT_COOLDOWN="0",
    )
    env.update(extra)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", *args, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


class BotProcess:
    """A ``charbot run`` process whose log is read as it comes (a full pipe would stall the bot)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for a clean exit (killed if it does not come); returns the exit status."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._reader, 10)
        return int(self.proc.returncode)


def free_port() -> int:
    """A TCP port nobody listens on right now (for a child process's metrics server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
