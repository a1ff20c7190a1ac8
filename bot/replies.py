"""The reply logic, knowing nothing of Discord: check a request, generate it, stream it, render it.

The generate cog, ``charbot reply`` and ``charbot chat`` all go through :class:`ReplyService`,
so what the terminal prints is exactly what the bot posts. Generation runs on the engines'
worker threads; text comes back to the event loop through ``call_soon_threadsafe`` and is
handed out as rendered message snapshots no more often than the edit interval, because
Discord rate-limits message edits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import aclosing
from dataclasses import dataclass

from bot.config import Limits
from bot.engines import Models
from bot.errors import Refusal
from bot.render import CUT_SHORT, DISCORD_LIMIT, head_length, prime_continues, render_reply
from bot.throttle import Cooldown
from corpora.registry import CORPORA
from model.charset import normalize
from model.engine import Engine, EngineBusy, EngineClosed
from model.sample import MAX_TEMPERATURE, Generation, SampleSettings

log = logging.getLogger(__name__)

BUSY = "I'm busy writing other replies right now; try again in a moment."
RESTARTING = "I'm restarting; try again in a minute."


@dataclass(frozen=True)
class ReplyRequest:
    """A checked request: every field is within limits."""

    corpus: str
    prompt: str
    temperature: float
    length: int
    seed: int | None = None
    user: Hashable | None = None  # who asked, for the cooldown; None for local use


@dataclass(frozen=True)
class ReplyUpdate:
    """The message as it should look now; ``done`` with the finished generation at the end."""

    text: str
    done: bool
    generation: Generation | None = None


def check_temperature(value: float) -> float:
    """A temperature from 0 to 2, or a Refusal that explains the scale."""
    explain = "0 = always the likeliest character, 0.8 = the usual, 2 = wild"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise Refusal(f"Temperature must be a number from 0 to 2 ({explain}); got {value!r}.") from None
    if not math.isfinite(t) or not 0 <= t <= MAX_TEMPERATURE:
        raise Refusal(f"Temperature must be from 0 to 2 ({explain}); got {value:g}.")
    return t


def resolve_temperature(option: float | None, user_default: float | None, corpus_default: float) -> float:
    """The command's own option wins, then the user's default in this server, then the corpus's."""
    if option is not None:
        return check_temperature(option)
    if user_default is not None:
        return user_default
    return corpus_default


def check_length(value: int | None, limits: Limits) -> int:
    if value is None:
        return limits.default_length
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_length:
        raise Refusal(f"Length must be a whole number of characters from 1 to {limits.max_length}; got {value!r}.")
    return value


def check_prompt(corpus: str, prompt: str | None, limits: Limits) -> str:
    """The prompt, or a Refusal saying what is wrong with it."""
    style = CORPORA[corpus].style
    prompt = prompt or ""
    if len(prompt) > limits.max_prompt_chars:
        raise Refusal(
            f"That {style.prompt_label} is {len(prompt)} characters long; the limit is {limits.max_prompt_chars}. "
            "Try a shorter one."
        )
    if style.prompt_required:
        example = CORPORA[corpus].example_prompt or "..."
        if not prompt.strip():
            raise Refusal(f"Ask me a {style.prompt_label}, for example `/{corpus} {style.prompt_label}: {example}`")
        if not normalize(prompt).text.strip() or not CORPORA[corpus].prime(prompt).strip():
            raise Refusal(f"I could not find any words in that {style.prompt_label}; I read plain letters, digits "
                          f"and punctuation. For example: `/{corpus} {style.prompt_label}: {example}`")
    return prompt


def make_request(
    corpus: str,
    prompt: str | None,
    limits: Limits,
    temperature: float | None = None,
    user_default: float | None = None,
    length: int | None = None,
    seed: int | None = None,
    user: Hashable | None = None,
) -> ReplyRequest:
    """Check every part of a request and settle its temperature; raise Refusal on bad input."""
    if corpus not in CORPORA:
        raise Refusal(f"I don't know the corpus {corpus!r}; I know {', '.join(CORPORA)}.")
    return ReplyRequest(
        corpus=corpus,
        prompt=check_prompt(corpus, prompt, limits),
        temperature=resolve_temperature(temperature, user_default, CORPORA[corpus].default_temperature),
        length=check_length(length, limits),
        seed=seed,
        user=user,
    )


def prime_of(request: ReplyRequest) -> tuple[str, bool]:
    """The text the model continues, and whether it continues the user's own words."""
    prime = CORPORA[request.corpus].prime(request.prompt)
    return prime, prime_continues(prime)


def sample_settings(request: ReplyRequest, limit: int = DISCORD_LIMIT) -> SampleSettings:
    """Engine settings: never ask for more characters than the message can hold."""
    room = limit - head_length(request.corpus, request.prompt, limit, prime_of(request)[1]) - len(CUT_SHORT)
    return SampleSettings(
        temperature=request.temperature,
        max_chars=max(1, min(request.length, room)),
        stop=CORPORA[request.corpus].stop,
        seed=request.seed,
    )


