"""How many torch threads an engine's worker steps with: every core for a lone reply, when that pays.

An engine's worker normally steps with :func:`model.device.cpu_threads` ("generation"): one
thread on a two-core machine, because the event loop and other engines need the other core
and oversubscribed threads wait on each other. But a lone reply on an otherwise idle machine
leaves that core unused, and a second thread makes its steps somewhat faster. Two threads
help a lone reply only when nothing else wants the second core, so the worker may step with
every core's thread (:func:`model.device.cpu_threads` "boost") only when

- it serves few replies (at most :data:`BOOST_REPLIES`, counting those queued: more mean a
  crowd, whose replies the event loop must serve) in few rows (at most :data:`BOOST_ROWS`:
  a lone best-of-n reply's candidates), and
- no other engine in this process is stepping (:func:`busy_engines`), and
- other processes leave a core free: over the last quarter second they used less than
  :data:`OTHERS_MAX` of a core (``/proc/stat`` less this process's own time, :class:`Others`).
  Short probes cannot see this alone: with a busy process beside it, the scheduler favours a
  thread that has just woken, so a probe can find two threads faster while sustained use
  makes the helper wait for timeslices, slowing the reply and the other process alike;
- it is measured to be faster *now*: other processes may be using the other core, and then two
  threads make a step several times slower, not faster. :class:`StepThreads` probes: it
  alternates the two counts in blocks of a few steps for a few dozen steps (side by side, so a
  change in the machine's load hits both alike; the first step of a block, which wakes the
  threads, is not timed, as steady use does not pay it) and then uses the faster. It probes
  again now and then, ever more rarely while the boost keeps losing, and at once when boosted
  steps get slower (other work arrived).

The boost only pays where the engine workers are the only threads that ever ran torch work
on several threads: libgomp (PyTorch's OpenMP on Linux) keeps a thread pool for every thread
that did, and once the process has more OpenMP threads than cores it stops spinning almost at
once, so a boosted step wakes its helper thread through the kernel several times per step and
becomes several times slower than an unboosted one. A serving process therefore calls
:func:`serve_threads` on the thread that loads its models, before loading them, and only one
engine per process ever boosts (the first to claim it, until its worker ends: a worker's pool
lives as long as the worker). Where something else has made a pool anyway, the probes find
the boost slower and do not use it.

An engine on the fused step (:mod:`model.fused_step`) uses the same rules for its kernel's
own threads (``setter``), which share a step's rows: there a lone row gains nothing and a
crowd gains most, so it may boost any step of at least ``min_rows`` rows, with any number of
replies; and as they are not OpenMP threads, every such engine may boost (while no other
engine steps), not only the first to claim the right.

The thread count never changes a reply's text (every kernel gives the same bits whatever the
thread count: see the tests). Switching is cheap (``torch.set_num_threads``) and happens only
when the choice changes. The figures behind these rules, and the CPU they were measured on,
are in model/README.md ("Speed").
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.device import cpu_threads

BOOST_ROWS = 16  # most rows a boosted step may have: a lone reply's best-of-n candidates
BOOST_REPLIES = 1  # most replies (running or queued) an engine may serve while boosted
PROBE_STEPS = 32  # steps under each count in a probe ...
PROBE_BLOCK = 8  # ... in blocks of this many, alternating
PROBE_EVERY = 512  # steps between probes while the boost wins ...
PROBE_EVERY_MAX = 16_384  # ... and, doubling each time it loses, at most this many while it loses
MARGIN = 0.05  # the boost must be this much faster per step to be used
DRIFT = 0.25  # boosted steps this much slower than in their probe: probe again at once
OTHERS_MAX = 0.25  # cores other processes may use while an engine boosts
OTHERS_EVERY = 0.25  # seconds between readings of what other processes use (by a daemon thread)

_busy = 0
_busy_lock = threading.Lock()
_owner: StepThreads | None = None  # the one engine in this process that may boost


def busy_engines() -> int:
    """Engines in this process that have replies in their batch now."""
    return _busy


def _count_busy(delta: int) -> None:
    global _busy
    with _busy_lock:
        _busy += delta


class Others:
    """How many cores other processes used lately: ``/proc/stat``'s busy time less this process's.

    A daemon thread reads them every :data:`OTHERS_EVERY` seconds (a reading is a file read and
    a parse, too dear for every step), so a reply that starts after an idle spell sees the last
    quarter second, not the whole spell (a finished job must not keep the boost off), and never
    waits for a reading.
    Until the first reading they count as busy; where ``/proc/stat`` cannot be read, as idle,
    and the probes decide alone.
    """

    def __init__(self, start: bool = True) -> None:
        self._at = time.monotonic()
        self._busy, self._mine = self._sample()
        self.cores = math.inf if self._busy >= 0 else 0.0
        if start and self._busy >= 0:
            threading.Thread(target=self._watch, name="charbot-cpu-watch", daemon=True).start()

    @staticmethod
    def _sample() -> tuple[float, float]:
        """Seconds of CPU the machine and this process have used so far (machine: -1 if unknown)."""
        times = os.times()
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return -1.0, times.user + times.system
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system

    def _watch(self) -> None:
        while True:
            time.sleep(OTHERS_EVERY)
            self.read()

    def read(self) -> None:
        """Take a reading: the cores other processes used since the previous one."""
        now = time.monotonic()
        busy, mine = self._sample()
        if busy >= 0 and self._busy >= 0 and now > self._at:
            self.cores = max(0.0, ((busy - self._busy) - (mine - self._mine)) / (now - self._at))
        self._at, self._busy, self._mine = now, busy, mine

    def update(self) -> float:
        """The cores other processes used in the latest reading."""
        return self.cores


_others: Others | None = None


def shared_others() -> Others:
    """The process's one :class:`Others`: what other processes use is the machine's, not an
    engine's, and a new engine then knows it at once."""
    global _others
    with _busy_lock:
        if _others is None:
            _others = Others()
        return _others


