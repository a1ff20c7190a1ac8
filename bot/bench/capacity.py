"""How many replies one ``charbot run`` process finishes, end to end, and how long people wait for them.

The measurement behind the capacity table operators size a deployment from, so it counts what a
person sees: a reply is *finished* when its final text is posted, the edit that carries the
Continue and Another buttons (:data:`bot.core.conversation.BUTTONS`); the snapshots streamed
before it carry none. An earlier script counted a reply done at its first snapshot: it reported
24-character "replies" and made its own refusals, the same person asking again while their
reply was still being written.

One bot process (the shipped checkpoint of ``corpus``, every limit at its default unless
``env`` says otherwise, metrics on) talks to the fake Discord (:mod:`bot.bench.fake_discord`)
in this process. The load comes in three shapes, each by ``/tale`` (slash) or by
``@charbot Once upon a time`` (mention):

- ``closed``: ``people`` people asking without pause, each waiting for their reply to finish
  before asking again (a refused person tries again half a second later);
- ``open``: requests arriving at ``rate`` per second (Poisson arrivals), each from a different
  person, however the bot is doing: how a server's traffic arrives, and where latency and
  refusals begin to climb;
- ``burst``: ``burst`` people asking at the same moment.

People are spread over channels (``per_channel`` to a channel in the closed loop and the burst,
round-robin over ``channels`` in the open loop), because the bot bounds the replies written at
once in one channel (``CHARBOT_MAX_PER_CHANNEL``). The per-person cooldown is off
(``CHARBOT_COOLDOWN=0``): it limits one person, not the process. The fake gives the bot
Discord's 3 s to acknowledge an interaction, so a bot too slow to defer loses the request here
as it would on Discord.

Each run reports time to the first visible text and to the finished reply (p50, p95, p99),
finished replies and posted characters per second, refusals by kind (the bot's own
``charbot_replies_total{outcome}``) and by what the person read, and the bot's event-loop lag
and gateway latency from its ``/metrics``; the machine (:mod:`bot.bench.machine`) is recorded
beside them, with the load average before and after each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.bench.bot_process import BotProcess, free_port, start_bot
from bot.bench.fake_discord import LOADING, FakeDiscord, FakeUser, RecordedRequest
from bot.bench.machine import machine
from bot.bench.stats import percentile
from bot.core.conversation import BUTTONS, custom_id
from bot.core.refusals import RefusalKind
from bot.core.render import WORKING
from corpora.shipped import checkpoint_dir as shipped_checkpoint_dir

LOADS = ("closed", "open", "burst")
TRIGGERS = ("slash", "mention")
PROMPT = "Once upon a time"
FINISH_IDS = frozenset(custom_id(action) for action in BUTTONS)
REFUSAL_KINDS = get_args(RefusalKind)
RETRY_S = 0.5  # a refused person of the closed loop asks again after this ("try again in a moment")
DISCORD_ACK_S = 3.0  # Discord forgets an interaction not acknowledged within 3 s
SAMPLE_EVERY_S = 5.0  # how often the gateway latency is read from /metrics during a run


@dataclass
class CapacityConfig:
    """Which loads to put on one bot process, and how."""

    checkpoint_dir: Path | None = None  # the shipped checkpoints; None: corpora.shipped.checkpoint_dir()
    corpus: str = "tale"
    loads: tuple[str, ...] = ("closed", "open")
    triggers: tuple[str, ...] = ("slash",)
    seconds: float = 30.0  # per closed or open run
    people: int = 32  # closed loop
    rates: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)  # open loop, requests per second
    burst: int = 32
    per_channel: int = 4  # people to a channel in the closed loop and the burst
    channels: int = 16  # the open loop's requests go round-robin over this many channels
    timeout_s: float = 120.0  # a request with no finished reply or refusal by then counts as timed out
    seed: int = 0
    warmup: bool = True  # one uncounted request per trigger first (the first batch, imports, the database)
    env: dict[str, str] = field(default_factory=dict)  # extra settings for the bot (e.g. CHARBOT_MAX_PENDING)

    def shrink(self) -> None:
        """The quick version: seconds of load, a few people, the lowest rate."""
        self.seconds = min(self.seconds, 3.0)
        self.people = min(self.people, 4)
        self.rates = self.rates[:1]
        self.burst = min(self.burst, 4)

    def rooms(self) -> int:
        """Channels the fake's guild needs: enough for every load of this configuration."""
        return max(self.channels, -(-self.people // self.per_channel), -(-self.burst // self.per_channel))


@dataclass
class Ask:
    """One request as the person who made it sees it: when they asked, saw text, saw it finished."""

    trigger: str
    sent_at: float
    first_at: float | None = None
    ended_at: float | None = None
    finished: bool = False
    text: str = ""
    outcome: str = ""  # "finished", else what ended it: the bot's words (a refusal), "expired", "timed out"
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def show(self, message: dict, at: float) -> None:
        """The person's message as it is now: loading, a snapshot, the finished reply, or a refusal."""
        if message.get("flags", 0) & LOADING or not message.get("content"):
            return
        if self.first_at is None:
            self.first_at = at
        self.text = message["content"]
        if has_buttons(message):
            self.finished = True
            self.end(at, "finished")
        elif not self.text.endswith(WORKING):  # not a snapshot: a refusal, or an error in words
            self.end(at, self.text)

    def end(self, at: float, outcome: str) -> None:
        if self.ended_at is None:
            self.ended_at, self.outcome = at, outcome
            self.done.set()


def has_buttons(message: dict) -> bool:
    """Whether ``message`` carries Continue or Another: the final edit of a generated reply does, nothing else."""
    return any(c.get("custom_id") in FINISH_IDS for row in message.get("components") or []
               for c in row.get("components") or [])


class Tracker:
    """Follows every open request through the fake's requests, one look per request the bot makes.

    Requests are known by person (each person has at most one open request): an interaction's
    token leads to its user, a reply's ``message_reference`` to the message it answers and so to
    its author, an edit's message id to the reply it edits.
    """

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.asks: dict[str, Ask] = {}  # person id -> their open request
        self.replies: dict[str, str] = {}  # the bot's message id -> the person it answers
        fake.observers.append(self.saw)

    def saw(self, rec: RecordedRequest) -> None:
        person, message = self._about(rec)
        ask = self.asks.get(person) if person else None
        if ask is None or ask.ended_at is not None:
            return
        if rec.status >= 300:
            if rec.route.endswith("/callback"):  # too late (Discord's 3 s) or refused: the person saw nothing
                ask.end(time.monotonic(), f"not acknowledged (HTTP {rec.status})")
            return
        if message is not None:
            ask.show(message, time.monotonic())

    def _about(self, rec: RecordedRequest) -> tuple[str | None, dict | None]:
        """Whose request ``rec`` answers, and that person's message as it is after it."""
        fake, token = self.fake, rec.params.get("token")
        if token:
            inter = fake.interactions.get(token)
            return (inter.user.id if inter else None), fake.original_messages.get(token)
        if rec.status >= 300 or not isinstance(rec.response, dict):
            return None, None
        if rec.route == "POST /channels/{channel_id}/messages":
            ref = (rec.json if isinstance(rec.json, dict) else {}).get("message_reference") or {}
            asked = fake.channel_messages.get(rec.params["channel_id"], {}).get(str(ref.get("message_id")))
            if asked is None:
                return None, None
            self.replies[rec.response["id"]] = asked["author"]["id"]
            return asked["author"]["id"], rec.response
        if rec.route == "PATCH /channels/{channel_id}/messages/{message_id}":
            return self.replies.get(rec.params["message_id"]), rec.response
        return None, None


# ---- the bot's own figures -----------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(port: int) -> Samples:
    """The bot's /metrics, sample name -> [(labels, value)]."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def outcomes(samples: Samples, trigger: str) -> Counter[str]:
    """``charbot_replies_total`` of one trigger, by outcome (summed over corpora)."""
    got: Counter[str] = Counter()
    for labels, value in samples.get("charbot_replies_total", []):
        if labels.get("trigger") == trigger:
            got[labels["outcome"]] += value
    return got


def lag_buckets(samples: Samples) -> dict[float, float]:
    """The event-loop lag histogram: upper bound -> observations at or below it (cumulative)."""
    observed = samples.get("charbot_event_loop_lag_observed_seconds_bucket", [])
    return {float(labels["le"]): value for labels, value in observed}


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The smallest bucket bound with at least a fraction ``q`` of the observations at or below it."""
    if not buckets or max(buckets.values()) <= 0:
        return None
    total = max(buckets.values())
    return next((bound for bound, count in sorted(buckets.items()) if count >= q * total), None)


def bucket_below(buckets: dict[float, float], bound: float | None) -> float:
    """The bucket bound just under ``bound`` (0 for the first): a quantile read from buckets lies between them."""
    return max((b for b in buckets if bound is not None and b < bound), default=0.0)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)}


