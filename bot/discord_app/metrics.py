"""Prometheus metrics, liveness and readiness for operators (``CHARBOT_METRICS_PORT``).

One small aiohttp server on the bot's own event loop: ``/metrics`` (the Prometheus text
format, from the maintained ``prometheus-client`` package), ``/livez`` and ``/readyz``. Being
on the event loop is the point: if the loop is stuck, the probes stop answering, which is what
a process manager needs to know. Everything is in a registry of this bot's own (not the
library's global one), so two bots in one test process never mix their figures.

What is measured, and why an operator looks at it:

- ``charbot_replies_total{corpus,trigger,outcome}``: replies by what made the bot speak (``slash``,
  ``mention``, ``reply``, ``button``, ``menu``, ``chime``); finished replies (their finish reason: ``sentence``,
  ``length``, ``stop``, ``cancelled``; or ``error``) and refused ones, by the refusal's kind
  (:data:`bot.core.refusals.RefusalKind`; ``busy``: the engine queue is full, add capacity;
  ``cooldown``, ``restarting``, ``unavailable``, ``invalid``).
- ``charbot_reply_seconds{corpus}``: time from accepting a reply to its last character.
- ``charbot_engine_batch_size{corpus}``, ``charbot_engine_queue_depth{corpus}``: rows in the
  running batch (a reply's n candidates are n rows) and replies waiting for a place in it (a
  growing queue means the device is saturated).
- ``charbot_event_loop_lag_seconds``: how late a timer fires; Discord drops a connection whose
  heartbeat is late by a whole interval (about 41 s), replies feel slow well before that.
- ``charbot_gateway_latency_seconds{shard}``, ``charbot_guilds{shard}``: per gateway shard.
- ``charbot_finetune_job_state{corpus,state}``: the latest fine-tuning job of each corpus, from
  the shared database (so every process reports the same); ``charbot_served_version{corpus}``
  and ``charbot_model_info{corpus,version}``: what this process serves (0 = base checkpoint).

Replies are counted as a watcher of the one reply service the bot creates
(:class:`bot.core.replies.ReplyWatcher`), so the reply code itself knows nothing of metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.core.refusals import Refusal
from bot.core.replies import ReplyRequest, ReplyService, ReplyStream

if TYPE_CHECKING:
    from discord.ext import commands

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 0.5
JOB_STATES = ("running", "done", "failed", "cancelled")
REPLY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _LiveFigures(Collector):
    """Figures read when scraped (engines, shards, served versions), never stale."""

    def __init__(self, metrics: BotMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        bot = self.metrics.bot
        batch = GaugeMetricFamily("charbot_engine_batch_size",
                                  "Rows in the engine's running batch (n per best-of-n reply)", labels=["corpus"])
        queue = GaugeMetricFamily("charbot_engine_queue_depth", "Replies waiting for a place in the batch",
                                  labels=["corpus"])
        info = GaugeMetricFamily("charbot_model_info", "The checkpoint this process serves (1 per corpus)",
                                 labels=["corpus", "version"])
        models = getattr(bot, "models", None)
        if models is not None:
            for corpus, engine in list(models.engines.items()):
                rows, waiting = engine.load()
                batch.add_metric([corpus], rows)
                queue.add_metric([corpus], waiting)
            for corpus, m in list(models.info.items()):
                info.add_metric([corpus, m.version], 1)
        served = GaugeMetricFamily("charbot_served_version", "Version served per corpus (0: the base checkpoint)",
                                   labels=["corpus"])
        manager = getattr(bot, "finetune", None)  # bot.jobs.manager.FinetuneManager: what this process serves
        for corpus, version in dict(getattr(manager, "serving", {}) or {}).items():
            served.add_metric([corpus], version)
        latency = GaugeMetricFamily("charbot_gateway_latency_seconds", "Heartbeat round trip per gateway shard",
                                    labels=["shard"])
        guilds = GaugeMetricFamily("charbot_guilds", "Servers per gateway shard this process owns", labels=["shard"])
        for shard, seconds in _latencies(bot):
            if math.isfinite(seconds):
                latency.add_metric([str(shard)], seconds)
        counts: dict[str, int] = {}
        for guild in list(getattr(bot, "guilds", ())):
            key = str(guild.shard_id or 0)
            counts[key] = counts.get(key, 0) + 1
        for shard, n in counts.items():
            guilds.add_metric([shard], n)
        copies = CounterMetricFamily("charbot_verbatim_copies", "Replies that would have copied 50+ characters of "
                                     "a contribution: another candidate posted (replaced) or the copy cut off "
                                     "(trimmed)", labels=["action"])
        guard = getattr(getattr(bot, "replies", None), "guard", None)
        if guard is not None:
            copies.add_metric(["replaced"], guard.replaced)
            copies.add_metric(["trimmed"], guard.trimmed)
        yield from (batch, queue, info, served, latency, guilds, copies)


def _latencies(bot: object) -> list[tuple[int, float]]:
    if getattr(bot, "shard_count", None) and hasattr(bot, "latencies"):
        return list(bot.latencies)
    return [(0, float(getattr(bot, "latency", math.nan)))]


class BotMetrics:
    """The metrics of one bot, and the HTTP server that shows them."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.replies = Counter("charbot_replies", "Replies by corpus, trigger and outcome",
                               ["corpus", "trigger", "outcome"], registry=r)
        self.reply_seconds = Histogram("charbot_reply_seconds", "Seconds from accepting a reply to its end",
                                       ["corpus"], buckets=REPLY_BUCKETS, registry=r)
        self.loop_lag = Gauge("charbot_event_loop_lag_seconds", "How late the last event-loop timer fired",
                              registry=r)
        self.loop_lag_hist = Histogram("charbot_event_loop_lag_observed_seconds",
                                       "How late event-loop timers fire", buckets=LAG_BUCKETS, registry=r)
        self.finetune_state = Gauge("charbot_finetune_job_state", "Latest fine-tuning job per corpus (1: its state)",
                                    ["corpus", "state"], registry=r)
        r.register(_LiveFigures(self))
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._lag_task: asyncio.Task | None = None

    # ---- replies --------------------------------------------------------------------------

    def watch(self, service: ReplyService) -> None:
        """Count every reply ``service`` starts or refuses, and time the ones it runs."""
        service.watchers.append(self)

    def started(self, request: ReplyRequest, stream: ReplyStream) -> None:
        began = time.monotonic()
        stream.future.add_done_callback(lambda f: self._finished(request, began, f))

    def refused(self, request: ReplyRequest, refusal: Refusal) -> None:
        self.replies.labels(request.corpus, request.trigger, refusal.kind).inc()

    def _finished(self, request: ReplyRequest, began: float, future: Future) -> None:
        """Called on the engine's thread (prometheus-client is thread-safe)."""
        if future.cancelled():
            outcome = "cancelled"
        elif future.exception() is not None:
            outcome = "error"
        else:
            outcome = _finish_of(future.result())
        self.replies.labels(request.corpus, request.trigger, outcome).inc()
        self.reply_seconds.labels(request.corpus).observe(time.monotonic() - began)

    # ---- the server -----------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Serve /metrics, /livez and /readyz, and start measuring event-loop lag."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._live)
        app.router.add_get("/readyz", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(f"CHARBOT_METRICS_PORT: cannot serve metrics on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
        self.port = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
        self._lag_task = asyncio.create_task(self._measure_lag(), name="charbot-loop-lag")
        log.info("metrics on http://%s:%s/metrics (liveness /livez, readiness /readyz)", host, self.port)

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = max(0.0, loop.time() - asked - LAG_INTERVAL_S)
            self.loop_lag.set(lag)
            self.loop_lag_hist.observe(lag)

    async def _refresh_jobs(self) -> None:
        """The latest job per corpus, from the database every process shares."""
        store = getattr(self.bot, "store", None)
        models = getattr(self.bot, "models", None)
        if store is None or models is None:
            return
        from bot.store.jobs import FinetuneStore

        jobs = FinetuneStore(store)
        for corpus in list(models.engines):
            recent = await jobs.recent_jobs(corpus, limit=1)
            for state in JOB_STATES:
                self.finetune_state.labels(corpus, state).set(1 if recent and recent[0].state == state else 0)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self._refresh_jobs(), 2.0)
        except Exception as exc:  # a busy or closed database must not cost the other figures
            log.warning("metrics: could not read the fine-tuning jobs: %s", exc or type(exc).__name__)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, request: web.Request) -> web.Response:
        """Answered on the event loop: an answer means the loop runs."""
        return web.json_response({"live": True, "event_loop_lag_s": self.loop_lag._value.get()})

    def readiness(self) -> tuple[bool, str]:
        """Ready when connected to Discord (every shard this process owns), with models and database."""
        bot = self.bot
        if bot.is_closed() or getattr(getattr(bot, "replies", None), "closing", False):
            return False, "shutting down"
        if getattr(bot, "store", None) is None or getattr(bot, "models", None) is None:
            return False, "starting: loading models and the database"
        if not bot.is_ready():
            return False, "connecting to Discord"
        return True, "ready"

    async def _ready(self, request: web.Request) -> web.Response:
        ready, why = self.readiness()
        return web.json_response({"ready": ready, "status": why}, status=200 if ready else 503)


def _finish_of(result: object) -> str:
    """How a reply ended: its generation's finish reason; with several candidates (best-of-n),
    that of the first one not shed under load (they end alike: at a sentence, or at the cap)."""
    if isinstance(result, list):
        kept = [g for g in result if str(getattr(g, "finish", "")) != "cancelled"] or result
        result = kept[0] if kept else None
    return str(getattr(result, "finish", "done"))
