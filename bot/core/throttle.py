"""Per-person cooldown and a per-channel bound, so one person or one busy channel cannot keep the
models busy for everyone else, whatever made the bot speak (a command, a mention, a button)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable


class Cooldown:
    """At most one request per key every ``seconds``, and never two running at once."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._running: set[Hashable] = set()

    def wait_for(self, key: Hashable) -> float:
        """Seconds until ``key`` may start again (0 if now); inf while its last request still runs."""
        if key in self._running:
            return math.inf
        last = self._last.get(key)
        if last is None:
            return 0.0
        return max(0.0, last + self.seconds - self._clock())

    def start(self, key: Hashable) -> None:
        self._last[key] = self._clock()
        self._running.add(key)
        if len(self._last) > 10_000:  # forget people who have not asked for a while
            now = self._clock()
            self._last = {k: t for k, t in self._last.items() if now - t < self.seconds or k in self._running}

    def done(self, key: Hashable) -> None:
        self._running.discard(key)


class Crowding:
    """At most ``limit`` requests running at once per key (a channel)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[Hashable, int] = {}

    def full(self, key: Hashable) -> bool:
        return self._running.get(key, 0) >= self.limit

    def start(self, key: Hashable) -> None:
        self._running[key] = self._running.get(key, 0) + 1

    def done(self, key: Hashable) -> None:
        left = self._running.get(key, 0) - 1
        if left > 0:
            self._running[key] = left
        else:
            self._running.pop(key, None)
