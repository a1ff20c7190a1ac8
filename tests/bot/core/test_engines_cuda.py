"""The bot's models on CUDA: loaded where CHARBOT_DEVICE says, replies through the reply service,
and a hot swap to a version a fine-tuning job trained on the GPU."""

from __future__ import annotations

import asyncio

import pytest
import torch

from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, make_request
from model.checkpoint import load_checkpoint
from tests.bot.jobs.test_manager import GUILD, QUICK, Env
from tests.helpers import contributed_texts

pytestmark = pytest.mark.cuda

LIMITS = Limits(cooldown_s=0, edit_interval_s=0)


async def reply(models: Models, corpus: str, prompt: str, seed: int = 3) -> str:
    request = make_request(corpus, prompt, LIMITS, seed=seed, length=60)
    return (await ReplyService(models, LIMITS).reply(request)).text


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_models_load_on_the_gpu_and_reply_as_on_the_cpu(tiny_checkpoint_dir, device):
    with Models.load(["tale", "faq"], tiny_checkpoint_dir, device=device) as gpu:
        assert gpu.info["tale"].device == "cuda:0" and gpu.engines["tale"].device == torch.device("cuda", 0)
        on_gpu = asyncio.run(reply(gpu, "tale", "Once upon a time"))
        faq_gpu = asyncio.run(reply(gpu, "faq", "Do I need a mask?"))
    with Models.load(["tale", "faq"], tiny_checkpoint_dir, device="cpu") as cpu:
        assert asyncio.run(reply(cpu, "tale", "Once upon a time")) == on_gpu
        assert asyncio.run(reply(cpu, "faq", "Do I need a mask?")) == faq_gpu


class GpuEnv(Env):
    """The fine-tuning test bench with the served models and the job both on the GPU."""

    async def open(self, config: dict = QUICK, command: tuple[str, ...] | None = None, **settings):
        manager = await super().open({**config, "device": "cuda"}, command, **settings)
        self.models.close()
        self.models = Models.load(["tale"], self.base.parent, device="cuda", max_batch=4, max_queue=8)
        return manager


async def test_a_job_trained_on_the_gpu_is_hot_swapped_into_the_gpu_engine(tmp_path, base_checkpoint):
    env = GpuEnv(tmp_path, base_checkpoint)
    try:
        manager = await env.open()
        await env.contribute(contributed_texts())
        before = env.sample()
        outcome = await manager.wait(await manager.start("tale", "cli:op", minutes=2, guild_id=GUILD))
        assert outcome.state == "done", outcome.error
        installed = env.models.info["tale"]
        assert installed.path.endswith("v0001.safetensors") and installed.device == "cuda:0"
        assert load_checkpoint(installed.path).info["device"] == torch.cuda.get_device_name(0)  # trained there
        assert env.sample() != before
    finally:
        await env.close()
