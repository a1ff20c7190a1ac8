"""Reply quality: what a person reads, measured on a fixed set of prompts through the bot's reply path.

Every reply goes through :class:`bot.core.replies.ReplyService` with the served checkpoints, so the
figures are those of what the bot posts. Per corpus and per candidate count (n = 1, and the
bot's default, which falls under load): the share of invented words (:mod:`bot.core.words`), of
replies that end a sentence, for faq the share of answers sharing a content word with the
question (four or more letters, not a stop word: :func:`bot.core.score.content_words`) and of
answers showing their source; mean posted length; reply latency p50/p95 alone (one reply at
a time) and with :data:`CROWD` replies at once, with the aggregate posted characters per
second and the event loop's lag p99 during the crowd.

The replies are served at the bot's default precision (``auto``: see :mod:`model.precision`);
the replies alone are then drawn again, same prompts and seeds, at fp32, so the invented-word
rate at the default can be set beside the reference's (issue 14: at most 0.1 percentage
points worse).

The prompts are written the way people type them: lower case, no full stop, a question mark
or none.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.bench.concurrent import _ticker
from bot.bench.stats import percentile
from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, ReplyUpdate, make_request
from bot.core.score import content_words
from bot.core.words import lexicon, words
from model.sample import ends_sentence

PROMPTS: dict[str, tuple[str, ...]] = {
    "tale": (
        "Once upon a time there was a little mermaid",
        "tell me a story about a brave tin soldier",
        "the old lighthouse",
        "a story about the moon",
        "There was once a poor shoemaker who",
        "the snow queen",
        "In a little town by the sea lived a girl who",
        "write a tale about a clever fox",
        "The king had three daughters",
        "the ugly duckling",
    ),
    "novel": (
        "Anna looked at him",
        "Levin went out into the fields",
        "It was late when Vronsky came home",
        "Kitty could not sleep that night",
        "The ball was over and",
        "Stepan Arkadyevitch smiled",
        "she said nothing for a long time",
        "The train stopped at the station",
        "Dolly was sitting with the children",
        "He wanted to tell her everything",
    ),
    "faq": (
        "do i need to wear a mask on campus",
        "where can I get tested?",
        "how do I upload my vaccination record",
        "what happens if i test positive",
        "can visitors come to campus?",
        "what is the safer badgers app",
        "what if I miss my testing window",
        "how often do students have to test",
        "Do I need to quarantine after travel?",
        "is testing free for employees",
    ),
}
SEEDS = (1, 2, 3)
CROWD = 32


@dataclass
class QualityConfig:
    """What to measure; ``quick`` keeps two prompts and one seed per corpus and a crowd of 4."""

    corpora: tuple[str, ...] = ("tale", "novel", "faq")
    checkpoint_dir: Path | None = None
    length: int = 400
    seeds: tuple[int, ...] = SEEDS
    crowd: int = CROWD
    quick: bool = False
    candidates: tuple[int | None, ...] = (1, None)  # None: the bot's default n (adapting to load)
    precision: str = "auto"  # what the replies are served at: the bot's default
    reference: str | None = "fp32"  # the replies alone drawn again at this precision, to compare (None: not)
    prompts: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PROMPTS))

    def shrink(self) -> None:
        self.seeds = self.seeds[:1]
        self.crowd = min(self.crowd, 4)
        self.length = min(self.length, 120)
        self.prompts = {c: p[:2] for c, p in self.prompts.items()}


def generated_part(update: ReplyUpdate) -> str:
    """The generated text as posted (without the prompt or the quoted source)."""
    return update.generation.text.strip() if update.generation else ""


def reply_facts(corpus: str, prompt: str, update: ReplyUpdate) -> dict:
    """What a reader would notice about one reply."""
    text = generated_part(update)
    ws = words(text)
    invented = lexicon(corpus).invented(text)
    facts = {"chars": len(text), "words": len(ws), "invented": len(invented), "invented_words": invented,
             "clean": bool(text) and ends_sentence(text), "candidates": getattr(update, "candidates", 1)}
    if corpus == "faq":
        facts["on_topic"] = bool(content_words(text) & content_words(prompt))
        facts["source_shown"] = "From the FAQ" in update.text
    return facts


def _request(corpus: str, prompt: str, limits: Limits, length: int, seed: int, n: int | None):
    if "n" in inspect.signature(make_request).parameters:  # so the same file measures a tree without best-of-n
        return make_request(corpus, prompt, limits, length=length, seed=seed, n=n)
    return make_request(corpus, prompt, limits, length=length, seed=seed)


async def _alone(service: ReplyService, corpus: str, cfg: QualityConfig, n: int | None) -> tuple[list, list]:
    facts, latencies = [], []
    for prompt in cfg.prompts[corpus]:
        for seed in cfg.seeds:
            request = _request(corpus, prompt, service.limits, cfg.length, seed, n)
            t0 = time.perf_counter()
            update = await service.reply(request)
            latencies.append(time.perf_counter() - t0)
            facts.append(reply_facts(corpus, prompt, update))
    return facts, latencies


async def _crowd(service: ReplyService, corpus: str, cfg: QualityConfig, n: int | None) -> dict:
    prompts = cfg.prompts[corpus]
    requests = [_request(corpus, prompts[i % len(prompts)], service.limits, cfg.length, 1000 + i, n)
                for i in range(cfg.crowd)]
    stop = asyncio.Event()
    lags: list[float] = []
    ticker = asyncio.create_task(_ticker(stop, lags))
    start = time.perf_counter()
    latencies: list[float] = []

    async def one(request) -> ReplyUpdate:
        update = await service.reply(request)
        latencies.append(time.perf_counter() - start)
        return update

    updates = await asyncio.gather(*(one(r) for r in requests))
    wall = time.perf_counter() - start
    stop.set()
    await ticker
    chars = sum(len(generated_part(u)) for u in updates)
    return {"replies": len(updates), "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95), "posted_chars_per_s": chars / wall,
            "loop_lag_p99_ms": 1000 * percentile(lags, 99),
            "mean_candidates": sum(getattr(u, "candidates", 1) for u in updates) / len(updates)}


def summarise(corpus: str, facts: list[dict]) -> dict:
    words_total = sum(f["words"] for f in facts)
    row = {
        "replies": len(facts),
        "words": words_total,
        "invented_rate": sum(f["invented"] for f in facts) / words_total if words_total else 0.0,
        "clean_rate": sum(f["clean"] for f in facts) / len(facts) if facts else 0.0,
        "mean_chars": sum(f["chars"] for f in facts) / len(facts) if facts else 0.0,
        "mean_candidates": sum(f["candidates"] for f in facts) / len(facts) if facts else 0.0,
        "invented_examples": sorted({w for f in facts for w in f["invented_words"]})[:12],
    }
    if corpus == "faq":
        row["topic_rate"] = sum(f["on_topic"] for f in facts) / len(facts) if facts else 0.0
        row["source_rate"] = sum(f["source_shown"] for f in facts) / len(facts) if facts else 0.0
    return row


def measure(cfg: QualityConfig, say: Callable[[str], None] = print) -> list[dict]:
    """One row per corpus and candidate setting (see the module docstring)."""
    if cfg.quick:
        cfg.shrink()
    rows = []
    limits = Limits(cooldown_s=0.0, max_pending=max(64, cfg.crowd))  # the bot's own edit interval
    with Models.load(list(cfg.corpora), cfg.checkpoint_dir, device="cpu", precision=cfg.precision) as models:
        for corpus in cfg.corpora:
            for n in cfg.candidates:
                label = "default" if n is None else str(n)
                say(f"quality: {corpus}, n = {label}")

                async def run(corpus: str = corpus, n: int | None = n) -> tuple[list, list, dict]:
                    service = ReplyService(models, limits)  # made inside the loop it runs on
                    await service.reply(_request(corpus, cfg.prompts[corpus][0], limits, cfg.length, 10**6, n))
                    facts, alone = await _alone(service, corpus, cfg, n)
                    return facts, alone, await _crowd(service, corpus, cfg, n)

                facts, alone, crowd = asyncio.run(run())
                rows.append({"corpus": corpus, "n": label, "precision": models.engines[corpus].precision,
                             "length": cfg.length, **summarise(corpus, facts),
                             "alone_p50_s": percentile(alone, 50), "alone_p95_s": percentile(alone, 95),
                             "crowd": crowd})
    if cfg.reference is not None:
        _beside_reference(rows, cfg, limits, say)
    return rows


def _beside_reference(rows: list[dict], cfg: QualityConfig, limits: Limits, say: Callable[[str], None]) -> None:
    """Draw the replies alone again at ``cfg.reference``; each row gains ``reference`` with its rates.

    Same prompts and seeds, so the two rates differ only by what the precision changes. A row
    already served at the reference precision is its own reference (nothing is drawn twice).
    """
    reference = cfg.reference
    todo = [r for r in rows if r["precision"] != reference]
    for r in rows:
        if r["precision"] == reference:
            r["reference"] = {"precision": reference, "words": r["words"], "invented_rate": r["invented_rate"],
                              "clean_rate": r["clean_rate"]}
    if todo:
        corpora = sorted({r["corpus"] for r in todo}, key=list(cfg.corpora).index)
        with Models.load(corpora, cfg.checkpoint_dir, device="cpu", precision=reference) as models:
            for r in todo:
                n = None if r["n"] == "default" else int(r["n"])
                say(f"quality: {r['corpus']}, n = {r['n']}, at {reference}")

                async def run(corpus: str = r["corpus"], n: int | None = n) -> list:
                    return (await _alone(ReplyService(models, limits), corpus, cfg, n))[0]

                got = summarise(r["corpus"], asyncio.run(run()))
                r["reference"] = {"precision": reference, "words": got["words"],
                                  "invented_rate": got["invented_rate"], "clean_rate": got["clean_rate"]}
    for r in rows:
        r["invented_vs_reference_pp"] = 100 * (r["invented_rate"] - r["reference"]["invented_rate"])