def serve_threads() -> None:
    """Give the calling thread the engines' normal torch thread count; call it before loading models.

    So that only engine workers own OpenMP thread pools and a lone reply's boost pays (see the
    module docstring). The loading thread (usually the event loop's) then runs its own torch
    work on one core, as the engines' thread rule intends.
    """
    torch.set_num_threads(cpu_threads("generation"))


def boost_allowed(
    rows: int, replies: int, busy: int, max_rows: int = BOOST_ROWS, max_replies: int = BOOST_REPLIES,
    min_rows: int = 1,
) -> bool:
    """Whether a step of ``rows`` rows, for ``replies`` replies (running or queued), may use
    every core while ``busy`` engines (this one included) are stepping: only a lone reply's
    small batch (or, for the fused kernel, which splits rows, a batch of at least ``min_rows``),
    and only when no other engine needs a core."""
    return max(1, min_rows) <= rows <= max_rows and replies <= max_replies and busy <= 1


@dataclass
class _Times:
    """What the last probe found at one band of batch sizes, and the count used there until the next.

    Step times are means, not medians: when other work takes the cores, two threads lose
    mostly through the few steps whose second thread was descheduled (milliseconds each),
    which a median would not see.
    """

    normal: float = 0.0  # mean step seconds under each count in the last probe
    boost: float = 0.0
    use: int = 0  # the count stepped with between probes; 0 before the first
    next_probe: int = 0
    every: int = PROBE_EVERY
    window: list[float] = field(default_factory=list)  # boosted steps since the probe, watched for drift


