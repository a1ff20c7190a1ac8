"""Generation engine: one worker thread steps every active reply of one checkpoint together.

Replies join and leave the batch at any step (continuous batching), so a busy server shares
each network step instead of queueing whole replies behind each other. The step is the fused
:class:`~model.fast_step.FastStep`; a new reply is primed inside the batch, one prime
character per step alongside the others' generated ones, so a long prompt never stalls the
rest. Each reply keeps its own settings, seeded generator and stop strings, and draws as
:func:`sample.pick_next` does (batched by :class:`~model.fast_sample.BatchSampler`),
so its text is the one :func:`sample.generate` gives for the same seed, whatever else is
running (barring float near-ties).

From asyncio: ``await asyncio.wrap_future(engine.submit(...))``, and in ``on_text`` (which
runs on the worker thread) hand pieces over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from model.charset import CHARS
from model.checkpoint import Checkpoint
from model.device import cpu_threads, pick_device
from model.fast_sample import BatchSampler
from model.fast_step import FastStep
from model.sample import PRIME_CHUNK, Finish, Generation, SampleSettings, StopWatcher, prime_codes

log = logging.getLogger(__name__)

PRIME_IN_BATCH = 1024  # longer primes run their head through nn.LSTM first


class EngineBusy(RuntimeError):
    """Too many replies are already waiting; the caller should say so rather than queue forever."""


class EngineClosed(RuntimeError):
    """The engine was closed and takes no more replies."""


@dataclass(eq=False)
class _Reply:
    """One reply in flight: its request, its random generator and what it has produced so far."""

    prime: str
    dropped: int
    codes: torch.Tensor
    settings: SampleSettings
    seed: int
    on_text: Callable[[str], None] | None
    future: Future
    generator: torch.Generator = field(init=False)
    watcher: StopWatcher = field(init=False)
    prime_list: list[int] = field(init=False)
    count: int = 0
    fed: int = 0  # prime characters already stepped
    cancel_requested: bool = False

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.watcher = StopWatcher(self.settings.stop)
        self.prime_list = self.codes.tolist()


class Engine:
    """Generation for one checkpoint: a worker thread steps all active replies together.

    ``precision`` "fp32" matches the reference forward (and so :func:`sample.generate`);
    "bf16" is faster on CPUs with bfloat16 instructions at a small, measured cost in
    fidelity (see :mod:`model.fast_step`); "auto" is bf16 where the CPU has those
    instructions, else fp32. ``threads`` sets the worker's torch intra-op threads
    (default: :func:`model.device.cpu_threads` for generation). ``cuda_graphs`` False steps
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
        self._fast = FastStep(model, max_batch, self.device, precision, cuda_graphs=cuda_graphs)
        self.precision = self._fast.precision  # "auto" resolved
        self._sampler = BatchSampler(max_batch, self._fast.vocab)
        self._lock = threading.Condition()
        self._queue: deque[_Reply] = deque()
        self._active: list[_Reply] = []
        self._by_future: dict[Future, _Reply] = {}
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
    ) -> Future[Generation]:
        """Queue a reply; thread-safe. ``on_text`` gets text pieces from the worker thread.

        Text that may begin a stop string is held back until it is known not to, exactly as
        :class:`sample.StopWatcher` does. Raises EngineBusy when ``max_queue`` replies are
        already pending and EngineClosed after :meth:`close`.
        """
        if not isinstance(prime, str):
            raise TypeError(f"prime must be text, got {type(prime).__name__}")
        if not isinstance(settings, SampleSettings):
            raise TypeError(f"settings must be SampleSettings, got {type(settings).__name__}")
        text, dropped, codes = prime_codes(prime)
        seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        fut: Future[Generation] = Future()
        reply = _Reply(text, dropped, codes, settings, seed, on_text, fut)
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed")
            if len(self._by_future) >= self.max_queue:
                raise EngineBusy(f"{len(self._by_future)} replies already pending (limit {self.max_queue})")
            self._queue.append(reply)
            self._by_future[fut] = reply
            self._lock.notify()
        return fut

    def pending(self) -> int:
        """Replies queued or running."""
        with self._lock:
            return len(self._by_future)

    def cancel(self, future: Future) -> None:
        """Stop a reply early; its future resolves with the text so far and finish ``cancelled``."""
        with self._lock:
            reply = self._by_future.get(future)
            if reply is not None:
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
        if finish != Finish.STOP:
            self._emit(reply, reply.watcher.flush())
        with self._lock:
            self._by_future.pop(reply.future, None)
        gen = Generation(reply.prime, reply.watcher.text, finish, reply.seed, reply.dropped, reply.settings)
        reply.future.set_result(gen)

    def _fail(self, replies: list[_Reply], exc: BaseException) -> None:
        with self._lock:
            for r in replies:
                self._by_future.pop(r.future, None)
        for r in replies:
            if not r.future.done():
                r.future.set_exception(exc)

    @torch.no_grad()
    def _join(self, reply: _Reply, row: int) -> None:
        """Put a new reply in ``row``: zero state, or for a very long prime, its head already read."""
        codes = reply.codes
        head = len(codes) - PRIME_IN_BATCH
        if head <= 0:
            zeros = torch.zeros(self._fast.n_layers, 1, self._fast.hidden)
            self._fast.set_row(row, (zeros, zeros), torch.zeros(self._fast.vocab))
            return
        state = None
        out = None
        for start in range(0, head, PRIME_CHUNK):
            chunk = codes[start : min(head, start + PRIME_CHUNK)].view(1, -1).to(self.device)
            out, state = self._model(chunk, state)
        self._fast.set_row(row, state, out[0, -1])
        reply.fed = head

    def _admit(self) -> bool:
        """Move queued replies into the batch; return False when the worker should stop."""
        with self._lock:
            while not self._queue and not self._active and not self._closing:
                self._lock.wait()
            if self._cancel_all:
                for r in list(self._queue) + self._active:
                    r.cancel_requested = True
            if self._closing and not self._queue and not self._active:
                return False
            new = []
            while self._queue and len(self._active) + len(new) < self.max_batch:
                new.append(self._queue.popleft())
        for reply in new:
            if not reply.future.set_running_or_notify_cancel():
                with self._lock:
                    self._by_future.pop(reply.future, None)
                continue
            if reply.cancel_requested:
                self._finish(reply, Finish.CANCELLED)
                continue
            try:
                self._join(reply, len(self._active))
            except Exception as exc:
                log.exception("priming failed")
                self._fail([reply], exc)
                continue
            self._active.append(reply)
        return True

    @torch.no_grad()
    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        while True:
            try:
                if not self._admit():
                    return
                self._step_all()
            except Exception as exc:  # the step itself failed: fail the batch, keep serving
                log.exception("generation step failed")
                self._fail(self._active, exc)
                self._active = []

    def _step_all(self) -> None:
        """Draw one character for every active reply, retire the finished ones, step the rest."""
        fast = self._fast
        codes = fast.codes
        cancelled = [reply.cancel_requested for reply in self._active]
        drawing: list[int] = []
        for row, reply in enumerate(self._active):
            if cancelled[row]:
                continue
            if reply.fed < len(reply.prime_list):
                codes[row] = reply.prime_list[reply.fed]
                reply.fed += 1
            else:
                drawing.append(row)
        picks = dict(zip(drawing, self._draw(drawing), strict=True))
        keep: list[int] = []
        for row, reply in enumerate(self._active):
            if cancelled[row]:
                self._finish(reply, Finish.CANCELLED)
                continue
            code = picks.get(row)
            if code is None:  # still reading its prime
                keep.append(row)
                continue
            reply.count += 1
            piece, hit = reply.watcher.add(CHARS[code])
            self._emit(reply, piece)
            if hit:
                self._finish(reply, Finish.STOP)
            elif reply.count >= reply.settings.max_chars:
                self._finish(reply, Finish.LENGTH)
            else:
                codes[row] = code
                keep.append(row)
        if len(keep) != len(self._active):
            for new_row, old_row in enumerate(keep):
                if new_row != old_row:
                    fast.move_row(old_row, new_row)
            self._active = [self._active[row] for row in keep]
        if self._active:
            fast.step(len(self._active))
            self.steps += 1

    def _draw(self, rows: list[int]) -> list[int]:
        if not rows:
            return []
        logits = self._fast.logits
        if len(rows) != len(self._active):
            logits = logits.index_select(0, torch.tensor(rows))
        replies = [self._active[row] for row in rows]
        return self._sampler.draw(logits, [r.settings for r in replies], [r.generator for r in replies])
