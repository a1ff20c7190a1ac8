"""The classic notebook recipe as a baseline: find its script, run it, read its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corpora.paths import SHARED_ROOT

CLASSIC_SCRIPT = SHARED_ROOT / "baselines" / "classic_charrnn.py"


class BaselineError(RuntimeError):
    """The classic script could not be run or said nothing we can read."""


def find_script(explicit: str | Path | None = None) -> Path | None:
    """The classic script: the one given, else ``<project>/../shared/baselines/classic_charrnn.py``."""
    path = Path(explicit) if explicit else CLASSIC_SCRIPT
    return path if path.is_file() else None


def run_classic(script: Path, args: list[str], timeout_s: float, threads: int | None = None,
                device: str = "cpu") -> dict:
    """Run ``classic_charrnn.py ARGS`` with this Python; return its last JSON line as a dict.

    The script uses torch's default thread count, which follows ``OMP_NUM_THREADS``: that is
    how it gets the same number of threads as our side of the comparison. ``device="cuda"``
    runs it through :mod:`bot.bench.classic_on_gpu`.
    """
    if device == "cpu":
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "bot.bench.classic_on_gpu", str(script), *args]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise BaselineError(f"{' '.join(cmd)} ran over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise BaselineError(f"{script.name} {args[0]} failed (exit {done.returncode}): {tail}")
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise BaselineError(f"{script.name} {args[0]} printed no JSON line")


def classic_sample(script: Path, hidden: int, layers: int, vocab: int, chars: int, threads: int | None) -> dict:
    """chars/s and ms/char of one reply generated the classic way."""
    args = ["sample", "--hidden", str(hidden), "--layers", str(layers), "--vocab", str(vocab), "--chars", str(chars)]
    return run_classic(script, args, timeout_s=60 + chars * 0.2, threads=threads)


def classic_train(
    script: Path, text: Path, hidden: int, layers: int, seqs: int, steps: int, seconds: float, threads: int | None,
    device: str = "cpu",
) -> dict:
    """Training chars/s of the classic recipe for ``seconds``."""
    args = ["train", "--text", str(text), "--hidden", str(hidden), "--layers", str(layers),
            "--seqs", str(seqs), "--steps", str(steps), "--seconds", str(seconds)]
    return run_classic(script, args, timeout_s=120 + seconds * 3, threads=threads, device=device)
