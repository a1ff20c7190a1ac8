"""Helpers the tests share (fixtures live in conftest.py files; these are plain functions).

One module, so no test module imports another test module. The bot-process helpers (``start_bot``,
``BotProcess``, ``free_port``) live in :mod:`bot.bench.bot_process`, which the capacity bench shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from bot.bench.bot_process import BotProcess, free_port, start_bot
from corpora import registry
from corpora.clean import clean_plain
from corpora.prompts import novel_prime
from corpora.registry import Corpus, Download

__all__ = ["BotProcess", "free_port", "start_bot"]  # re-exported: the tests import them from here

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


_HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE schema_version SET version = version")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("released", flush=True)
"""


class WriteLockHolder:
    """Another program holding a SQLite database's write lock (a second process, as in production)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def release(self) -> None:
        """Commit and end the other program's transaction; returns once the lock is gone."""
        if self.proc.returncode is None:
            self.proc.stdin.write(b"go\n")
            await self.proc.stdin.drain()
            assert (await asyncio.wait_for(self.proc.stdout.readline(), 30)).strip() == b"released"
            await asyncio.wait_for(self.proc.wait(), 30)


@contextlib.asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[WriteLockHolder]:
    """While inside, a second process holds ``path``'s write lock (it has written but not committed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLD_LOCK, str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    holder = WriteLockHolder(proc)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"locked", line
        yield holder
    finally:
        if proc.returncode is None:
            await holder.release()


# A made-up corpus registered for one test, so tests never need the real (large) corpora.


def made_up_text(seed: int = 0, sentences: int = 160) -> str:
    """A few kilobytes of small sentences in paragraphs: learnable in a few dozen tiny steps."""
    rng = random.Random(seed)
    who = ["the fox", "a little bird", "the old king", "the miller", "a tin soldier"]
    did = ["sang to", "ran from", "looked at", "spoke with", "dreamed of"]
    what = ["the moon", "a golden key", "the river", "the tall tower", "a green apple"]
    paragraphs, para = [], []
    for i in range(sentences):
        s = f"{rng.choice(who)} {rng.choice(did)} {rng.choice(what)}."
        para.append(s[0].upper() + s[1:])
        if i % 5 == 4:
            paragraphs.append(" ".join(para))
            para = []
    return "\r\n\r\n".join(paragraphs) + "\r\n"


@dataclass
class Mini:
    name: str
    corpus: Corpus
    path: Path
    raw: bytes
    data_dir: Path


def register_mini(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str = "mini", seed: int = 0,
                  write: bool = True, hide_shared: bool = True, text: str | None = None) -> Mini:
    """Register corpus ``name`` (a made-up text, or ``text``) with its sha256, in a data folder of its own.

    ``CHARBOT_DATA_DIR`` points at that folder and, with ``hide_shared``, the shared corpora
    folder at an empty one, so the test sees only what it made.
    """
    raw = (made_up_text(seed) if text is None else text).encode("ascii")
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    filename = f"{name}.txt"
    corpus = Corpus(
        name=name, title=f"A made-up corpus ({name})", filename=filename, source="made up for a test",
        downloads=(Download("mirror", f"http://127.0.0.1:9/{filename}", sha256=hashlib.sha256(raw).hexdigest()),),
        clean=clean_plain, description="Short made-up sentences", frame=novel_prime, stop=("\n\n",),
        example_prompt="The fox",
    )
    monkeypatch.setitem(registry.CORPORA, name, corpus)
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(data_dir))
    if hide_shared:
        empty = tmp_path / "no-shared"
        empty.mkdir(exist_ok=True)
        monkeypatch.setattr(registry, "SHARED_DIR", empty)
    path = data_dir / filename
    if write:
        path.write_bytes(raw)
    return Mini(name, corpus, path, raw, data_dir)


def train_tiny(name: str, out: Path, steps: int = 6, init_from: Path | None = None,
               val_fraction: float | None = None) -> Path:
    """A tiny model trained for a few steps on registered corpus (or mixture) ``name`` (about a second on CPU).

    ``val_fraction``: hold out this much instead of training's default.
    """
    from corpora.mixture import load_named
    from model.network import ModelConfig
    from model.train import TrainConfig, train

    cfg = TrainConfig(n_seqs=4, n_steps=16, max_steps=steps, eval_every=3, warmup_steps=2, patience=100,
                      device="cpu", seed=3)
    if val_fraction is not None:
        cfg = replace(cfg, val_fraction=val_fraction)
    model_cfg = ModelConfig(embed_size=8, hidden_size=24, n_layers=2, dropout=0.0)
    train(load_named(name), out, cfg, None if init_from else model_cfg, init_from=init_from, progress_bar=False)
    return out


def register_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Mini, Mini]:
    """Made-up ``tale`` and ``novel`` in place of the real ones, the parts of the ``base`` mixture.

    Two different texts, so a model trained on one has a worse loss on the other, and the base's
    figure on each part is a real comparison with that part's own checkpoint.
    """
    from corpora.mixture import GENERAL_BASE, MIXTURES

    tale = register_mini(monkeypatch, tmp_path, name="tale", seed=0)
    novel = register_mini(monkeypatch, tmp_path, name="novel", seed=1)
    monkeypatch.setitem(MIXTURES, GENERAL_BASE, ("tale", "novel"))
    return tale, novel


# A stand-in for the fine-tuning child (``FinetuneSettings.command``): it reports as the real one does,
# leaves the base weights as its result and says its held-out loss fell 2.0 -> AFTER (a persona passes
# the guard with that), so a job takes a Python start-up, not a training run. It appends its corpus to
# runs.log beside GATE, then waits until GATE exists (a test holds a job "training" by not creating it)
# or it is cancelled. Run it as ``(sys.executable, "-c", FAKE_FINETUNE, GATE[, AFTER])``.
FAKE_FINETUNE = r"""
import json, os, shutil, sys, threading, time
from pathlib import Path

