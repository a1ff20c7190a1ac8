"""The reply logic, knowing nothing of Discord: check a request, generate it, stream it, render it.

The generate cog, ``charbot reply`` and ``charbot chat`` all go through :class:`ReplyService`,
so what the terminal prints is exactly what the bot posts. Generation runs on the engines'
worker threads; text comes back to the event loop through ``call_soon_threadsafe`` and is
handed out as rendered message snapshots no more often than the edit interval, because
Discord rate-limits message edits.

What a person reads is decided here too. The length asked for is a target: generation runs
to the first sentence end after it (hard cap :func:`hard_cap`) or is cut back to the last
one, never mid-word. Each reply is sampled as n candidates side by side on the engine
(``n`` from the request, else the corpus's :attr:`~corpora.registry.Corpus.best_of` while the
engine is idle, falling to 1 under load: :meth:`model.engine.Engine.best_of`) and the one with the best
:mod:`bot.core.score` is posted. FAQ answers are grounded: the question retrieves the best
passage (:mod:`corpora.passages`), the model reads it before the question, and the passage
is quoted under the answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import aclosing, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, get_args

from bot.config import Limits
from bot.core.engines import Models
from bot.core.refusals import Refusal
from bot.core.render import CUT_SHORT, QUOTE_ROOM, head_length, prime_continues, render_reply
from bot.core.sanitise import quote
from bot.core.score import Grounding, Score, best, debris_end, score_reply
from bot.core.temperature import check_temperature
from bot.core.throttle import Cooldown, Crowding
from bot.core.verbatim import VerbatimGuard
from bot.discord_limits import MESSAGE_CHARS
from corpora.passages import Hit, grounded_head, grounded_prime
from corpora.registry import CORPORA
from corpora.voices import display_name, is_voice, owner, parse_key, voice
from model.charset import normalize
from model.engine import Engine, EngineBusy, EngineClosed
from model.sample import Finish, Generation, SampleSettings

log = logging.getLogger(__name__)

ENGINE_BUSY = "I'm busy writing other replies right now; try again in a moment."
RESTARTING = "I'm restarting; try again in a minute."
CHANNEL_BUSY = "I'm already writing several replies in this channel; try again when one is finished."
MAX_BEST_OF = 16
PIECES_EVERY_S = 0.02  # how often the loop collects a running reply's new text (edits are rarer still)
HARD_CAP = 1700


# What made the bot speak: a slash command, a mention (or a direct message), a reply to one of its
# messages, a Continue or Another button, the message context menu, or chiming in uninvited.
Trigger = Literal["slash", "mention", "reply", "button", "menu", "chime"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)


@dataclass(frozen=True)
class ReplyRequest:
    """A checked request: every field is within limits."""

    corpus: str
    prompt: str
    temperature: float
    length: int
    seed: int | None = None
    user: Hashable | None = None  # who asked, for the cooldown; None for local use
    n: int | None = None  # best-of-n candidates; None: the corpus's best_of, fewer when the engine is busy
    context: str = ""  # the conversation before the prompt, primed but not shown (corpora.registry.Corpus.prime)
    trigger: Trigger = "slash"
    channel: Hashable | None = None  # where it will be posted, for the per-channel bound; None for local use


@dataclass(frozen=True)
class ReplyUpdate:
    """The message as it should look now; ``done`` with the finished generation at the end.

    The final update also says how many candidates were drawn, the posted one's score, and
    for a grounded corpus the passage it was grounded on.
    """

    text: str
    done: bool
    generation: Generation | None = None
    candidates: int = 1
    score: Score | None = None
    source: Hit | None = None
    chosen: int = 0  # which candidate was posted (0 is the one a single draw gives)
    seed: int | None = None  # the reply's seed: with the same n, it gives this reply again


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
        raise Refusal(f"Length must be a whole number of characters from 1 to {limits.max_length}; got {quote(value)}.")
    return value


def check_prompt(corpus: str, prompt: str | None, limits: Limits, context: str = "") -> str:
    """The prompt, or a Refusal saying what is wrong with it (with a ``context``, the words may be left out)."""
    style = voice(corpus).style
    if prompt is not None and not isinstance(prompt, str):
        raise Refusal(f"The {style.prompt_label} must be text.")
    prompt = prompt or ""
    if len(prompt) > limits.max_prompt_chars:
        raise Refusal(
            f"That {style.prompt_label} is {len(prompt)} characters long; the limit is {limits.max_prompt_chars}. "
            "Try a shorter one."
        )
    if style.prompt_required and not context.strip():
        example = voice(corpus).example_prompt or "..."
        if not prompt.strip():
            raise Refusal(f"Ask me a {style.prompt_label}, for example `/{corpus} {style.prompt_label}: {example}`")
        if not normalize(prompt).text.strip() or not voice(corpus).prime(prompt).strip():
            raise Refusal(f"I could not find any words in that {style.prompt_label}; I read plain letters, digits "
                          f"and punctuation. For example: `/{corpus} {style.prompt_label}: {example}`")
    return prompt


def check_voice(corpus: object, guild: int | None) -> None:
    """Refuse a voice that does not exist, or a persona asked for from outside its server.

    Both get the same words, so another server cannot learn that a persona exists by guessing."""
    if not isinstance(corpus, str) or not is_voice(corpus) or owner(corpus) not in (None, guild):
        name = display_name(corpus) if isinstance(corpus, str) else corpus
        raise Refusal(f"I don't know the corpus or persona {quote(name)}; I know {', '.join(CORPORA)}"
                      + (" and this server's personas (/persona list)." if guild is not None else "."))


def make_request(
    corpus: str,
    prompt: str | None,
    limits: Limits,
    temperature: float | None = None,
    user_default: float | None = None,
    length: int | None = None,
    seed: int | None = None,
    user: Hashable | None = None,
    n: int | None = None,
    context: str = "",
    trigger: Trigger = "slash",
    channel: Hashable | None = None,
    guild: int | None = None,
) -> ReplyRequest:
    """Check every part of a request and settle its temperature; raise Refusal on bad input.

    ``guild`` is the server asking (None: a DM or local use); a persona answers only its own server.

    ``context`` is model text or a bounded reply chain the caller built (bot.core.conversation).
    """
    check_voice(corpus, guild)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BEST_OF):
        raise Refusal(f"The number of candidates must be a whole number from 1 to {MAX_BEST_OF}; got {quote(n)}.")
    return ReplyRequest(
        corpus=corpus,
        prompt=check_prompt(corpus, prompt, limits, context),
        temperature=resolve_temperature(temperature, user_default, voice(corpus).default_temperature),
        length=check_length(length, limits),
        seed=seed,
        user=user,
        n=n,
        context=context,
        trigger=trigger,
        channel=channel,
    )


def prime_of(request: ReplyRequest) -> tuple[str, bool]:
    """The text the model continues, and whether it continues the user's own words."""
    prime = voice(request.corpus).prime(request.prompt, request.context)
    return prime, prime_continues(prime)


