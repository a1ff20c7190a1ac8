"""Every core for a lone reply: the policy, the measured choice, and that the text never changes."""

from __future__ import annotations

import pytest
import torch

from model import engine as engine_mod
from model import step_threads
from model.checkpoint import Checkpoint
from model.device import cpu_threads, generation_precisions
from model.engine import Engine
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig
from model.sample import SampleSettings, generate
from model.step_threads import (
    BOOST_REPLIES,
    BOOST_ROWS,
    PROBE_EVERY,
    PROBE_STEPS,
    Others,
    StepThreads,
    boost_allowed,
    busy_engines,
)


def test_boost_only_for_a_small_batch_of_the_only_busy_engine():
    assert boost_allowed(1, 1, 1)
    assert boost_allowed(BOOST_ROWS, 1, 1)  # a lone reply's best-of-n candidates
    assert not boost_allowed(BOOST_ROWS + 1, 1, 1)  # the batch grew
    assert not boost_allowed(2, BOOST_REPLIES + 1, 1)  # a crowd of replies, running or queued
    assert not boost_allowed(1, 1, 2)  # another engine steps
    assert not boost_allowed(0, 0, 0)
    assert cpu_threads("boost") >= cpu_threads("generation")


class FakeClock:
    """perf_counter for :class:`StepThreads`: a step lasts ``cost[threads]`` seconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cost: dict[int, float]) -> None:
        self.now = 0.0
        self.cost = cost
        monkeypatch.setattr(step_threads.time, "perf_counter", lambda: self.now)

    def steps(self, chooser: StepThreads, n: int, rows: int = 1, replies: int = 1) -> list[int]:
        used = []
        for _ in range(n):
            chooser.before_step(rows, replies)
            self.now += self.cost[chooser.current]
            chooser.after_step()
            used.append(chooser.current)
        return used


@pytest.fixture
def chooser(monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the choice, not the process, is tested
    monkeypatch.setattr(step_threads.Others, "update", lambda self: 0.0)  # not this machine's load
    got = StepThreads(1, 2)
    got.busy(True)
    yield got
    got.busy(False)
    got.release()


def test_the_boost_is_used_when_it_is_measured_faster(monkeypatch, chooser):
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    used = clock.steps(chooser, PROBE_EVERY)
    assert used[-100:] == [2] * 100
    assert busy_engines() == 1


def test_the_boost_backs_off_when_other_work_makes_it_slower(monkeypatch, chooser):
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 600e-6})
    used = clock.steps(chooser, 40 * PROBE_EVERY)
    assert used[-100:] == [1] * 100
    assert used.count(2) < 0.01 * len(used)  # the probes grow rarer while the boost loses
    clock.cost[2] = 100e-6  # the machine went quiet: a later probe finds the boost again
    assert clock.steps(chooser, 40 * PROBE_EVERY)[-100:] == [2] * 100


def test_boosted_steps_that_slow_down_are_probed_again_at_once(monkeypatch, chooser):
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2
    clock.cost[2] = 600e-6  # another process took the other core
    assert clock.steps(chooser, 4 * PROBE_STEPS)[-PROBE_STEPS:] == [1] * PROBE_STEPS


def test_the_boost_turns_off_when_another_engine_steps_or_the_batch_grows(monkeypatch, chooser):
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2
    assert clock.steps(chooser, 1, rows=BOOST_ROWS + 1) == [1]
    assert clock.steps(chooser, 1, rows=2, replies=BOOST_REPLIES + 1) == [1]
    other = StepThreads(1, 2)
    other.busy(True)
    try:
        assert clock.steps(chooser, 5) == [1] * 5
    finally:
        other.busy(False)
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2


def test_no_boost_while_other_processes_use_a_core(monkeypatch, chooser):
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2
    monkeypatch.setattr(step_threads.Others, "update", lambda self: 1.0)  # a busy process beside us
    assert set(clock.steps(chooser, PROBE_EVERY)) == {1}
    monkeypatch.setattr(step_threads.Others, "update", lambda self: 0.0)
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2


def test_other_processes_are_measured_in_cores(monkeypatch):
    """Machine busy time less this process's own, per second of wall time."""
    clock = {"now": 100.0}
    samples = iter([(50.0, 10.0), (50.9, 10.5)])  # (machine busy s, this process s)
    monkeypatch.setattr(step_threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(step_threads.Others, "_sample", staticmethod(lambda: next(samples)))
    others = Others(start=False)
    assert others.update() == float("inf")  # no reading yet: counted busy
    clock["now"] += 1.0
    others.read()
    assert others.update() == pytest.approx(0.4)  # 0.9 s busy, 0.5 s of it ours


def test_only_one_engine_per_process_ever_boosts(monkeypatch, chooser):
    """Each worker that boosts keeps an OpenMP pool; two pools on two cores throttle both."""
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    assert clock.steps(chooser, PROBE_EVERY)[-1] == 2
    chooser.busy(False)
    other = StepThreads(1, 2)
    other.busy(True)
    try:
        assert set(clock.steps(other, PROBE_EVERY)) == {1}
        chooser.release()  # the first engine's worker ended
        assert clock.steps(other, PROBE_EVERY)[-1] == 2
    finally:
        other.busy(False)
        other.release()
    chooser.busy(True)


def test_every_fused_engine_may_boost_in_turn(monkeypatch, chooser):
    """The fused kernel's helpers are its own threads, not an OpenMP pool, so the one-owner rule
    is only for torch's threads: a second fused engine boosts while the first is idle."""
    clock = FakeClock(monkeypatch, {1: 150e-6, 2: 118e-6})
    counts: list[int] = []
    first = StepThreads(1, 2, max_rows=64, max_replies=64, min_rows=3, setter=counts.append)
    second = StepThreads(1, 2, max_rows=64, max_replies=64, min_rows=3, setter=counts.append)
    try:
        chooser.busy(False)
        first.busy(True)
        assert clock.steps(first, PROBE_EVERY, rows=8)[-1] == 2
        first.busy(False)
        second.busy(True)
        assert clock.steps(second, PROBE_EVERY, rows=8)[-1] == 2  # the first still holds no right to it
        first.busy(True)  # both step now: neither boosts
        assert set(clock.steps(second, PROBE_EVERY, rows=8)) == {1}
    finally:
        for s in (first, second):
            s.busy(False)
            s.release()
        chooser.busy(True)


def test_no_boost_with_explicit_threads_or_when_turned_off(trained):
    ck = Checkpoint(trained, trained.config)
    with Engine(ck, threads=1) as eng:
        assert not eng._threads.enabled
    with Engine(ck, boost_threads=False) as eng:
        assert not eng._threads.enabled


@pytest.mark.parametrize("size", ["tiny", "2x512"])
@pytest.mark.parametrize("precision", generation_precisions(torch.device("cpu")))
def test_a_step_gives_the_same_bits_with_more_threads(trained, precision, size):
    """At the shipped size too, where oneDNN has enough work to split it between threads."""
    if size == "tiny":
        model = trained
    else:
        torch.manual_seed(0)
        model = CharLSTM(ModelConfig(hidden_size=512, n_layers=2, dropout=0.0)).eval()
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            step = FastStep(model, 8, "cpu", precision)
            got = []
            for i in range(20):
                step.codes[:2] = [i % 50, (7 * i) % 50]
                got.append(step.step(2).clone())
            outs.append(torch.stack(got))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


def test_boosted_replies_are_the_reference_text(trained, monkeypatch):
    """Forced to boost whenever the policy allows (2 threads, whatever this machine has)."""
    monkeypatch.setattr(engine_mod, "cpu_threads", lambda use: 2 if use == "boost" else 1)
    monkeypatch.setattr(StepThreads, "_choose",
                        lambda self, rows, replies: self.boost if boost_allowed(
                            rows, replies, busy_engines(), self.max_rows, self.max_replies) else self.normal)
    settings = SampleSettings(seed=11, max_chars=120)
    with Engine(Checkpoint(trained, trained.config), max_batch=8) as eng:
        alone = eng.submit("the cat", settings).result(timeout=60)
        assert eng.boosted_steps > 0
        crowd = [eng.submit("the cat", SampleSettings(seed=s, max_chars=120)) for s in (11, 12, 13, 14)]
        in_crowd = crowd[0].result(timeout=60)
    want = generate(trained, ["the cat"], settings)[0]
    assert alone.text == in_crowd.text == want.text
    assert alone.logprobs == in_crowd.logprobs
