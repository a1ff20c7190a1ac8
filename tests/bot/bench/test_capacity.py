"""The capacity bench measures what it says: finished replies are the ones the bot posted with buttons."""

from __future__ import annotations

import pytest

from bot.bench.capacity import WORKING, CapacityConfig, has_buttons, measure, sustained
from bot.bench.fake_discord import FakeDiscord
from bot.bench.report import _capacity_section
from bot.bench.suite import TARGETS
from tests.bot.e2e_bot import write_checkpoints


def finished_replies(fake: FakeDiscord) -> dict[str, str]:
    """Every reply the bot finished, as the fake holds it now: message id -> its final text."""
    messages = [*fake.original_messages.values(), *(m for ms in fake.channel_messages.values() for m in ms.values())]
    return {m["id"]: m["content"] for m in messages if m["author"]["id"] == fake.bot_user.id and has_buttons(m)}


@pytest.mark.slow
def test_finished_replies_and_characters_are_what_the_bot_posted(tmp_path):
    """Tiny random models, so a reply takes milliseconds; a second and a half of each load and trigger."""
    write_checkpoints(tmp_path / "checkpoints")
    cfg = CapacityConfig(checkpoint_dir=tmp_path / "checkpoints", loads=("closed", "open"),
                         triggers=("slash", "mention"), seconds=1.5, people=3, rates=(2.0,), warmup=False,
                         env={"CHARBOT_DEVICE": "cpu"})
    posted: dict[str, str] = {}
    result = measure(cfg, say=lambda _: None, observe=lambda fake: posted.update(finished_replies(fake)))
    runs = result["runs"]
    assert [(r["load"], r["trigger"]) for r in runs] == [
        ("closed", "slash"), ("open", "slash"), ("closed", "mention"), ("open", "mention")]
    assert sum(r["finished"] for r in runs) == len(posted) > 0
    assert sum(r["posted_chars"] for r in runs) == sum(len(text) for text in posted.values())
    assert not any(text.endswith(WORKING) for text in posted.values())  # final edits, not snapshots
    for r in runs:
        assert r["finished"] == r["requests"] > 0, r["unfinished_because"]  # a low rate: every request finished
        assert r["refused_by_kind"] == {} and r["unfinished_rate"] == 0
        assert sum(r["bot_outcomes"].values()) == r["requests"]  # the bot counted each one, under its trigger
        assert 0 < r["first_text_s"]["p50"] <= r["finished_s"]["p50"] < 5
        assert r["loop_lag_s"]["samples"] >= 1
    assert result["bot"]["settings"]["CHARBOT_COOLDOWN"] == "0"
    lines = _capacity_section({"capacity": result, "targets": TARGETS})
    assert "## Capacity" in lines and sum(line.startswith(("| closed", "| open")) for line in lines) == 4


def test_the_sustained_rate_is_the_last_within_bounds_before_the_first_that_is_not():
    def row(rate: float, p95: float, unanswered: float = 0.0) -> dict:
        return {"load": "open", "trigger": "slash", "rate_per_s": rate, "finished_s": {"p95": p95},
                "unfinished_rate": unanswered}

    rows = [row(2, 0.5), row(5, 1.9), row(10, 2.5), row(20, 1.0, unanswered=0.2)]
    assert sustained(rows, 2.0, 0.01) == {"slash": 5}
    assert sustained([row(2, 3.0)], 2.0, 0.01) == {"slash": None}
    assert sustained([row(2, 1.0, unanswered=0.02)], 2.0, 0.01) == {"slash": None}