def _load_avg() -> list[float] | None:
    load = machine().get("load_avg")
    return [round(x, 2) for x in load] if load else None


# ---- one bot, several loads ------------------------------------------------------------------------


class Session:
    """One bot process on one fake Discord, and the people who ask it."""

    def __init__(self, cfg: CapacityConfig, fake: FakeDiscord, port: int) -> None:
        self.cfg, self.fake, self.port = cfg, fake, port
        self.tracker = Tracker(fake)
        self.rooms = [f"room{i}" for i in range(cfg.rooms())]
        self._people = 0

    def person(self) -> FakeUser:
        self._people += 1
        return FakeUser(self.fake.ids.next(), f"reader{self._people}")

    async def ask(self, trigger: str, person: FakeUser, room: str) -> Ask:
        """``person`` asks in ``room``; returns when the reply is finished, refused, or timed out."""
        fake = self.fake
        ask = Ask(trigger, time.monotonic())
        self.tracker.asks[person.id] = ask
        try:
            if trigger == "slash":
                await fake.slash(self.cfg.corpus, {"prompt": PROMPT}, user=person, channel=room)
            else:
                await fake.post_message(f"{fake.mention(fake.bot_user)} {PROMPT}", author=person, channel=room)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ask.done.wait(), self.cfg.timeout_s)
            ask.end(time.monotonic(), "timed out")
        finally:
            self.tracker.asks.pop(person.id, None)
        return ask

    async def closed(self, trigger: str) -> list[Ask]:
        """``people`` people asking without pause until ``seconds`` have passed, each waiting for the finish."""
        stop = time.monotonic() + self.cfg.seconds

        async def one_person(i: int) -> list[Ask]:
            person, room, asks = self.person(), self.rooms[i // self.cfg.per_channel], []
            while time.monotonic() < stop:
                asks.append(await self.ask(trigger, person, room))
                if not asks[-1].finished:
                    await asyncio.sleep(RETRY_S)
            return asks

        per_person = await asyncio.gather(*(one_person(i) for i in range(self.cfg.people)))
        return [a for asks in per_person for a in asks]

    async def open(self, trigger: str, rate: float) -> list[Ask]:
        """Requests at Poisson arrivals of ``rate`` per second for ``seconds``, each from someone new."""
        rng = random.Random(f"{self.cfg.seed}/{rate}/{trigger}")
        began, at, tasks = time.monotonic(), 0.0, []
        while (at := at + rng.expovariate(rate)) < self.cfg.seconds:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))  # on the clock: a late loop catches up
            room = self.rooms[len(tasks) % min(self.cfg.channels, len(self.rooms))]
            tasks.append(asyncio.create_task(self.ask(trigger, self.person(), room)))
        return list(await asyncio.gather(*tasks))

    async def burst(self, trigger: str) -> list[Ask]:
        """``burst`` people asking at once, ``per_channel`` to a channel."""
        n, per = self.cfg.burst, self.cfg.per_channel
        return list(await asyncio.gather(*(self.ask(trigger, self.person(), self.rooms[i // per]) for i in range(n))))

    async def measured(self, load: str, trigger: str, rate: float | None, run: Callable[[], Awaitable[list[Ask]]]
                       ) -> dict:
        """Run one load and describe it, the bot's figures taken as differences over the run."""
        before, load_start = await scrape(self.port), _load_avg()
        latencies: list[float] = []
        sampler = asyncio.create_task(self._sample_gateway(latencies))
        began = time.monotonic()
        try:
            asks = await run()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        after = await scrape(self.port)
        latencies += [v for _, v in after.get("charbot_gateway_latency_seconds", [])]
        elapsed = max((a.ended_at or began) for a in asks) - began if asks else 0.0
        row = summarize(asks, elapsed)
        row.update(load=load, trigger=trigger, **self._size(load, rate))
        row.update(bot_figures(before, after, trigger, latencies))
        row.update(load_avg_start=load_start, load_avg_end=_load_avg(),
                   arrivals_per_s=round(len(asks) / self.cfg.seconds, 2) if load == "open" else None)
        return row

    def _size(self, load: str, rate: float | None) -> dict:
        if load == "open":
            return {"rate_per_s": rate, "seconds_of_arrivals": self.cfg.seconds, "channels": self.cfg.channels}
        if load == "closed":
            return {"people": self.cfg.people, "seconds_of_asking": self.cfg.seconds,
                    "per_channel": self.cfg.per_channel}
        return {"people": self.cfg.burst, "per_channel": self.cfg.per_channel}

    async def _sample_gateway(self, out: list[float]) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            with contextlib.suppress(aiohttp.ClientError):
                out += [v for _, v in (await scrape(self.port)).get("charbot_gateway_latency_seconds", [])]


def summarize(asks: list[Ask], elapsed: float) -> dict:
    """What the people saw: finished replies, how long they waited, why the others were not answered."""
    done = [a for a in asks if a.finished]
    posted = sum(len(a.text) for a in done)
    unfinished = Counter(a.outcome[:80] for a in asks if not a.finished)
    return {
        "requests": len(asks), "finished": len(done), "unfinished": len(asks) - len(done),
        "unfinished_rate": round((len(asks) - len(done)) / len(asks), 4) if asks else None,
        "unfinished_because": dict(unfinished.most_common()),
        "seconds": round(elapsed, 2), "posted_chars": posted,
        "finished_per_s": round(len(done) / elapsed, 2) if elapsed else None,
        "posted_chars_per_s": round(posted / elapsed) if elapsed else None,
        "mean_chars": round(posted / len(done)) if done else None,
        "first_text_s": _quantiles([a.first_at - a.sent_at for a in done if a.first_at is not None]),
        "finished_s": _quantiles([a.ended_at - a.sent_at for a in done if a.ended_at is not None]),
    }


def bot_figures(before: Samples, after: Samples, trigger: str, gateway: list[float]) -> dict:
    """The bot's own counts over the run: outcomes of this trigger, event-loop lag, gateway latency."""
    counted = outcomes(after, trigger) - outcomes(before, trigger)
    refused = {k: int(v) for k, v in counted.items() if k in REFUSAL_KINDS and v}
    lag_before, lag_after = lag_buckets(before), lag_buckets(after)
    lag = {bound: count - lag_before.get(bound, 0.0) for bound, count in lag_after.items()}
    gateway = [g for g in gateway if g == g and g >= 0]  # NaN before the first heartbeat
    return {
        "bot_outcomes": {k: int(v) for k, v in counted.items() if v},
        "refused_by_kind": refused,
        "refusal_rate": round(sum(refused.values()) / sum(counted.values()), 4) if sum(counted.values()) else None,
        "loop_lag_s": {"p50_at_most": bucket_quantile(lag, 0.5), "p99_at_most": bucket_quantile(lag, 0.99),
                       "p99_above": bucket_below(lag, bucket_quantile(lag, 0.99)),
                       "max_at_most": bucket_quantile(lag, 1.0), "samples": int(max(lag.values(), default=0))},
        "gateway_latency_s": {"median": round(percentile(gateway, 50), 4) if gateway else None,
                              "max": round(max(gateway), 4) if gateway else None, "samples": len(gateway)},
    }


def sustained(rows: list[dict], p95_s: float, refusal_rate: float) -> dict[str, float | None]:
    """Per trigger, the highest open-loop rate whose finished p95 and refusal rate stay within the bounds
    (None where even the lowest rate measured does not), counting only rates below the first that fails."""
    out: dict[str, float | None] = {}
    for trigger in sorted({r["trigger"] for r in rows if r["load"] == "open"}):
        best = None
        for r in sorted((r for r in rows if r["load"] == "open" and r["trigger"] == trigger),
                        key=lambda r: r["rate_per_s"]):
            p95 = r["finished_s"]["p95"]
            if p95 is None or p95 > p95_s or (r["unfinished_rate"] or 0.0) > refusal_rate:
                break
            best = r["rate_per_s"]
        out[trigger] = best
    return out


async def _measure(cfg: CapacityConfig, say: Callable[[str], None],
                   observe: Callable[[FakeDiscord], None] | None) -> dict:
    folder = cfg.checkpoint_dir if cfg.checkpoint_dir is not None else shipped_checkpoint_dir()
    if not (folder / f"{cfg.corpus}.safetensors").is_file():
        raise FileNotFoundError(f"no {cfg.corpus}.safetensors in {folder}: the capacity section serves it")
    port = free_port()
    env = {"CHARBOT_METRICS_PORT": str(port), "CHARBOT_CORPORA": cfg.corpus, "CHARBOT_COOLDOWN": "0",
           "CHARBOT_DEVICE": "auto", **cfg.env}
    with tempfile.TemporaryDirectory(prefix="charbot-capacity-") as tmp:
        async with FakeDiscord(interaction_deadline_s=DISCORD_ACK_S) as fake:
            session = Session(cfg, fake, port)
            for room in session.rooms:
                fake.guild_channels[fake.guild_id][room] = fake.ids.next()
            say(f"capacity: starting a bot on {folder / cfg.corpus}.safetensors")
            proc = BotProcess(await start_bot(fake, Path(tmp), folder, **env))
            try:
                await _ready(fake, proc)
                for trigger in cfg.triggers if cfg.warmup else ():
                    await session.ask(trigger, session.person(), session.rooms[0])
                rows = []
                for load, trigger, rate, run in _plan(cfg, session):
                    say(f"capacity: {load} {trigger}" + (f" {rate:g}/s" if rate else ""))
                    rows.append(await session.measured(load, trigger, rate, run))
                if observe is not None:
                    observe(fake)
            finally:
                await proc.stop()
    return {"bot": {"corpus": cfg.corpus, "checkpoint": str(folder / f"{cfg.corpus}.safetensors"),
                    "settings": {k: v for k, v in env.items() if k != "CHARBOT_METRICS_PORT"},
                    "fake_ack_deadline_s": DISCORD_ACK_S, "prompt": PROMPT},
            "runs": rows}


def _plan(cfg: CapacityConfig, session: Session) -> list[tuple[str, str, float | None, Callable]]:
    """Every (load, trigger) run of ``cfg``, in order: closed, then the open loop's rates upward, then the burst."""
    plan: list[tuple[str, str, float | None, Callable]] = []
    for trigger in cfg.triggers:
        if "closed" in cfg.loads:
            plan.append(("closed", trigger, None, lambda t=trigger: session.closed(t)))
        if "open" in cfg.loads:
            plan += [("open", trigger, r, lambda t=trigger, r=r: session.open(t, r)) for r in sorted(cfg.rates)]
        if "burst" in cfg.loads:
            plan.append(("burst", trigger, None, lambda t=trigger: session.burst(t)))
    return plan


async def _ready(fake: FakeDiscord, proc: BotProcess, timeout: float = 300.0) -> None:
    """Wait for the bot to connect; if its process ends first, say why (the tail of its log)."""
    ready = asyncio.ensure_future(fake.wait_ready(timeout=timeout))
    exited = asyncio.ensure_future(proc.proc.wait())
    await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        tail = "\n".join(proc.lines[-20:])
        raise RuntimeError(f"the bot exited ({proc.proc.returncode}) before connecting:\n{tail}")
    exited.cancel()
    ready.result()


def measure(cfg: CapacityConfig, say: Callable[[str], None] = print,
            observe: Callable[[FakeDiscord], None] | None = None) -> dict:
    """Run every load of ``cfg`` against one fresh bot process; the rows :mod:`bot.bench.report` renders.

    ``observe`` sees the fake Discord after the last run, before it closes: what the bot really
    posted, for a test to hold the figures against.
    """
    return asyncio.run(_measure(cfg, say, observe))