def hard_cap(length: int) -> int:
    """The most characters a reply of target ``length`` may run to while looking for a sentence end.

    A quarter of the target again (at least 40), and never more than :data:`HARD_CAP`, well
    under Discord's 2000 so the prompt and the source quote still fit. A longer run finds a
    sentence end more often but keeps a crowd's batch busy for the slowest reply's sake.
    """
    return min(HARD_CAP, length + max(40, length // 4))


def sample_settings(request: ReplyRequest, limit: int = MESSAGE_CHARS) -> SampleSettings:
    """Engine settings: the length as a target, and never more characters than the message can hold."""
    room = limit - head_length(request.corpus, request.prompt, limit, prime_of(request)[1]) - len(CUT_SHORT)
    if voice(request.corpus).grounded:
        room -= QUOTE_ROOM
    cap = max(1, min(hard_cap(request.length), room))
    return SampleSettings(
        temperature=request.temperature,
        max_chars=cap,
        stop=voice(request.corpus).stop,
        seed=request.seed,
        target_chars=min(request.length, cap),
    )


def ground(request: ReplyRequest, models: Models) -> Hit | None:
    """The passage a grounded corpus's reply draws on (None: not grounded, or nothing matches)."""
    index = models.passages.get(request.corpus)
    if index is None or not voice(request.corpus).grounded or not request.prompt.strip():
        return None
    hits = index.search(request.prompt, 1)
    return hits[0] if hits else None


def tidy_opening(gen: Generation) -> Generation:
    """The generation without a leading fragment before its first real sentence (:func:`bot.core.score.debris_end`)."""
    cut = debris_end(gen.text)
    if not cut:
        return gen
    return replace(gen, text=gen.text[cut:], logprobs=gen.logprobs[cut:])


def choose(
    request: ReplyRequest, candidates: list[Generation], models: Models, source: Hit | None
) -> tuple[int, list[Score]]:
    """Which candidate to post, and every candidate's score (see :mod:`bot.core.score`)."""
    grounding = None
    if voice(request.corpus).grounded:
        grounding = Grounding(request.prompt, source.passage.text if source else "")
    lexicon = models.lexicon(request.corpus)
    fresh = not prime_of(request)[1]
    scores = [score_reply(g.text, g.logprobs, lexicon, g.settings.target_chars, grounding, fresh_start=fresh)
              for g in candidates]
    return best(scores), scores


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
        # Pieces come one character at a time from the engine's worker thread. Waking the event
        # loop for each (a write to its self-pipe, a callback, an event) cost the loop about as
        # much as the step cost the worker with a crowd of replies. So the worker appends to
        # ``inbox`` (a list append is atomic) and wakes the loop only when no delivery is due;
        # while pieces keep coming, the loop collects them every PIECES_EVERY_S on its own.
        inbox: list[str] = []
        due = [False]

        def take() -> bool:
            taken = len(inbox)
            self._pieces.extend(inbox[:taken])
            del inbox[:taken]
            if taken:
                self._arrived.set()
            return bool(taken)

        def deliver() -> None:
            if not take():
                due[0] = False  # quiet: the next piece wakes the loop ...
                if not take():  # ... unless it came just before the flag fell
                    return
                due[0] = True
            loop.call_later(PIECES_EVERY_S, deliver)

        def on_text(piece: str) -> None:  # called on the engine's worker thread
            inbox.append(piece)
            if not due[0]:
                due[0] = True
                loop.call_soon_threadsafe(deliver)

        prime, self.continues = prime_of(request)
        self.source = ground(request, service.models)
        shared = ""  # a head of the prime with no user's words in it, which the engine may read once for many
        if self.source is not None:
            prime = grounded_prime(self.source.passage.text, prime)
            shared = grounded_head(self.source.passage.text)
        self.n = request.n if request.n is not None else engine.best_of(voice(request.corpus).best_of)
        try:
            if self.n == 1:
                self.future = engine.submit(prime, sample_settings(request), on_text, shared=shared)
            else:
                self.future = engine.submit_best_of(prime, sample_settings(request), self.n, on_text,
                                                    adaptive=request.n is None, shared=shared)
        except EngineBusy:
            raise Refusal(ENGINE_BUSY, "busy") from None
        except EngineClosed:
            raise Refusal(RESTARTING, "restarting") from None
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
            got = self._done.result()
            candidates = got if isinstance(got, list) else [got]
            if any(g.finish != Finish.CANCELLED for g in candidates):  # without those shed under load
                candidates = [g for g in candidates if g.finish != Finish.CANCELLED]
            if not self.continues:  # a fresh line should not open mid-sentence
                candidates = [tidy_opening(g) for g in candidates]
            chosen, scores = choose(request, candidates, self.service.models, self.source)
            chosen, gen = self.service.not_copied(request.corpus, candidates, scores, chosen)
            quote = self.source.passage.text if self.source is not None else None
            text = render_reply(request.corpus, request.prompt, gen.text, gen.finish, continues=self.continues,
                                source=quote)
            yield ReplyUpdate(text, True, gen, len(candidates), scores[chosen], self.source, chosen,
                              candidates[0].seed)
        finally:
            self.close()


class ReplyWatcher(Protocol):
    """Hears every reply the service starts and every one it refuses (the metrics are one), so the
    reply code itself knows nothing of who counts it."""

    def started(self, request: ReplyRequest, stream: ReplyStream) -> None: ...

    def refused(self, request: ReplyRequest, refusal: Refusal) -> None: ...


class ReplyService:
    """Runs replies on the models' engines with a per-user cooldown and a bound on queued work."""

    def __init__(
        self, models: Models, limits: Limits, clock: Callable[[], float] = time.monotonic,
        guard: VerbatimGuard | None = None,
    ) -> None:
        self.models = models
        self.limits = limits
        self.guard = guard  # the verbatim-copy guard (bot.core.verbatim); None: no contributions to guard
        self.cooldown = Cooldown(limits.cooldown_s, clock)
        self.crowding = Crowding(limits.max_per_channel)
        self._clock = clock
        self._running: set[ReplyStream] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        self.watchers: list[ReplyWatcher] = []
        # Where a server's persona speaks from (bot.personas.service.PersonaService.locate): a checkpoint
        # path, or a Refusal saying why it cannot speak yet. None: no personas on this service.
        self.locate: Callable[[str], Awaitable[Path]] | None = None

    async def ready(self, corpus: str) -> None:
        """Make sure ``corpus``'s engine is loaded: a no-op for the built-in corpora, which always are;
        a persona loads (or reloads, after a new version) on demand, off the event loop, in about a
        second, so callers defer their answer before calling this. Refusal when it cannot speak."""
        if parse_key(corpus) is None:
            return
        if self.locate is None:
            raise Refusal(f"Personas are not set up on this bot, so {display_name(corpus)} cannot speak.",
                          "unavailable")
        path = await self.locate(corpus)
        info = self.models.info.get(corpus)
        if corpus in self.models.engines and info is not None and info.path == str(path):
            self.models.touch(corpus)
            return
        await asyncio.to_thread(self.models.load_persona, corpus, path)

    def not_copied(
        self, corpus: str, candidates: list[Generation], scores: list[Score], chosen: int
    ) -> tuple[int, Generation]:
        """The candidate to post, without a long span copied from a contribution (:mod:`bot.core.verbatim`):
        the chosen one if it copies nothing, else the best-scoring one that copies nothing, else the
        chosen one trimmed before its copy. Counted in the guard's ``replaced`` and ``trimmed``."""
        gen, guard = candidates[chosen], self.guard
        span = None if guard is None else guard.copied(corpus, gen.text)
        if guard is None or span is None:
            return chosen, gen
        for i in sorted(range(len(candidates)), key=lambda i: (-scores[i].total, i)):
            if guard.copied(corpus, candidates[i].text) is None:
                guard.replaced += 1
                log.info("%s: candidate %d copied %d characters of a contribution; posting candidate %d instead",
                         corpus, chosen, span[1] - span[0], i)
                return i, candidates[i]
        guard.trimmed += 1
        text = guard.trim(gen.text, span[0])
        log.info("%s: every candidate copied a contribution; trimmed %d characters off the reply", corpus,
                 len(gen.text) - len(text))
        return chosen, replace(gen, text=text, logprobs=gen.logprobs[: len(text)], finish=Finish.LENGTH)

    def in_flight(self) -> int:
        return len(self._running)

    def start(self, request: ReplyRequest) -> ReplyStream:
        """Queue ``request`` on its engine, or raise Refusal (busy, restarting, on cooldown).

        Cheap and synchronous, so a command can refuse privately before it answers publicly.
        Call from the event loop; the caller must iterate or close the returned stream.
        """
        try:
            stream = self._admit(request)
        except Refusal as refusal:
            for watcher in self.watchers:
                watcher.refused(request, refusal)
            raise
        for watcher in self.watchers:
            watcher.started(request, stream)
        return stream

    def _admit(self, request: ReplyRequest) -> ReplyStream:
        """The stream for ``request`` once every check passed, counted as running."""
        if self.closing:
            raise Refusal(RESTARTING, "restarting")
        engine = self.models.engines.get(request.corpus)
        if engine is None:
            raise Refusal(f"The {display_name(request.corpus)} model is not loaded on this bot.", "unavailable")
        self.models.touch(request.corpus)
        if request.user is not None:
            wait = self.cooldown.wait_for(request.user)
            if wait == math.inf:
                raise Refusal("Your previous reply is still being written; wait for it to finish.", "cooldown")
            if wait > 0:
                raise Refusal(f"Slow down a little: you can ask again in {math.ceil(wait)} s.", "cooldown")
        if request.channel is not None and self.crowding.full(request.channel):
            raise Refusal(CHANNEL_BUSY, "cooldown")
        if engine.pending() >= self.limits.max_pending:
            raise Refusal(ENGINE_BUSY, "busy")
        stream = ReplyStream(self, request, engine)
        if request.user is not None:
            self.cooldown.start(request.user)
        if request.channel is not None:
            self.crowding.start(request.channel)
        self._running.add(stream)
        self._idle.clear()
        return stream

    def _release(self, stream: ReplyStream) -> None:
        self._running.discard(stream)
        if not self._running:
            self._idle.set()
        if stream.request.user is not None:
            self.cooldown.done(stream.request.user)
        if stream.request.channel is not None:
            self.crowding.done(stream.request.channel)

    async def stream(self, request: ReplyRequest) -> AsyncIterator[ReplyUpdate]:
        """:meth:`ready`, :meth:`start` and iterate the updates in one go."""
        await self.ready(request.corpus)
        reply = self.start(request)
        async with aclosing(reply.updates()) as updates:
            async for update in updates:
                yield update

    async def reply(self, request: ReplyRequest) -> ReplyUpdate:
        """The finished reply, without the intermediate snapshots."""
        await self.ready(request.corpus)
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
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
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
