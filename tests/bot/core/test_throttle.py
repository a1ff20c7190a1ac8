"""The per-user cooldown."""

from __future__ import annotations

import math

from bot.core.throttle import Cooldown


def test_one_request_per_interval_and_never_two_at_once():
    now = [0.0]
    c = Cooldown(5.0, clock=lambda: now[0])
    assert c.wait_for("ann") == 0
    c.start("ann")
    assert c.wait_for("ann") == math.inf
    c.done("ann")
    now[0] = 2.0
    assert c.wait_for("ann") == 3.0
    assert c.wait_for("bob") == 0
    now[0] = 5.0
    assert c.wait_for("ann") == 0


def test_zero_seconds_only_prevents_overlap():
    c = Cooldown(0.0)
    c.start(1)
    assert c.wait_for(1) == math.inf
    c.done(1)
    assert c.wait_for(1) == 0
