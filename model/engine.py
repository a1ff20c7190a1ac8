"""Generation engine: one worker thread steps every active reply of one checkpoint together.

Replies join and leave the batch at any step (continuous batching), so a busy server shares
each network step instead of queueing whole replies behind each other. The step is the fused
:class:`~model.fast_step.FastStep`; a new reply is primed inside the batch, one prime
character per step alongside the others' generated ones, so a long prompt never stalls the
rest. Each reply keeps its own settings, seeded generator and stop strings, and draws as
:func:`sample.pick_next` does (batched by :class:`~model.fast_sample.BatchSampler`),
so its text is the one :func:`sample.generate` gives for the same seed, whatever else is
running (barring float near-ties).

Best-of-n: :meth:`Engine.submit_best_of` samples n candidates of one reply side by side in
the batch (they share each step's weight traffic, so a step of 8 rows costs far less than 8
steps of one row). Candidate 0 reads the prime inside the batch as a
single reply does; when it has read it, its row is copied into the other candidates' rows,
so the prime is read once and never stalls the batch. Candidate ``i`` draws from
:func:`sample.candidate_seed` of the reply's seed, so the same seed and n give the same
candidates alone or in a crowd. :meth:`Engine.best_of` says how many candidates the engine
can afford now: the default when it is idle, falling towards 1 as its batch fills; adaptive
replies also shed their extra candidates when a crowd arrives, so throughput under load holds.

With the fused kernel the batch is two lanes of rows, taken in turn (:class:`_Lane`): the
worker launches one lane's step on the kernel's helper threads and draws the other lane's
next characters meanwhile, then steps whatever of it the helpers have not taken, so the
draw, the stop checks and the hand-over of text no longer leave a core idle. New rows join
the emptier lane; a row's bits do not depend on its lane (each is stepped whole by one thread).

A prime may begin with a head that is no user's words (a grounded answer's passage:
``shared``): the engine keeps the state after reading it (the last :data:`SHARED_HEADS`),
and a later reply with the same head starts from that state instead of reading it again.
It is the state reading it would give, bit for bit (a row's bits never depend on the batch),
so the reply's text is the same.

From asyncio: ``await asyncio.wrap_future(engine.submit(...))``, and in ``on_text`` (which
runs on the worker thread) hand pieces over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from model import fused_step
from model.charset import CHARS
from model.checkpoint import Checkpoint
from model.device import cpu_threads, pick_device
from model.fast_sample import BatchSampler, Noise
from model.fast_step import FastStep
from model.precision import Decision, Lineage, auto_precision
from model.sample import (
    PRIME_CHUNK,
    Finish,
    Generation,
    SampleSettings,
    StopWatcher,
    candidate_seed,
    finish_after,
    finished_text,
    prime_codes,
)
from model.step_threads import StepThreads

log = logging.getLogger(__name__)

PRIME_IN_BATCH = 1024  # longer primes run their head through nn.LSTM first
# The rows best-of-n candidates share. A step of 16 rows costs about 2.7x a step of 1 on a 2-core
# EPYC (bf16; 8 rows 1.7x), far less than 16 replies one after another; past that, rows add cost.
BEST_OF_ROWS = 16
LANES = 2  # row groups the fused kernel steps while the worker draws for another (see _Lane)
SHARED_HEADS = 256  # states kept after reading a shared head of a prime (about 8 KB each for 2x512)
SHED_ROWS = 2 * BEST_OF_ROWS  # past this many rows, adaptive replies drop their extra candidates
# what a row does in a step when it draws nothing (codes are >= 0)
_PRIMING = -1
_CANCELLED = -2


def _shared_head(shared: str, codes: torch.Tensor) -> tuple[str, int]:
    """``shared`` (normalized) and its length in codes where it reads as a head of the prime's
    ``codes`` with more of the prime after it; else nothing to share."""
    if not shared:
        return "", 0
    text, _, head = prime_codes(shared)
    n = len(head)
    if not text or n >= len(codes) or not torch.equal(codes[:n], head):
        return "", 0
    return text, n


class EngineBusy(RuntimeError):
    """Too many replies are already waiting; the caller should say so rather than queue forever."""


class EngineClosed(RuntimeError):
    """The engine was closed and takes no more replies."""


@dataclass(eq=False)
class _Reply:
    """One row in flight: its request, its random generator and what it has produced so far."""

    prime: str
    dropped: int
    codes: torch.Tensor
    settings: SampleSettings
    seed: int
    on_text: Callable[[str], None] | None
    group: _Group
    index: int = 0
    generator: torch.Generator = field(init=False)
    noise: Noise = field(init=False)
    watcher: StopWatcher = field(init=False)
    prime_list: list[int] = field(init=False)
    logprobs: list[float] = field(default_factory=list)
    count: int = 0
    fed: int = 0  # prime characters already stepped
    cancel_requested: bool = False
    shared: str = ""  # a head of the prime other replies may share (submit's ``shared``), while not yet kept
    shared_len: int = 0  # its length in codes

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.noise = Noise(self.generator)
        self.watcher = StopWatcher(self.settings.stop)
        self.prime_list = self.codes.tolist()


@dataclass(eq=False)
class _Group:
    """One submitted reply: its future and its candidate rows (one unless best-of-n)."""

    future: Future
    single: bool  # resolve with one Generation (submit), not a list (submit_best_of)
    adaptive: bool = False  # candidates past the first may be dropped when the batch fills
    rows: list[_Reply] = field(default_factory=list)
    results: list[Generation | None] = field(default_factory=list)
    left: int = 0
    waiting: list[_Reply] = field(default_factory=list)  # candidates that join once candidate 0 read the prime


@dataclass(eq=False)
class _Lane:
    """Rows ``first..first+len(replies)-1`` of the step's buffers: replies stepped as one job.

    With the fused kernel the batch is two lanes, taken in turn: while the kernel steps one
    lane's rows on its helper threads, the worker draws the other's next characters (see
    :meth:`Engine._turn`), so neither core waits for the other's part of a step.
    """

    first: int
    logits: list[torch.Tensor]  # the lane's first n rows of logits, for each n (sliced once, not per step)
    replies: list[_Reply] = field(default_factory=list)
    job: int | None = None  # the step in flight over its rows, if any


class Engine:
    """Generation for one checkpoint: a worker thread steps all active replies together.

    ``precision`` "fp32" matches the reference forward (and so :func:`sample.generate`);
    "bf16" is faster on CPUs with bfloat16 instructions at a small, measured cost in
    fidelity (see :mod:`model.fast_step`); "int8" (CPU) quantizes the gate weights; "auto" is the
    fastest of those that stay within the fidelity bounds, measured at load (a few seconds at
    most, then cached in ``precision_cache`` when given: see :mod:`model.precision`); the decision is
    :attr:`precision_decision`. ``step`` is the step path: "fused" (one compiled call per
    character, :mod:`model.fused_step`; the eager step where its kernel cannot be built) or
    "eager" (PyTorch calls); None, the default, lets "auto" measure both with the precisions
    and keeps the eager step for an explicit precision. :attr:`step_path` is the one taken.
    ``threads`` sets the worker's torch intra-op threads
    (default: :func:`model.device.cpu_threads` for generation, and with ``boost_threads``
    every core for a lone reply when that is measured to pay, see :mod:`model.step_threads`;
    an explicit ``threads`` is always kept). ``cuda_graphs`` False steps
    eagerly on a GPU (the bench's comparison; graphs are faster).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | torch.device | None = None,
        max_batch: int = 64,
        max_queue: int = 256,
        precision: str = "fp32",
        threads: int | None = None,
        cuda_graphs: bool = True,
        precision_cache: str | os.PathLike | None = None,
        boost_threads: bool = True,
        step: str | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.checkpoint = checkpoint
        model = checkpoint.model
        here = model.head.weight.device
        self.device = pick_device(str(device)) if device is not None else here
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device != here:
            model = copy.deepcopy(model).to(self.device)
        model.eval()
        self._model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.threads = threads if threads is not None else cpu_threads("generation")
        self.precision_decision: Decision | None = None  # how "auto" was resolved
        if precision == "auto":
            self.precision_decision = auto_precision(model, self.device, threads=self.threads, max_batch=max_batch,
                                                     cache=precision_cache, steps=None if step is None else (step,),
                                                     lineage=Lineage.of(checkpoint.path, checkpoint.info))
            precision, step = self.precision_decision.precision, self.precision_decision.step
        lanes = LANES if step == "fused" and self.device.type == "cpu" else 1  # only the kernel steps a lane apart
        self._fast = FastStep(model, lanes * max_batch, self.device, precision, cuda_graphs=cuda_graphs,
                              step=step or "eager")
        if self._fast.fused is None:
            lanes = 1
        self.precision = self._fast.precision
        self.step_path = self._fast.path
        boost = cpu_threads("boost") if boost_threads and threads is None and self.device.type == "cpu" else 0
        self._threads = self._step_threads(boost)
        self._sampler = BatchSampler(max_batch, self._fast.vocab)
        self._lanes = [
            _Lane(k * max_batch, [self._fast.logits[k * max_batch : k * max_batch + n] for n in range(max_batch + 1)])
            for k in range(lanes)
        ]
        self._lock = threading.Condition()
        self._queue: deque[_Group] = deque()
        self._by_future: dict[Future, _Group] = {}
        self._reserved = 0  # rows held for candidates still waiting for their prime to be read
        self._heads: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # shared head -> state
        self._closing = False
        self._cancel_all = False
        self.steps = 0
        self._worker = threading.Thread(target=self._run, name="charbot-engine", daemon=True)
        self._worker.start()

    # ---- public API -------------------------------------------------------------------

    def submit(
        self,
        prime: str,
        settings: SampleSettings,
        on_text: Callable[[str], None] | None = None,
        shared: str = "",
    ) -> Future[Generation]:
        """Queue a reply; thread-safe. ``on_text`` gets text pieces from the worker thread.

        Text that may begin a stop string is held back until it is known not to, exactly as
        :class:`sample.StopWatcher` does. ``shared``: a head of ``prime`` with no user's words
        in it, which the engine may keep the state of for later replies (see the module
        docstring; ignored when it is not a head of the prime). Raises EngineBusy when
        ``max_queue`` replies are already pending and EngineClosed after :meth:`close`.
        """
        return self._submit(prime, settings, 1, on_text, single=True, shared=shared)

    def submit_best_of(
        self,
        prime: str,
        settings: SampleSettings,
        n: int,
        on_text: Callable[[str], None] | None = None,
        adaptive: bool = False,
        shared: str = "",
    ) -> Future[list[Generation]]:
        """Queue one reply as ``n`` candidates stepped side by side; the future gives all n.

        Candidate 0 is exactly what :meth:`submit` gives for the same settings; ``on_text``
        streams candidate 0 (a preview: the caller picks the candidate it posts). ``n`` is
        capped at ``max_batch``. With ``adaptive``, candidates other than 0 are cancelled
        (finish ``cancelled``) when arriving replies take the batch past :data:`SHED_ROWS` rows,
        so a crowd is not slowed by candidates drawn while the engine was idle; without it the
        same seed always gives the same n candidates. ``shared`` and errors as for :meth:`submit`.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        return self._submit(prime, settings, min(n, self.max_batch), on_text, single=False, adaptive=adaptive,
                            shared=shared)

    def best_of(self, default: int, rows: int = BEST_OF_ROWS) -> int:
        """How many candidates a new reply gets now: ``default`` when idle, towards 1 under load.

        The rows that cost about one step (``rows``) are shared between the replies in flight
        and the new one, so a crowd of replies gets one candidate each and keeps its throughput.
        """
        with self._lock:
            replies = len(self._by_future)
        return max(1, min(default, rows // (replies + 1), self.max_batch))

    def _submit(
        self,
        prime: str,
        settings: SampleSettings,
        n: int,
        on_text: Callable[[str], None] | None,
        single: bool,
        adaptive: bool = False,
        shared: str = "",
    ) -> Future:
        if not isinstance(prime, str):
            raise TypeError(f"prime must be text, got {type(prime).__name__}")
        if not isinstance(shared, str):
            raise TypeError(f"shared must be text, got {type(shared).__name__}")
        if not isinstance(settings, SampleSettings):
            raise TypeError(f"settings must be SampleSettings, got {type(settings).__name__}")
        text, dropped, codes = prime_codes(prime)
        seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        fut: Future = Future()
        group = _Group(fut, single, adaptive, results=[None] * n, left=n)
        group.rows = [
            _Reply(text, dropped, codes, settings, candidate_seed(seed, i), on_text if i == 0 else None, group, i)
            for i in range(n)
        ]
        group.rows[0].shared, group.rows[0].shared_len = _shared_head(shared, codes)
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed")
            if len(self._by_future) >= self.max_queue:
                raise EngineBusy(f"{len(self._by_future)} replies already pending (limit {self.max_queue})")
            self._queue.append(group)
            self._by_future[fut] = group
            self._lock.notify()
        return fut

    @property
    def boosted_steps(self) -> int:
        """Steps stepped with every core's threads (a lone reply, see :mod:`model.step_threads`)."""
        return self._threads.boosted_steps

    def pending(self) -> int:
        """Replies queued or running."""
        with self._lock:
            return len(self._by_future)

    def load(self) -> tuple[int, int]:
        """Rows in the batch now (a best-of-n reply holds n) and replies waiting for a place: what
        an operator's metrics show."""
        with self._lock:
            return self._rows(), len(self._queue)

    def cancel(self, future: Future) -> None:
        """Stop a reply early; its future resolves with the text so far and finish ``cancelled``."""
        with self._lock:
            group = self._by_future.get(future)
            if group is not None:
                for reply in group.rows:
                    reply.cancel_requested = True
                self._lock.notify()

    def close(self, wait: bool = True) -> None:
        """Stop taking replies and stop the worker.

        With ``wait`` every reply already submitted (running or queued) is finished first;
        without, each resolves at once with its text so far and finish ``cancelled``.
        """
        with self._lock:
            self._closing = True
            if not wait:
                self._cancel_all = True
            self._lock.notify()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)

    # ---- worker -----------------------------------------------------------------------

    def _emit(self, reply: _Reply, piece: str) -> None:
        if not piece or reply.on_text is None:
            return
        try:
            reply.on_text(piece)
        except Exception:  # a broken listener must not stop everyone else's replies
            log.exception("on_text callback failed; no more text will be sent to it")
            reply.on_text = None

    def _finish(self, reply: _Reply, finish: Finish) -> None:
        group = reply.group
        if reply.index == 0 and group.waiting:  # ended before its prime was read: so do the rest
            waiting, group.waiting = group.waiting, []
            self._reserved -= len(waiting)
            for other in waiting:
                self._finish(other, finish)
        if finish != Finish.STOP:
            self._emit(reply, reply.watcher.flush())
        text = finished_text(reply.watcher.text, finish, reply.settings)
        logprobs = tuple(reply.logprobs[: len(text)])
        group.results[reply.index] = Generation(reply.prime, text, finish, reply.seed, reply.dropped,
                                                reply.settings, logprobs)
        group.left -= 1
        if group.left:
            return
        with self._lock:
            self._by_future.pop(group.future, None)
        if not group.future.done():
            group.future.set_result(group.results[0] if group.single else list(group.results))

    def _fail(self, replies: list[_Reply], exc: BaseException) -> None:
        groups = list({id(r.group): r.group for r in replies}.values())
        for g in groups:
            self._reserved -= len(g.waiting)
            g.waiting = []
        with self._lock:
            for g in groups:
                self._by_future.pop(g.future, None)
        for g in groups:
            if not g.future.done():
                g.future.set_exception(exc)

    def _rows(self) -> int:
        """Rows in the batch now, in every lane."""
        return sum(len(lane.replies) for lane in self._lanes)

    def _emptiest(self) -> _Lane:
        """The lane a new row goes to: the one with the fewest, so both halves of a step stay even."""
        return min(self._lanes, key=lambda lane: len(lane.replies))

    @torch.no_grad()
    def _join(self, group: _Group, lane: _Lane) -> None:
        """Put a new reply's first row at the end of ``lane``: zero state, or for a very long prime,
        its head already read. (The lane's step in flight, if any, does not reach that row.)

        Its other candidates wait (rows reserved) until the prime is read (:meth:`_spread`).
        """
        reply = group.rows[0]
        row = lane.first + len(lane.replies)
        codes = reply.codes
        head = len(codes) - PRIME_IN_BATCH
        group.waiting = list(group.rows[1:])
        self._reserved += len(group.waiting)
        kept = self._heads.get(reply.shared) if reply.shared else None
        if kept is not None and head <= 0:  # read already: start from its state
            self._heads.move_to_end(reply.shared)
            self._fast.set_row(row, kept, torch.zeros(self._fast.vocab))
            reply.fed, reply.shared = reply.shared_len, ""
        elif head <= 0:
            zeros = torch.zeros(self._fast.n_layers, 1, self._fast.hidden)
            self._fast.set_row(row, (zeros, zeros), torch.zeros(self._fast.vocab))
        else:
            reply.shared = ""
            state = None
            out = None
            for start in range(0, head, PRIME_CHUNK):
                chunk = codes[start : min(head, start + PRIME_CHUNK)].view(1, -1).to(self.device)
                out, state = self._model(chunk, state)
            self._fast.set_row(row, state, out[0, -1])
            reply.fed = head
        lane.replies.append(reply)  # the others join once it has read the prime (_spread)

    def _spread(self, lane: _Lane) -> None:
        """Copy each first candidate in ``lane`` that has just read its prime into its waiting
        candidates' rows, at the ends of the emptiest lanes (``lane``'s step is done; another's in
        flight does not reach its end).

        An adaptive reply that finds the batch busy keeps fewer (the rest finish ``cancelled``).
        """
        for row, first in enumerate(list(lane.replies)):
            group = first.group
            if not group.waiting or first.fed < len(first.prime_list) or first.cancel_requested:
                continue
            waiting, group.waiting = group.waiting, []
            self._reserved -= len(waiting)
            room = max(0, BEST_OF_ROWS - self._rows()) if group.adaptive else len(waiting)
            for i, reply in enumerate(waiting):
                if reply.cancel_requested or i >= room:
                    self._finish(reply, Finish.CANCELLED)
                    continue
                to = self._emptiest()
                self._fast.move_row(lane.first + row, to.first + len(to.replies))
                reply.fed = first.fed
                to.replies.append(reply)

    def _admit(self) -> bool:
        """Move queued replies into the batch; return False when the worker should stop."""
        with self._lock:
            while not self._queue and not self._rows() and not self._closing:
                self._threads.busy(False)
                self._lock.wait()
            if self._cancel_all:
                for g in self._queue:
                    for r in g.rows:
                        r.cancel_requested = True
                for lane in self._lanes:
                    for r in lane.replies:
                        r.cancel_requested = True
            if self._closing and not self._queue and not self._rows():
                return False
            new: list[_Group] = []
            rows = self._rows() + self._reserved
            while self._queue and rows + len(self._queue[0].rows) <= self.max_batch:
                group = self._queue.popleft()
                new.append(group)
                rows += len(group.rows)
        for group in new:
            if not group.future.set_running_or_notify_cancel():
                with self._lock:
                    self._by_future.pop(group.future, None)
                continue
            if group.rows[0].cancel_requested:
                for reply in group.rows:
                    self._finish(reply, Finish.CANCELLED)
                continue
            try:
                self._join(group, self._emptiest())
            except Exception as exc:
                log.exception("priming failed")
                self._fail(group.rows, exc)
        if new and self._rows() + self._reserved > SHED_ROWS:
            self._shed()
        return True

    def _shed(self) -> None:
        """Drop the extra candidates of adaptive best-of replies: the batch is busy, keep one row each."""
        for lane in self._lanes:
            for reply in lane.replies:
                group = reply.group
                if group.adaptive:
                    if reply.index and not reply.cancel_requested:
                        reply.cancel_requested = True
                    for waiting in group.waiting:
                        waiting.cancel_requested = True

    def _step_threads(self, boost: int) -> StepThreads:
        """Who chooses the step's thread count. The eager step's torch threads help a lone reply
        only (more rows are the event loop's crowd, see :mod:`model.step_threads`); the fused
        kernel shares a step's rows among its own helper threads, so a crowd's steps gain most,
        and the event loop's share of a crowd is small (its pieces of text arrive in batches)."""
        fused = self._fast.fused
        if fused is None:
            return StepThreads(self.threads, boost)
        return StepThreads(self.threads, boost, max_rows=self.max_batch, max_replies=self.max_batch + self.max_queue,
                           min_rows=fused_step.MIN_SPLIT_ROWS, setter=fused.set_threads)

    @torch.no_grad()
    def _run(self) -> None:
        self._threads.start()
        try:
            self._serve()
        finally:
            self._threads.busy(False)
            self._threads.release()
            self._fast.close()

    def _serve(self) -> None:
        while True:
            try:
                if not self._admit():
                    return
                self._threads.busy(bool(self._rows()))
                self._step_all()
            except Exception as exc:  # the step itself failed: fail the batch, keep serving
                log.exception("generation step failed")
                self._abandon(exc)

    def _abandon(self, exc: BaseException) -> None:
        """Fail every reply in the batch (after the steps in flight end: their rows are reused)."""
        for lane in self._lanes:
            job, lane.job = lane.job, None
            try:
                self._fast.wait(job)
            except Exception:  # already failing: the batch's replies get the first error
                log.exception("a step in flight failed too")
            replies, lane.replies = lane.replies, []
            self._fail(replies, exc)

    def _step_all(self) -> None:
        """One step of every reply: each lane in turn (see :meth:`_turn`)."""
        self._threads.before_step(self._rows(), len(self._by_future))  # replies running or queued
        for lane in self._lanes:
            self._turn(lane)
        self._threads.after_step()
        self.steps += 1

    def _turn(self, lane: _Lane) -> None:
        """Finish ``lane``'s step, draw one character for each of its drawing rows, retire the
        finished ones and launch its next step, which runs while the worker turns to the next lane."""
        fast = self._fast
        job, lane.job = lane.job, None
        fast.wait(job)
        if self._reserved:
            self._spread(lane)
        codes = fast.codes
        first = lane.first
        active = lane.replies
        # what each row does this step, decided once: another thread may cancel at any time
        plan = [_PRIMING] * len(active)
        drawing: list[int] = []
        for row, reply in enumerate(active):
            if reply.shared and reply.fed == reply.shared_len:
                self._keep_head(reply, first + row)
            if reply.cancel_requested:
                plan[row] = _CANCELLED
            elif reply.fed < len(reply.prime_list):
                codes[first + row] = reply.prime_list[reply.fed]
                reply.fed += 1
            else:
                drawing.append(row)
        if drawing:
            self._draw(lane, drawing, plan)
        keep: list[int] = []
        for row, reply in enumerate(active):
            code = plan[row]
            if code == _PRIMING:
                keep.append(row)
            elif code == _CANCELLED:
                self._finish(reply, Finish.CANCELLED)
            elif self._take(reply, code):
                codes[first + row] = code
                keep.append(row)
        if len(keep) != len(active):
            for new_row, old_row in enumerate(keep):
                if new_row != old_row:
                    fast.move_row(first + old_row, first + new_row)
            lane.replies = [active[row] for row in keep]
        if lane.replies:
            lane.job = fast.launch(first, len(lane.replies))

    def _keep_head(self, reply: _Reply, row: int) -> None:
        """Keep the state of ``row``, whose reply has just read its shared head (its step is done)."""
        if reply.shared not in self._heads:
            self._heads[reply.shared] = self._fast.state(row)
            if len(self._heads) > SHARED_HEADS:
                self._heads.popitem(last=False)
        reply.shared = ""

    def _draw(self, lane: _Lane, rows: list[int], plan: list[int]) -> None:
        """Draw the next character of each of ``rows`` (of ``lane``) into ``plan``; record its
        log-likelihood (the model's own, for best-of-n scoring)."""
        active = lane.replies
        replies = [active[row] for row in rows]
        drawn, scores = self._sampler.draw_scored(
            lane.logits[len(active)], rows, [r.settings for r in replies], [r.noise for r in replies]
        )
        for row, reply, code, score in zip(rows, replies, drawn, scores, strict=True):
            plan[row] = code
            reply.logprobs.append(score)

    def _take(self, reply: _Reply, code: int) -> bool:
        """Add a drawn character to ``reply``; return whether it goes on (else it is finished)."""
        reply.count += 1
        piece, finish = finish_after(reply.watcher, CHARS[code], reply.count, reply.settings)
        self._emit(reply, piece)
        if finish is None:
            return True
        self._finish(reply, finish)
        return False
