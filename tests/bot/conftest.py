"""Fixtures for the bot's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator:
    """The real bot, with tiny random models and a fresh database, connected to a fake Discord (e2e tests)."""
    from tests.bot.e2e_bot import bot_on_fake

    async with bot_on_fake(tmp_path) as running:
        yield running
