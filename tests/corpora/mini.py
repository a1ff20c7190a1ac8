"""A made-up corpus registered for one test, so tests never need the real (large) corpora."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from corpora import registry
from corpora.clean import clean_plain
from corpora.prompts import novel_prime
from corpora.registry import Corpus, Download


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
                  write: bool = True, hide_shared: bool = True) -> Mini:
    """Register corpus ``name`` (a made-up text) with its sha256, in a data folder of its own.

    ``CHARBOT_DATA_DIR`` points at that folder and, with ``hide_shared``, the shared corpora
    folder at an empty one, so the test sees only what it made.
    """
    raw = made_up_text(seed).encode("ascii")
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
    """A tiny model trained for a few steps on registered corpus ``name`` (about a second on CPU).

    ``val_fraction``: hold out this much instead of training's default.
    """
    from corpora.registry import load_corpus
    from model.network import ModelConfig
    from model.train import TrainConfig, train

    cfg = TrainConfig(n_seqs=4, n_steps=16, max_steps=steps, eval_every=3, warmup_steps=2, patience=100,
                      device="cpu", seed=3)
    if val_fraction is not None:
        cfg = replace(cfg, val_fraction=val_fraction)
    model_cfg = ModelConfig(embed_size=8, hidden_size=24, n_layers=2, dropout=0.0)
    train(load_corpus(name), out, cfg, None if init_from else model_cfg, init_from=init_from, progress_bar=False)
    return out
