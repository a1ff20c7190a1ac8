"""How many torch threads an engine's worker steps with: every core for a lone reply, when that pays.

An engine's worker normally steps with :func:`model.device.cpu_threads` ("generation"): one
thread on a two-core machine, because the event loop and other engines need the other core
and oversubscribed threads wait on each other. But a lone reply on an otherwise idle machine
leaves that core unused: a bf16 step at batch 1 takes about 150 us with one thread and about
118 us with two (2-core EPYC). So the worker may step with every core's thread
(:func:`model.device.cpu_threads` "boost") when

- it serves few replies (at most :data:`BOOST_REPLIES`, counting those queued: more mean a
  crowd, whose replies the event loop must serve) in few rows (at most :data:`BOOST_ROWS`:
  a lone best-of-n reply's candidates), and
- no other engine in this process is stepping (:func:`busy_engines`), and
- it is measured to be faster *now*: other processes may be using the other core, and then two
  threads make a step several times slower, not faster. :class:`StepThreads` times steps under
  both counts (short probes, repeated less often while the boost keeps losing) and boosts
  only while the boost's steps are clearly shorter.

The thread count never changes a reply's text (every kernel gives the same bits whatever the
thread count: see the tests). Switching costs about 0.1 us (``torch.set_num_threads``) and
happens only when the choice changes.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import torch

BOOST_ROWS = 16  # most rows a boosted step may have: a lone reply's best-of-n candidates
BOOST_REPLIES = 1  # most replies (running or queued) an engine may serve while boosted
PROBE_STEPS = 32  # steps timed under the thread count not in use, to see whether it pays now
PROBE_EVERY = 512  # steps between probes while the boost wins ...
PROBE_EVERY_MAX = 16_384  # ... and, doubling each time it loses, at most this many while it loses
MARGIN = 0.05  # the boost must be this much faster per step to be used

_busy = 0
_busy_lock = threading.Lock()


def busy_engines() -> int:
    """Engines in this process that have replies in their batch now."""
    return _busy


def _count_busy(delta: int) -> None:
    global _busy
    with _busy_lock:
        _busy += delta


def boost_allowed(
    rows: int, replies: int, busy: int, max_rows: int = BOOST_ROWS, max_replies: int = BOOST_REPLIES
) -> bool:
    """Whether a step of ``rows`` rows, for ``replies`` replies (running or queued), may use
    every core while ``busy`` engines (this one included) are stepping: only a lone reply's
    small batch, and only when no other engine needs a core."""
    return 1 <= rows <= max_rows and replies <= max_replies and busy <= 1


@dataclass
class _Times:
    """Step seconds at one batch size under the normal and the boosted count: the mean of the
    latest :data:`PROBE_STEPS` steps under each. The mean, not the median: when other work
    takes the cores, two threads lose mostly through the few steps whose second thread was
    descheduled (milliseconds each), which a median would not see."""

    normal: float | None = None
    boost: float | None = None
    next_probe: int = 0
    every: int = PROBE_EVERY
    window: list[float] = field(default_factory=list)  # steps under the count in use, not yet in a figure


class StepThreads:
    """The torch thread count of one engine's worker, chosen before each step.

    ``normal`` is the count it always may use; ``boost`` the count for a lone reply when
    nothing else needs the cores (no boost when ``boost <= normal``). Call :meth:`busy` when
    the engine's batch fills or empties, :meth:`before_step` before each step and
    :meth:`after_step` after it, all from the worker thread.
    """

    def __init__(
        self, normal: int, boost: int, max_rows: int = BOOST_ROWS, max_replies: int = BOOST_REPLIES
    ) -> None:
        self.normal = normal
        self.boost = boost
        self.max_rows = max_rows
        self.max_replies = max_replies
        self.enabled = boost > normal
        self.current = normal
        self.boosted_steps = 0  # how many steps used the boost (for tests and metrics)
        self._busy = False
        self._times: dict[int, _Times] = {}
        self._steps = 0
        self._probing: int | None = None  # the count a probe runs under, while one runs
        self._rows = 0
        self._t0 = 0.0
        self._warm = False  # the step after a switch wakes threads up: it is not timed

    def start(self) -> None:
        """Set the normal count on the calling (worker) thread."""
        torch.set_num_threads(self.normal)
        self.current = self.normal

    def busy(self, busy: bool) -> None:
        """The engine's batch became non-empty (True) or empty (False): counted process-wide.

        Going idle also drops back to the normal count, so spare threads stop spinning.
        """
        if busy == self._busy:
            return
        self._busy = busy
        _count_busy(1 if busy else -1)
        if not busy:
            self._use(self.normal)

    def _use(self, threads: int) -> None:
        if threads != self.current:
            torch.set_num_threads(threads)
            self.current = threads
            self._warm = False
            for times in self._times.values():  # their steps so far ran under the other count
                times.window.clear()

    def before_step(self, rows: int, replies: int = 1) -> None:
        """Pick the count for a step of ``rows`` rows serving ``replies`` replies; start timing it."""
        self._rows = rows
        if self.enabled:
            self._use(self._choose(rows, replies))
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        """Record the step's time under the count it used."""
        if not self.enabled:
            return
        seconds = time.perf_counter() - self._t0
        self._steps += 1
        if self.current == self.boost:
            self.boosted_steps += 1
        times = self._times.get(self._rows)
        if times is None or not self._warm:  # a step after a switch also wakes threads: not timed
            self._warm = True
            if times is not None:
                times.window.clear()
            return
        times.window.append(seconds)
        if len(times.window) >= PROBE_STEPS - 1:
            mean = statistics.fmean(times.window)
            times.window.clear()
            if self.current == self.boost:
                times.boost = mean
            else:
                times.normal = mean
            if self._probing == self.current:
                self._probing = None
                self._settle(times, self.current)

    def _choose(self, rows: int, replies: int) -> int:
        if not boost_allowed(rows, replies, busy_engines(), self.max_rows, self.max_replies):
            self._probing = None  # an interrupted probe starts again when the boost is allowed
            return self.normal
        times = self._times.setdefault(rows, _Times())
        if self._probing is not None:
            return self._probing
        if times.normal is None or times.boost is None or self._steps >= times.next_probe:
            return self._probe(times)
        return self._winner(times)

    def _winner(self, times: _Times) -> int:
        if times.boost is not None and times.normal is not None and times.boost < times.normal * (1 - MARGIN):
            return self.boost
        return self.normal

    def _probe(self, times: _Times) -> int:
        """Time a few steps under the count whose figure is missing or oldest (the one not in use)."""
        if times.normal is None:
            self._probing = self.normal
        elif times.boost is None:
            self._probing = self.boost
        else:
            self._probing = self.normal if self._winner(times) == self.boost else self.boost
        return self._probing

    def _settle(self, times: _Times, probed: int) -> None:
        """After a probe: probe again soon while the boost wins, ever later while it loses."""
        if self._winner(times) == self.boost:
            times.every = PROBE_EVERY
        elif probed == self.boost:
            times.every = min(PROBE_EVERY_MAX, 2 * times.every)
        times.next_probe = self._steps + times.every