class ReplyStream:
    """One reply being generated: iterate :meth:`updates`, and :meth:`close` when done with it."""

    def __init__(self, service: ReplyService, request: ReplyRequest, engine: Engine) -> None:
        self.service = service
        self.request = request
        self.engine = engine
        self._pieces: list[str] = []
        self._arrived = asyncio.Event()
        self._closed = False
        loop = asyncio.get_running_loop()

        def add(piece: str) -> None:
            self._pieces.append(piece)
            self._arrived.set()

        def on_text(piece: str) -> None:  # called on the engine's worker thread
            loop.call_soon_threadsafe(add, piece)

        prime, self.continues = prime_of(request)
        try:
            self.future = engine.submit(prime, sample_settings(request), on_text)
        except EngineBusy:
            raise Refusal(BUSY) from None
        except EngineClosed:
            raise Refusal(RESTARTING) from None
        self._done = asyncio.wrap_future(self.future)

    def cancel(self) -> None:
        """Stop generating; the final update says the reply was cut short."""
        self.engine.cancel(self.future)

    def close(self) -> None:
        """Release the reply (cancelling it if still running); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if not self.future.done():
            self.engine.cancel(self.future)
        self.service._release(self)

    async def updates(self) -> AsyncIterator[ReplyUpdate]:
        """The message as it grows (at most once per edit interval), then the finished one."""
        request, clock = self.request, self.service._clock
        interval = self.service.limits.edit_interval_s
        next_at, shown = clock(), 0
        try:
            while not self._done.done():
                if len(self._pieces) > shown and clock() >= next_at:
                    shown = len(self._pieces)
                    text = render_reply(request.corpus, request.prompt, "".join(self._pieces),
                                        continues=self.continues)
                    yield ReplyUpdate(text, False)
                    next_at = clock() + interval
                    continue
                self._arrived.clear()
                waiters: set[asyncio.Future] = {self._done}
                timeout = None
                if len(self._pieces) > shown:
                    timeout = max(0.0, next_at - clock())
                else:
                    waiters.add(asyncio.ensure_future(self._arrived.wait()))
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters - {self._done}:
                    w.cancel()
            gen = self._done.result()
            text = render_reply(request.corpus, request.prompt, gen.text, gen.finish, continues=self.continues)
            yield ReplyUpdate(text, True, gen)
        finally:
            self.close()


class ReplyService:
    """Runs replies on the models' engines with a per-user cooldown and a bound on queued work."""

    def __init__(self, models: Models, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.models = models
        self.limits = limits
        self.cooldown = Cooldown(limits.cooldown_s, clock)
        self._clock = clock
        self._running: set[ReplyStream] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False

    def in_flight(self) -> int:
        return len(self._running)

    def start(self, request: ReplyRequest) -> ReplyStream:
        """Queue ``request`` on its engine, or raise Refusal (busy, restarting, on cooldown).

        Cheap and synchronous, so a command can refuse privately before it answers publicly.
        Call from the event loop; the caller must iterate or close the returned stream.
        """
        if self.closing:
            raise Refusal(RESTARTING)
        engine = self.models.engines.get(request.corpus)
        if engine is None:
            raise Refusal(f"The {request.corpus} model is not loaded on this bot.")
        if request.user is not None:
            wait = self.cooldown.wait_for(request.user)
            if wait == math.inf:
                raise Refusal("Your previous reply is still being written; wait for it to finish.")
            if wait > 0:
                raise Refusal(f"Slow down a little: you can ask again in {math.ceil(wait)} s.")
        if engine.pending() >= self.limits.max_pending:
            raise Refusal(BUSY)
        stream = ReplyStream(self, request, engine)
        if request.user is not None:
            self.cooldown.start(request.user)
        self._running.add(stream)
        self._idle.clear()
        return stream

    def _release(self, stream: ReplyStream) -> None:
        self._running.discard(stream)
        if not self._running:
            self._idle.set()
        if stream.request.user is not None:
            self.cooldown.done(stream.request.user)

    async def stream(self, request: ReplyRequest) -> AsyncIterator[ReplyUpdate]:
        """:meth:`start` and iterate the updates in one go."""
        reply = self.start(request)
        async with aclosing(reply.updates()) as updates:
            async for update in updates:
                yield update

    async def reply(self, request: ReplyRequest) -> ReplyUpdate:
        """The finished reply, without the intermediate snapshots."""
        reply = self.start(request)
        try:
            async with aclosing(reply.updates()) as updates:
                async for update in updates:
                    if update.done:
                        return update
        finally:
            reply.close()
        raise RuntimeError("the reply stream ended without a final message")  # pragma: no cover

    async def drain(self, grace_s: float) -> int:
        """Refuse new replies, let running ones finish for ``grace_s``, then cut the rest.

        Returns how many were cut; their final messages say they were cut short.
        """
        self.closing = True
        if self._running:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
            except asyncio.TimeoutError:
                pass
        cut = list(self._running)
        for reply in cut:
            reply.cancel()
        if cut:
            log.info("cutting %d replies short for shutdown", len(cut))
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                log.warning("%d replies did not end after being cut", len(self._running))
        return len(cut)
