"""Replies per second of one ``charbot run`` process at the default settings, end to end.

Not a test: the measurement behind the README's capacity section. One bot process (the shipped
checkpoints, every limit at its default, metrics on) talks to the fake Discord in this process;
``--concurrency`` people (each their own user, so no cooldown applies) keep asking ``/tale`` for
``--seconds``. The per-person cooldown is off (it limits one person, not the process). It prints
one JSON object: finished replies per second, characters per second,
reply latency, refused ("busy") replies, and the bot's own event-loop lag and gateway latency
from its /metrics. Run from the repository root::

    python -m tests.bot.capacity --seconds 60 --concurrency 32

``--burst N --trigger mention`` (or ``slash``) instead sends N requests at once, one per person,
spread over channels of ``--per-channel`` people, and times each reply until its final edit
(the one that carries the Continue and Another buttons): what a crowd mentioning the bot sees.

    python -m tests.bot.capacity --burst 32 --trigger mention
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.bench.fake_discord import FakeDiscord, FakeUser
from tests.bot.e2e_bot import answered
from tests.helpers import BotProcess, free_port, start_bot

ROOT = Path(__file__).resolve().parents[2]


async def metrics(port: int) -> dict[str, list]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def lag_quantile(samples: list, q: float) -> float:
    """Upper bucket bound below which a fraction ``q`` of the observed event-loop lags fall."""
    buckets = sorted((float(labels["le"]), value) for labels, value in samples)
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


async def measure(seconds: float, concurrency: int, corpus: str, length: int | None) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeDiscord(interaction_deadline_s=60.0) as fake:
            proc = BotProcess(await start_bot(
                fake, Path(tmp), ROOT / "checkpoints", CHARBOT_METRICS_PORT=str(port), CHARBOT_CORPORA=corpus,
                CHARBOT_COOLDOWN="0", CHARBOT_DEVICE="auto",
            ))
            try:
                await fake.wait_ready(timeout=180)
                # Two people per reader, taking turns: one person's next request may arrive before the bot has
                # released their previous reply ("still being written"), which would measure the test, not the bot.
                users = [(FakeUser(fake.ids.next(), f"reader{i}a"), FakeUser(fake.ids.next(), f"reader{i}b"))
                         for i in range(concurrency)]
                done: list[tuple[float, int]] = []
                refused = 0
                reasons: dict[str, int] = {}
                stop_at = time.monotonic() + seconds

                async def reader(pair: tuple[FakeUser, FakeUser]) -> None:
                    nonlocal refused
                    turn = 0
                    while time.monotonic() < stop_at:
                        user, turn = pair[turn], 1 - turn
                        began = time.monotonic()
                        options = {"prompt": "Once upon a time"} | ({"length": length} if length else {})
                        inter = await fake.slash(corpus, options, user=user)
                        await fake.wait_until(lambda i=inter: answered(i), 300, "a reply")
                        if inter.original is None or not inter.original["content"].startswith("**Once upon"):
                            refused += 1
                            text = inter.original["content"] if inter.original else str(inter.callbacks[0].json)
                            reasons[text[:80]] = reasons.get(text[:80], 0) + 1
                            await asyncio.sleep(0.5)  # "try again in a moment", as a person would
                            continue
                        done.append((time.monotonic() - began, len(inter.original["content"])))

                started = time.monotonic()
                await asyncio.gather(*(reader(u) for u in users))
                elapsed = time.monotonic() - started
                figures = await metrics(port)
            finally:
                await proc.stop()
    latencies = sorted(t for t, _ in done)
    lag = figures.get("charbot_event_loop_lag_observed_seconds_bucket", [])
    return {
        "corpus": corpus, "concurrency": concurrency, "seconds": round(elapsed, 1),
        "length": length or "default (400)",
        "replies": len(done), "refused": refused, "refused_because": reasons,
        "replies_per_s": round(len(done) / elapsed, 2),
        "chars_per_s": round(sum(n for _, n in done) / elapsed),
        "mean_message_chars": round(statistics.mean(n for _, n in done)) if done else None,
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)
        if latencies else None,
        "loop_lag_p99_s_at_most": lag_quantile(lag, 0.99) if lag else None,
        "loop_lag_max_bucket_s": lag_quantile(lag, 1.0) if lag else None,
        "gateway_latency_s": [round(v, 4) for _, v in figures.get("charbot_gateway_latency_seconds", [])],
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def finished(message: dict | None) -> bool:
    """A reply's final edit carries its buttons; the snapshots before it do not."""
    return bool(message and message.get("components"))


