"""Generation engine: one worker thread steps every active reply of one checkpoint together.

Replies join and leave the batch at any step (continuous batching), so a busy server shares
each network step instead of queueing whole replies behind each other. Each reply keeps its
own settings, seeded generator and stop strings, and draws with :func:`sample.pick_next`, so
its text is the one :func:`sample.generate` gives for the same seed, whatever else is running.
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

from charbot.model.charset import decode
from charbot.model.checkpoint import Checkpoint
from charbot.model.sample import Generation, SampleSettings, StopWatcher, pick_next, prime_codes

log = logging.getLogger(__name__)

PRIME_CHUNK = 1024


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
    count: int = 0
    cancel_requested: bool = False

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.watcher = StopWatcher(self.settings.stop)


class _ModuleStepper:
    """Steps the batch with the plain ``nn.LSTM`` forward (the reference path)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.h: torch.Tensor | None = None
        self.c: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None  # (batch, vocab) on CPU, float32

    @torch.no_grad()
    def add(self, codes: torch.Tensor) -> None:
        """Prime a new row with ``codes`` and append it to the batch."""
        state = None
        out = None
        for start in range(0, len(codes), PRIME_CHUNK):
            out, state = self.model(codes[start : start + PRIME_CHUNK].view(1, -1).to(self.device), state)
        h, c = state
        row = out[0, -1:].float().cpu()
        if self.h is None:
            self.h, self.c, self.logits = h, c, row
        else:
            self.h = torch.cat([self.h, h], dim=1)
            self.c = torch.cat([self.c, c], dim=1)
            self.logits = torch.cat([self.logits, row], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in this order)."""
        if not rows:
            self.h = self.c = self.logits = None
            return
        idx = torch.tensor(rows, device=self.device)
        self.h, self.c = self.h.index_select(1, idx), self.c.index_select(1, idx)
        self.logits = self.logits.index_select(0, torch.tensor(rows))

    @torch.no_grad()
    def step(self, codes: list[int]) -> None:
        x = torch.tensor(codes, device=self.device).view(-1, 1)
        out, (self.h, self.c) = self.model(x, (self.h, self.c))
        self.logits = out[:, -1].float().cpu()


class Engine:
    """Generation for one checkpoint: a worker thread steps all active replies together."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | torch.device | None = None,
        max_batch: int = 64,
        max_queue: int = 256,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.checkpoint = checkpoint
        model = checkpoint.model
        here = model.head.weight.device
        self.device = torch.device(device) if device is not None else here
        if self.device != here:
            model = copy.deepcopy(model).to(self.device)
        model.eval()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._stepper = _ModuleStepper(model, self.device)
        self._lock = threading.Condition()
        self._queue: deque[_Reply] = deque()
        self._active: list[_Reply] = []
        self._by_future: dict[Future, _Reply] = {}
        self._closing = False
        self._cancel_all = False
        self._worker = threading.Thread(target=self._run, name="charbot-engine", daemon=True)
        self._worker.start()

    # ---- public API -------------------------------------------------------------------

    def submit(
        self,
        prime: str,
        settings: SampleSettings,
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]:
        """Queue a reply; thread-safe. ``on_text`` gets text pieces from the worker thread."""
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
        """Stop taking replies; with ``wait`` finish those in flight, else cancel them; stop the worker."""
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

    def _finish(self, reply: _Reply, finish: str) -> None:
        if finish != "stop":
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
                self._finish(reply, "cancelled")
                continue
            try:
                self._stepper.add(reply.codes)
            except Exception as exc:
                log.exception("priming failed")
                self._fail([reply], exc)
                continue
            self._active.append(reply)
        return True

    def _run(self) -> None:
        while True:
            try:
                if not self._admit():
                    return
                self._step_all()
            except Exception as exc:  # the step itself failed: fail the batch, keep serving
                log.exception("generation step failed")
                self._fail(self._active, exc)
                self._active = []
                self._stepper.keep([])

    def _step_all(self) -> None:
        logits = self._stepper.logits
        keep_rows: list[int] = []
        codes: list[int] = []
        still: list[_Reply] = []
        for row, reply in enumerate(self._active):
            if reply.cancel_requested:
                self._finish(reply, "cancelled")
                continue
            code = pick_next(logits[row], reply.settings, reply.generator)
            reply.count += 1
            piece, hit = reply.watcher.add(decode([code]))
            self._emit(reply, piece)
            if hit:
                self._finish(reply, "stop")
            elif reply.count >= reply.settings.max_chars:
                self._finish(reply, "length")
            else:
                keep_rows.append(row)
                codes.append(code)
                still.append(reply)
        if len(still) != len(self._active):
            self._stepper.keep(keep_rows)
        self._active = still
        if still:
            self._stepper.step(codes)