gate, jobdir = Path(sys.argv[1]), Path(sys.argv[-1])
after = float(sys.argv[2]) if len(sys.argv) > 3 else 1.5
spec = json.loads((jobdir / "spec.json").read_text())
texts = json.loads((jobdir / "texts.json").read_text())
stop = threading.Event()


def listen():
    for line in sys.stdin:
        if line.strip() == "cancel":
            break
    stop.set()  # cancelled, or the parent went away


def emit(event, **data):
    print(json.dumps({"event": event, **data}), flush=True)


threading.Thread(target=listen, daemon=True).start()
emit("started", pid=os.getpid())
with open(gate.parent / "runs.log", "a") as log:
    log.write(spec["corpus"] + "\n")
emit("phase", phase="training")
emit("progress", step=1, fraction=0.5, train_loss=2.0, val_loss=None, best_val_loss=None, chars_per_s=1000,
     elapsed_s=0.1, eta_s=1.0)
while not gate.exists():
    if stop.wait(0.02):
        emit("cancelled", reason="cancelled")
        sys.exit(3)
chars = sum(len(t) for t in texts)
shutil.copyfile(spec["base"], jobdir / "new.safetensors")
report = {"corpus": spec["corpus"], "base": spec["base"], "out": str(jobdir / "new.safetensors"),
          "contributed_chars": chars, "train_chars": chars - chars // 10, "heldout_chars": chars // 10,
          "corpus_heldout_chars": 0, "corpus_note": "not a registered corpus",
          "before": {"contributed": 2.0, "corpus": None}, "after": {"contributed": after, "corpus": None},
          "steps": 3, "stopped": "early-stop", "seconds": 0.1}
emit("done", report=report)
"""


def fake_finetune(gate: Path, after: float | None = None) -> tuple[str, ...]:
    """The ``FinetuneSettings.command`` that runs :data:`FAKE_FINETUNE` held at ``gate``."""
    return (sys.executable, "-c", FAKE_FINETUNE, str(gate), *([] if after is None else [str(after)]))


def fake_runs(gate: Path) -> list[str]:
    """The corpora :data:`FAKE_FINETUNE` jobs held at ``gate`` ran for, in the order they started."""
    log = gate.parent / "runs.log"
    return log.read_text().split() if log.exists() else []
