"""``torchrun --nproc-per-node 2 -m bot train``: two gloo processes on the CPU learn together,
write one checkpoint, and resume; their step is the one a single process takes on the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, read_tensor_file
from model.train import RESUME_FORMAT, resume_path
from tests.helpers import made_up_text

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

SMALL = ["--hidden", "24", "--layers", "2", "--embed", "8", "--dropout", "0", "--batch-seqs", "8",
         "--batch-steps", "16", "--lr", "0.01", "--warmup", "3", "--eval-every", "10", "--threads", "1", "--quiet",
         "--precision", "fp32", "--device", "cpu"]  # gloo on the CPU, also on a machine with one GPU


def charbot_train(*args: str, processes: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    cmd = [*launcher, "-m", "bot", "train", *args] if processes > 1 else [sys.executable, "-m", "bot", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "text.txt"
    path.write_text(made_up_text(seed=3, sentences=400))
    return path


def test_two_processes_learn_write_one_checkpoint_and_resume(tmp_path, text):
    out = tmp_path / "ddp.safetensors"
    first = charbot_train(str(text), "--out", str(out), "--steps", "20", "--json", *SMALL)
    assert first.returncode == 0, first.stderr[-2000:]
    reports = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, first.stdout  # rank 0 speaks for the run
    assert reports[0]["steps"] == 20 and reports[0]["chars_seen"] == 20 * 8 * 16
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == [
        "ddp.resume.safetensors", "ddp.safetensors"]
    ck = load_checkpoint(out)
    assert ck.info["processes"] == 2
    history = json.loads(out.with_name("ddp.log.json").read_text())["history"]
    losses = [h["train_loss"] for h in history if h["train_loss"] is not None]
    assert losses[-1] < losses[0] - 0.5, losses  # it learns

    more = charbot_train(str(text), "--out", str(out), "--steps", "30", "--resume", "--json", "--quiet")
    assert more.returncode == 0, more.stderr[-2000:]
    assert json.loads(more.stdout.strip().splitlines()[-1])["steps"] == 30
    _, header = read_tensor_file(resume_path(out), expect_format=RESUME_FORMAT)
    assert header["step"] == 30 and header["processes"] == 2

    alone = charbot_train(str(text), "--out", str(out), "--steps", "40", "--resume", "--quiet", processes=1)
    assert alone.returncode != 0 and "saved by 2 training process(es)" in alone.stderr


def test_two_processes_take_the_step_one_process_takes_on_the_whole_batch(tmp_path, text):
    """Without dropout the only difference is the order of float additions in the gradient average."""
    pair, single = tmp_path / "pair.safetensors", tmp_path / "single.safetensors"
    for out, processes in ((pair, 2), (single, 1)):
        done = charbot_train(str(text), "--out", str(out), "--steps", "12", *SMALL, processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (read_tensor_file(resume_path(p), expect_format=RESUME_FORMAT)[0] for p in (pair, single))
    for key in [k for k in b if k.startswith("model.")]:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
    assert torch.allclose(a["hidden.h"], b["hidden.h"], atol=1e-5)  # all 8 rows, gathered in rank order


def test_a_batch_that_cannot_be_shared_is_refused_in_one_line(tmp_path, text):
    args = [a if a != "8" else "7" for a in SMALL]
    done = charbot_train(str(text), "--out", str(tmp_path / "x.safetensors"), "--steps", "2", *args)
    assert done.returncode != 0 and "multiple of 2" in done.stderr
