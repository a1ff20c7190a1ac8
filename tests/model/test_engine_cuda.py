"""The engine on CUDA: the same text as the CPU reference for the same seed, alone or in a crowd;
bf16 within a stated KL bound of fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.charset import encode
from model.checkpoint import Checkpoint
from model.engine import Engine
from model.fast_step import FastStep
from model.sample import SampleSettings, generate
from tests.model.stepping import TEXT, teacher_forced

pytestmark = pytest.mark.cuda

SEEDS = 24
CHARS = 200
MIN_AGREEMENT = 0.9  # replies identical to the CPU's; the rest part ways at a float near-tie, reported below
BF16_MAX_KL = 1e-3  # nats per character, mean over real text


def settings(seed: int) -> SampleSettings:
    return SampleSettings(seed=seed, max_chars=CHARS, temperature=0.8)


def test_fp32_on_cuda_writes_what_generate_writes_on_cpu(trained, capsys):
    prime = "the cat "
    cpu = [generate(trained, [prime], settings(s))[0].text for s in range(SEEDS)]
    with Engine(Checkpoint(trained, trained.config), device="cuda", max_batch=32) as eng:
        assert eng.device.type == "cuda" and eng.precision == "fp32"
        gpu = [eng.submit(prime, settings(s)).result(timeout=120).text for s in range(SEEDS)]
    same = sum(a == b for a, b in zip(cpu, gpu, strict=True))
    with capsys.disabled():
        print(f"\nCUDA fp32 engine vs CPU generate: {same}/{SEEDS} replies identical ({CHARS} chars each)")
    assert same >= MIN_AGREEMENT * SEEDS
    assert all(len(t) == CHARS for t in gpu)


def test_on_cuda_a_reply_is_the_same_alone_and_in_a_crowd(trained):
    with Engine(Checkpoint(trained, trained.config), device="cuda", max_batch=32) as eng:
        alone = [eng.submit("the ", settings(s)).result(timeout=120).text for s in range(8)]
        crowd = [eng.submit("the ", settings(s)) for s in range(8)]
        crowd += [eng.submit("a dog ", settings(100 + s)) for s in range(24)]
        assert [f.result(timeout=120).text for f in crowd[:8]] == alone


def test_bf16_on_cuda_stays_within_its_kl_bound(trained):
    codes = encode(TEXT[:400])
    with torch.no_grad():
        ref = F.log_softmax(trained(codes.view(1, -1))[0][0].float(), -1)
    gpu = trained.__class__(trained.config)
    gpu.load_state_dict(trained.state_dict())
    fast = FastStep(gpu.cuda().eval(), 1, device="cuda", precision="bf16")
    assert fast.precision == "bf16"
    got = F.log_softmax(teacher_forced(fast, [TEXT[:400]])[:, 0], -1)
    # logits after each character predict the next one; the reference's row t is the same prediction
    kl = (ref.exp() * (ref - got)).sum(-1).clamp_min(0)
    assert kl.mean().item() <= BF16_MAX_KL, kl.mean().item()
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean().item() >= 0.97
