"""``charbot reply`` with the models on the GPU, set the way an operator sets it: CHARBOT_DEVICE."""

from __future__ import annotations

import pytest

from tests.bot.cli.test_chat import isolated, reply  # noqa: F401 (a fixture)

pytestmark = pytest.mark.cuda

PROMPT = "Once upon a time there was a king"


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_reply_on_the_gpu_posts_what_the_cpu_posts(capsys, monkeypatch, tiny_checkpoint_dir, device):
    ck = str(tiny_checkpoint_dir)
    monkeypatch.setenv("CHARBOT_DEVICE", device)
    code, on_gpu, err = reply(capsys, "tale", PROMPT, "--seed", "3", "--checkpoints", ck)
    assert code == 0 and err == "" and on_gpu.startswith(f"**{PROMPT}**")
    monkeypatch.setenv("CHARBOT_DEVICE", "cpu")
    assert reply(capsys, "tale", PROMPT, "--seed", "3", "--checkpoints", ck)[1] == on_gpu