class StepThreads:
    """The torch thread count of one engine's worker, chosen before each step.

    ``normal`` is the count it always may use; ``boost`` the count for a lone reply when
    nothing else needs the cores (no boost when ``boost <= normal``). Call :meth:`busy` when
    the engine's batch fills or empties, :meth:`before_step` before each step and
    :meth:`after_step` after it, all from the worker thread.
    """

    def __init__(
        self, normal: int, boost: int, max_rows: int = BOOST_ROWS, max_replies: int = BOOST_REPLIES,
        min_rows: int = 1, setter: Callable[[int], None] | None = None,
    ) -> None:
        self.normal = normal
        self.boost = boost
        self.max_rows = max_rows
        self.max_replies = max_replies
        self.min_rows = min_rows  # fewest rows a boosted step may have (the fused kernel splits rows)
        self._set = setter  # what a count is given to: torch's threads, else this callable's
        self.enabled = boost > normal
        self.current = normal
        self.boosted_steps = 0  # how many steps used the boost (for the bench and tests)
        self._busy = False
        self._times: dict[int, _Times] = {}
        self._steps = 0
        self._probing: _Times | None = None  # the batch size a probe is timing, while one runs
        self._samples: dict[int, list[float]] = {}
        self._probe_step = 0
        self._rows = 0
        self._t0 = 0.0
        self.others = shared_others() if self.enabled else None

    def start(self) -> None:
        """Set the normal count on the calling (worker) thread."""
        torch.set_num_threads(self.normal)
        if self._set is not None:
            self._set(self.normal)
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

    def _claim(self) -> bool:
        """Whether this engine may boost: the first to ask holds the right until :meth:`release`.

        Only for torch's threads, whose OpenMP pools are the reason (see the module docstring):
        the fused kernel's helpers are its own threads, so every fused engine may boost while no
        other engine steps.
        """
        global _owner
        if self._set is not None:
            return True
        if _owner is self:
            return True
        with _busy_lock:
            if _owner is None:
                _owner = self
        return _owner is self

    def release(self) -> None:
        """The worker is ending (and its thread pool with it): another engine may boost."""
        global _owner
        with _busy_lock:
            if _owner is self:
                _owner = None

    def _use(self, threads: int) -> None:
        if threads != self.current:
            (self._set or torch.set_num_threads)(threads)
            self.current = threads

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
        times = self._times.get(self._rows.bit_length())
        if times is None:
            return
        if self._probing is times:
            if self._probe_step % PROBE_BLOCK:
                self._samples[self.current].append(seconds)
            self._probe_step += 1
            if self._probe_step >= 2 * PROBE_STEPS:
                self._settle(times)
        elif self._probing is None and times.use == self.boost == self.current:
            self._watch(times, seconds)

    def _choose(self, rows: int, replies: int) -> int:
        if (
            not boost_allowed(rows, replies, busy_engines(), self.max_rows, self.max_replies, self.min_rows)
            or (self.others is not None and self.others.update() >= OTHERS_MAX)
            or not self._claim()
        ):
            self._probing = None  # an interrupted probe starts afresh when the boost is allowed again
            return self.normal
        times = self._times.setdefault(rows.bit_length(), _Times())  # sizes 1, 2-3, 4-7, 8-15, 16-31
        if self._probing is not times and (not times.use or self._steps >= times.next_probe):
            self._probing = times
            self._samples = {self.normal: [], self.boost: []}
            self._probe_step = 0
        if self._probing is times:
            return self.boost if (self._probe_step // PROBE_BLOCK) % 2 else self.normal
        return times.use

    def _settle(self, times: _Times) -> None:
        """End a probe: use the faster count; probe again soon while the boost wins, ever later while it loses."""
        times.normal = statistics.fmean(self._samples[self.normal])
        times.boost = statistics.fmean(self._samples[self.boost])
        self._probing = None
        if times.boost < times.normal * (1 - MARGIN):
            times.use, times.every = self.boost, PROBE_EVERY
        else:
            times.use, times.every = self.normal, min(PROBE_EVERY_MAX, 2 * times.every)
        times.next_probe = self._steps + times.every
        times.window.clear()

    def _watch(self, times: _Times, seconds: float) -> None:
        """Boosted steps that no longer beat the probe's unboosted ones: stop boosting, probe later.

        Short probes can flatter the boost when another process competes for the core: the
        scheduler favours a thread that has just woken, and only sustained use shows the
        timeslices the helper thread then waits for. So the boosted steps stay watched, and a
        window of them that is no faster than the unboosted steps ends the boost (backing off
        as a lost probe does); one merely slower than in its probe asks for a probe at once.
        """
        times.window.append(seconds)
        if len(times.window) < PROBE_STEPS:
            return
        mean = statistics.fmean(times.window)
        times.window.clear()
        if mean >= times.normal * (1 - MARGIN):
            times.use, times.every = self.normal, min(PROBE_EVERY_MAX, 2 * times.every)
            times.next_probe = self._steps + times.every
        elif mean > times.boost * (1 + DRIFT):
            times.next_probe = self._steps
