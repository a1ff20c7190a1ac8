"""Many replies at once through the bot's reply path, with the event loop's responsiveness.

Replies go through :class:`bot.core.replies.ReplyService` (what the Discord cog and
``charbot reply`` use), without Discord. A ticker task sleeps 5 ms at a time and records
how late it wakes: that lateness is what every other coroutine of the bot (Discord
heartbeats, other commands) would suffer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bot.bench.stats import percentile
from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyRequest, ReplyService
from model.checkpoint import Checkpoint
from model.engine import Engine
from model.precision import label

TICK_S = 0.005
REPLY_PATH = "bot.core.replies.ReplyService.reply"  # what the figures measure, recorded in each row

ReplyFn = Callable[[int], Awaitable[int]]  # seed -> characters generated


def _bot_reply_fn(engine: Engine, corpus: str, chars: int, n: int) -> ReplyFn:
    """One reply as the bot makes it, served by ``engine``, with limits that let ``n`` run at once."""
    models = Models()
    models.engines[corpus] = engine
    limits = Limits(max_pending=max(32, n), cooldown_s=0.0, max_length=max(chars, 400), default_length=min(chars, 400))
    service = ReplyService(models, limits)

    async def reply(seed: int) -> int:
        request = ReplyRequest(corpus=corpus, prompt="", temperature=0.8, length=chars, seed=seed)
        update = await service.reply(request)
        return len(update.generation.text)

    return reply


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - t0 - TICK_S)


async def _wave(reply: ReplyFn, n: int, seed0: int) -> tuple[list[float], int, float]:
    start = time.perf_counter()
    latencies: list[float] = []

    async def one(seed: int) -> int:
        got = await reply(seed)
        latencies.append(time.perf_counter() - start)
        return got

    counts = await asyncio.gather(*(one(seed0 + i) for i in range(n)))
    return latencies, sum(counts), time.perf_counter() - start


async def _measure(reply: ReplyFn, n: int, rounds: int) -> dict:
    await reply(10**6)  # warm-up: first step of each batch size, imports, thread start
    stop = asyncio.Event()
    lags: list[float] = []
    ticker = asyncio.create_task(_ticker(stop, lags))
    latencies: list[float] = []
    chars, wall = 0, 0.0
    for r in range(rounds):
        lat, got, seconds = await _wave(reply, n, seed0=1000 * r)
        latencies += lat
        chars += got
        wall += seconds
    stop.set()
    await ticker
    return {
        "replies": n, "rounds": rounds, "chars": chars, "seconds": wall,
        "aggregate_chars_per_s": chars / wall,
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
        "loop_lag_p99_ms": 1000 * percentile(lags, 99), "loop_lag_max_ms": 1000 * max(lags, default=0.0),
        "ticks": len(lags),
    }


def concurrent_replies(
    ck: Checkpoint,
    counts: tuple[int, ...] = (1, 8, 32),
    chars: int = 400,
    corpus: str = "tale",
    device: str = "cpu",
    precision: str = "fp32",
    threads: int | None = None,
    min_replies: int = 32,
    step: str | None = None,
) -> list[dict]:
    """One row per count: aggregate chars/s, reply latency p50/p99, event-loop lag p99.

    ``step`` is the engine's step path (see :class:`~model.engine.Engine`); rows name the
    precision with it (``"fp32 fused"``, :func:`model.precision.label`).
    """
    rows = []
    with Engine(ck, device=device, max_batch=max(64, max(counts)), max_queue=max(256, max(counts)),
                precision=precision, threads=threads, step=step) as engine:
        for n in counts:
            reply = _bot_reply_fn(engine, corpus, chars, n)
            rounds = max(1, min(3, -(-min_replies // n)))
            row = asyncio.run(_measure(reply, n, rounds))
            row.update({"path": REPLY_PATH, "precision": label(precision, engine.step_path), "device": device,
                        "chars_per_reply": chars})
            rows.append(row)
    return rows
