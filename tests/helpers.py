"""Helpers the tests share (fixtures live in conftest.py files; these are plain functions).

One module, so no test module imports another test module.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

WORDS = ("the old lighthouse keeper counted ships while gulls argued over herring on the pier "
         "and every evening his lamp swept the grey water").split()


def contributed_texts(n: int = 8, words: int = 60, seed: int = 0) -> list[str]:
    """Sentences in a vocabulary the base model never saw: learnable, but new to it."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(n)]


async def eventually(check: Callable[[], T | Awaitable[T]], *, what: str, timeout: float = 20.0,
                     interval: float = 0.01) -> T:
    """Poll ``check`` (plain or async) until it returns something truthy, and return that.

    For effects no event announces (a database row, a child process's progress); waits on the
    fake Discord use its own ``wait_until``, which wakes on each request instead of polling.
    On timeout the assertion names ``what`` was awaited.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def start_bot(fake, tmp_path, checkpoints, token: str | None = None, **extra: str) -> asyncio.subprocess.Process:
    """``charbot run`` (as ``python -m bot run``) in its own process, talking to the fake Discord ``fake``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARBOT_", "DISCORD_"))}
    env.update(
        DISCORD_TOKEN=token or fake.token, CHARBOT_DB=str(tmp_path / "bot.db"), CHARBOT_CHECKPOINT_DIR=str(checkpoints),
        CHARBOT_DEV_GUILD=fake.guild_id, CHARBOT_DEVICE="cpu", CHARBOT_DISCORD_API=fake.api_base,
        CHARBOT_DISCORD_GATEWAY=fake.gateway_url, CHARBOT_COOLDOWN="0", **extra,
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
