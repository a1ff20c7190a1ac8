"""The whole bot against the fake Discord with its models on the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bot.discord_app.test_client import check_heartbeats_flow_during_a_long_reply

pytestmark = pytest.mark.cuda


async def test_with_models_on_the_gpu_heartbeats_keep_flowing_while_a_reply_is_written(tmp_path: Path) -> None:
    await check_heartbeats_flow_during_a_long_reply(tmp_path, device="cuda")
