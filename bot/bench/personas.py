"""Servers' personas under the bench: how a persona reads, and what many of them cost one process.

Two measurements, both through the bot's own reply path (:class:`bot.core.replies.ReplyService`,
personas loaded on demand by :meth:`~bot.core.replies.ReplyService.ready`):

- **quality**: a persona's replies to fixed prompts, scored as the quality section scores the
  built-in corpora (clean endings, invented words against the persona's own text and English);
- **many**: ``servers`` x ``per_server`` personas in one process. Every persona gets its own
  checkpoint file (copies of one trained persona: memory and speed do not depend on the weights'
  values), all are loaded, and the report gives the resident memory each adds, the latency of a
  reply from a loaded persona (p50/p95) and of one from a persona the least-recently-used bound
  had unloaded (its load included), which is what a member waits for in the worst case.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.bench.quality import PROMPTS, generated_part
from bot.bench.stats import percentile
from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, make_request
from bot.core.words import Lexicon, words
from corpora.voices import Style, add_persona, drop_persona, persona_corpus, persona_key
from model.sample import ends_sentence
from model.step_threads import serve_threads

STYLE_PROMPTS: dict[str, str] = {"story": "tale", "prose": "novel", "faq": "faq"}


@dataclass
class PersonaBenchConfig:
    """What to measure: the persona checkpoint, the text it learned, and how many personas to load."""

    checkpoint: Path
    text_file: Path | None = None  # the persona's text: its lexicon and, for faq, its passages
    style: Style = "story"
    servers: int = 4
    per_server: int = 5
    max_loaded: int = 8  # the bound the cold reply is measured under
    length: int = 400
    seeds: tuple[int, ...] = (1, 2, 3)
    prompts: tuple[str, ...] = field(default_factory=tuple)  # default: the built-in corpus's of the style
    precision: str = "auto"
    quick: bool = False

    def shrink(self) -> None:
        self.seeds = self.seeds[:1]
        self.length = min(self.length, 120)
        self.servers, self.per_server = min(self.servers, 2), min(self.per_server, 2)
        self.max_loaded = min(self.max_loaded, 2)


def rss_mb() -> float:
    """This process's resident memory in MB (Linux; 0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _install(folder: Path, key: str, checkpoint: Path, text: str) -> Path:
    """A persona's own checkpoint file with its learned text beside it, as a finished job leaves it."""
    path = folder / key / "v0001.safetensors"
    path.parent.mkdir(parents=True)
    shutil.copyfile(checkpoint, path)
    if text:
        path.with_name("v0001.learned.json").write_text(json.dumps([{"id": 0, "text": text}]))
    return path


def _facts(prompt: str, update, lexicon: Lexicon) -> dict:
    text = generated_part(update)
    return {"chars": len(text), "words": len(words(text)), "invented": len(lexicon.invented(text)),
            "invented_words": lexicon.invented(text), "clean": bool(text) and ends_sentence(text)}


async def _quality(service: ReplyService, key: str, cfg: PersonaBenchConfig, guild: int) -> tuple[list, list]:
    facts, latencies = [], []
    for prompt in cfg.prompts:
        for seed in cfg.seeds:
            request = make_request(key, prompt, service.limits, length=cfg.length, seed=seed, guild=guild)
            t0 = time.perf_counter()
            update = await service.reply(request)
            latencies.append(time.perf_counter() - t0)
            facts.append(_facts(prompt, update, service.models.lexicons[key]))
    return facts, latencies


async def _many(service: ReplyService, keys: list[tuple[int, str]], cfg: PersonaBenchConfig) -> dict:
    prompt = cfg.prompts[0]
    base_mb = rss_mb()
    loads, warm = [], []
    for guild, key in keys:  # first reply of each: loads it
        t0 = time.perf_counter()
        await service.reply(make_request(key, prompt, service.limits, length=cfg.length, seed=1, guild=guild))
        loads.append(time.perf_counter() - t0)
    loaded_mb = rss_mb()
    for guild, key in keys:
        t0 = time.perf_counter()
        await service.reply(make_request(key, prompt, service.limits, length=cfg.length, seed=2, guild=guild))
        warm.append(time.perf_counter() - t0)
    service.models.max_personas = cfg.max_loaded
    service.models._evict()
    unloaded = [k for k in keys if k[1] not in service.models.engines]
    cold = []
    for guild, key in unloaded[: max(1, len(keys) // 4)]:
        t0 = time.perf_counter()
        await service.reply(make_request(key, prompt, service.limits, length=cfg.length, seed=3, guild=guild))
        cold.append(time.perf_counter() - t0)
    return {
        "personas": len(keys), "servers": cfg.servers, "rss_before_mb": base_mb, "rss_loaded_mb": loaded_mb,
        "mb_per_persona": (loaded_mb - base_mb) / len(keys), "first_reply_p50_s": percentile(loads, 50),
        "warm_reply_p50_s": percentile(warm, 50), "warm_reply_p95_s": percentile(warm, 95),
        "cold_after_unload_p50_s": percentile(cold, 50) if cold else None,
        "cold_after_unload_p95_s": percentile(cold, 95) if cold else None,
        "max_loaded": cfg.max_loaded, "rss_after_unload_mb": rss_mb(),
    }


def measure(cfg: PersonaBenchConfig, say: Callable[[str], None] = print) -> dict:
    """The persona's reply quality, then many personas in this process (see the module docstring)."""
    if cfg.quick:
        cfg.shrink()
    if not cfg.prompts:
        cfg.prompts = PROMPTS[STYLE_PROMPTS[cfg.style]]
    text = cfg.text_file.read_text(encoding="utf-8-sig") if cfg.text_file else ""
    keys = [(g, persona_key(g, f"bench{i}")) for g in range(1, cfg.servers + 1) for i in range(cfg.per_server)]
    limits = Limits(cooldown_s=0.0, max_pending=64)
    with tempfile.TemporaryDirectory(prefix="charbot-personas-") as tmp:
        paths = {key: _install(Path(tmp), key, cfg.checkpoint, text) for _, key in keys}
        for guild, key in keys:
            add_persona(persona_corpus(guild, key.split("-", 1)[1], cfg.style))
        serve_threads()  # as Models.load does: only engine workers own thread pools
        models = Models()
        models.precision = cfg.precision
        models.max_personas = len(keys)
        try:
            async def run() -> dict:
                service = ReplyService(models, limits)

                async def locate(key: str) -> Path:
                    return paths[key]

                service.locate = locate
                say(f"personas: quality of {cfg.checkpoint.name} as a {cfg.style} persona")
                facts, alone = await _quality(service, keys[0][1], cfg, keys[0][0])
                say(f"personas: {len(keys)} personas across {cfg.servers} servers in one process")
                return {"facts": facts, "alone": alone, "many": await _many(service, keys, cfg)}

            got = asyncio.run(run())
        finally:
            models.close(wait=False)
            for _, key in keys:
                drop_persona(key)
    facts = got["facts"]
    n_words = sum(f["words"] for f in facts)
    return {
        "checkpoint": str(cfg.checkpoint), "style": cfg.style, "length": cfg.length, "replies": len(facts),
        "clean_rate": sum(f["clean"] for f in facts) / len(facts),
        "invented_rate": sum(f["invented"] for f in facts) / n_words if n_words else 0.0,
        "invented_examples": sorted({w for f in facts for w in f["invented_words"]})[:12],
        "alone_p50_s": percentile(got["alone"], 50), "alone_p95_s": percentile(got["alone"], 95),
        "many": got["many"],
    }