async def burst(n: int, trigger: str, per_channel: int, corpus: str) -> dict:
    """``n`` people ask at once (a mention or ``/corpus``), ``per_channel`` to a channel; time each to its end."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeDiscord(interaction_deadline_s=60.0) as fake:
            rooms = [f"room{i}" for i in range(-(-n // per_channel))]
            for room in rooms:
                fake.guild_channels[fake.guild_id][room] = fake.ids.next()
            proc = BotProcess(await start_bot(
                fake, Path(tmp), ROOT / "checkpoints", CHARBOT_METRICS_PORT=str(port), CHARBOT_CORPORA=corpus,
                CHARBOT_COOLDOWN="0", CHARBOT_DEVICE="auto",
            ))
            try:
                await fake.wait_ready(timeout=180)
                people = [FakeUser(fake.ids.next(), f"reader{i}") for i in range(n)]

                async def ask(i: int, person: FakeUser) -> tuple[float, str]:
                    began, room = time.monotonic(), rooms[i // per_channel]
                    if trigger == "mention":
                        sent = await fake.post_message(f"{fake.mention(fake.bot_user)} Once upon a time",
                                                       author=person, channel=room)
                        final = await fake.wait_until(lambda: (m := fake.bot_reply_to(sent)) and (
                            finished(m) or "**Once upon" not in m["content"]) and m, 300, "a reply")
                    else:
                        inter = await fake.slash(corpus, {"prompt": "Once upon a time"}, user=person, channel=room)
                        final = await fake.wait_until(lambda: (m := inter.original) and finished(m) and m
                                                      or (answered(inter) and not inter.original and {"content": ""}),
                                                      300, "a reply")
                    return time.monotonic() - began, final["content"]

                started = time.monotonic()
                results = await asyncio.gather(*(ask(i, p) for i, p in enumerate(people)))
                elapsed = time.monotonic() - started
                figures = await metrics(port)
            finally:
                await proc.stop()
    answered_ok = [(t, text) for t, text in results if text.startswith("**Once upon")]
    latencies = sorted(t for t, _ in answered_ok)
    lag = figures.get("charbot_event_loop_lag_observed_seconds_bucket", [])
    return {
        "trigger": trigger, "corpus": corpus, "people": n, "per_channel": per_channel,
        "answered": len(answered_ok), "refused": n - len(answered_ok),
        "seconds": round(elapsed, 2), "chars_per_s": round(sum(len(x) for _, x in answered_ok) / elapsed),
        "finished_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "finished_max_s": round(latencies[-1], 2) if latencies else None,
        "loop_lag_p99_s_at_most": lag_quantile(lag, 0.99) if lag else None,
        "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--corpus", default="tale")
    p.add_argument("--length", type=int, help="characters per reply (default: the bot's default, 400)")
    p.add_argument("--burst", type=int, help="send this many requests at once instead, one per person")
    p.add_argument("--trigger", choices=["slash", "mention"], default="slash", help="with --burst: how they ask")
    p.add_argument("--per-channel", type=int, default=4, help="with --burst: people per channel")
    args = p.parse_args()
    if args.burst:
        print(json.dumps(asyncio.run(burst(args.burst, args.trigger, args.per_channel, args.corpus))))
        return
    print(json.dumps(asyncio.run(measure(args.seconds, args.concurrency, args.corpus, args.length))))


if __name__ == "__main__":
    main()
