"""The fused step on CUDA: graph replay is the eager step bit for bit, and a failed capture changes nothing."""

from __future__ import annotations

import pytest
import torch

from model import fast_step as fast_step_mod
from model.charset import encode
from model.fast_step import FastStep
from model.network import CharLSTM
from tests.model.stepping import TEXT, teacher_forced

pytestmark = pytest.mark.cuda

TEXTS = [TEXT[i : i + 40] for i in (0, 3, 8, 11)]


def on_cuda(model: CharLSTM) -> CharLSTM:
    copy = CharLSTM(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.cuda().eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_equals_the_eager_step_bit_for_bit(trained, precision):
    gpu = on_cuda(trained)
    graphed = FastStep(gpu, 8, device="cuda", precision=precision, cuda_graphs=True)
    eager = FastStep(gpu, 8, device="cuda", precision=precision, cuda_graphs=False)
    got, want = teacher_forced(graphed, TEXTS), teacher_forced(eager, TEXTS)
    assert graphed._graphs, "no CUDA graph was captured"
    assert torch.equal(got, want)
    assert torch.equal(graphed.hs, eager.hs) and torch.equal(graphed.cs, eager.cs)


def test_the_cuda_step_matches_the_cpu_step(trained):
    cpu = teacher_forced(FastStep(trained, 8), TEXTS)
    gpu = teacher_forced(FastStep(on_cuda(trained), 8, device="cuda"), TEXTS)
    assert (torch.softmax(gpu, -1) - torch.softmax(cpu, -1)).abs().max().item() < 1e-4


def test_a_failed_capture_falls_back_to_eager_with_the_rows_state_intact(trained, monkeypatch, caplog):
    gpu = on_cuda(trained)
    eager = FastStep(gpu, 8, device="cuda", cuda_graphs=False)
    broken = FastStep(gpu, 8, device="cuda", cuda_graphs=True)
    half = len(TEXTS[0]) // 2
    for fast in (eager, broken):  # both start from the same half-read state, stepped eagerly
        fast.use_graphs = False
        teacher_forced(fast, [t[:half] for t in TEXTS])
    broken.use_graphs = True

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused (simulated)")

    monkeypatch.setattr(fast_step_mod.torch.cuda, "graph", refuse)
    for fast in (eager, broken):  # continue from that state (teacher_forced would reset the rows)
        fast.codes[: len(TEXTS)] = [int(encode(t[half])[0]) for t in TEXTS]
    want = eager.step(len(TEXTS)).clone()
    got = broken.step(len(TEXTS)).clone()
    assert not broken.use_graphs and "capture failed" in caplog.text
    assert torch.equal(got, want)
    assert torch.equal(broken.hs, eager.hs) and torch.equal(broken.cs, eager.cs)
