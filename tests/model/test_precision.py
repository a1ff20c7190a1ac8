"""The engine's ``auto`` precision: the fastest within the fidelity bounds, measured once per checkpoint and CPU.

Behaviour only: measurements are injected where a choice is tested, so no test depends on
how fast this machine is.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

import model.device
import model.precision as precision
from model import fused_step
from model.checkpoint import Checkpoint
from model.device import GENERATION_PRECISIONS
from model.engine import Engine
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig
from model.precision import Bounds, Fidelity, Lineage, Measured, Speed, auto_precision, choose

CPU = torch.device("cpu")


def measured(name: str, score: float, kl: float = 1e-6, top1: float = 1.0, error: str | None = None) -> Measured:
    """A precision measured as ``score`` ms per step at both sizes, with the given fidelity."""
    if error is not None:
        return Measured(name, error=error)
    return Measured(name, Fidelity(name, 2048, kl, kl, kl, top1, 0.0), Speed(name, score, score, 32))


class FakeMeasure:
    """Stands in for :func:`model.precision.measure`: counts calls, answers with given scores."""

    def __init__(self, scores: dict[str, float], kl: dict[str, float] | None = None) -> None:
        self.scores, self.kl = scores, kl or {}
        self.calls: list[list[str]] = []

    def __call__(self, model, device, precisions, max_batch=64, probe=None) -> list[Measured]:
        self.calls.append(list(precisions))
        return [measured(p, self.scores.get(p, 1.0), self.kl.get(p, 1e-6)) for p in precisions]


@pytest.fixture
def no_fused(monkeypatch):
    """A machine where the fused step's kernel cannot be built."""
    monkeypatch.setattr(precision, "fused_candidates", lambda model, device: [])
    monkeypatch.setattr(precision, "_fused_note", lambda device: "")


@pytest.fixture
def three(monkeypatch, no_fused):
    """A machine where fp32, bf16 and int8 all run natively (and no fused step)."""
    monkeypatch.setattr(model.device, "generation_precisions", lambda device: ["fp32", "bf16", "int8"])


# ---- the choice ------------------------------------------------------------------------


def test_the_fastest_within_the_bounds_is_chosen():
    got, why = choose([measured("fp32", 1.0), measured("bf16", 0.6), measured("int8", 0.8)])
    assert got == "bf16" and "fastest" in why


def test_a_precision_outside_the_bounds_is_never_chosen_even_when_fastest():
    for bad in (measured("int8", 0.1, kl=2e-3), measured("int8", 0.1, top1=0.98)):
        got, why = choose([measured("fp32", 1.0), measured("bf16", 0.6), bad])
        assert got == "bf16" and "int8 is outside the bounds" in why


def test_bounds_are_inclusive():
    assert choose([measured("fp32", 1.0), measured("int8", 0.5, kl=1e-3, top1=0.99)])[0] == "int8"


def test_a_tie_goes_to_the_more_faithful_precision():
    assert choose([measured("fp32", 1.0), measured("bf16", 0.97)])[0] == "fp32"  # within the margin
    assert choose([measured("fp32", 1.0), measured("bf16", 0.5), measured("int8", 0.49)])[0] == "bf16"
    assert choose([measured("fp32", 1.0), measured("bf16", 1.0)])[0] == "fp32"


def test_fastest_weighs_a_lone_reply_and_a_crowd_alike():
    exact = Fidelity("x", 1, 0, 0, 0, 1, 0)
    crowd_only = Measured("int8", exact, Speed("int8", lone_ms=0.5, crowd_ms=0.3, crowd=32))
    balanced = Measured("bf16", exact, Speed("bf16", lone_ms=0.2, crowd_ms=0.5, crowd=32))
    assert choose([measured("fp32", 1.0), balanced, crowd_only])[0] == "bf16"  # sqrt(.1) < sqrt(.15)


def test_a_failed_path_is_not_chosen_and_nothing_qualifying_falls_back_to_fp32():
    got, why = choose([measured("fp32", 1.0), measured("int8", 0, error="RuntimeError: no kernel")])
    assert got == "fp32" and "int8 failed (RuntimeError: no kernel)" in why
    got, why = choose([measured("fp32", 1.0, kl=1.0), measured("bf16", 0.5, kl=1.0)])
    assert got == "fp32" and "nothing measured within the bounds" in why


# ---- auto on a machine -------------------------------------------------------------------


def test_auto_picks_from_measurements_and_records_them(trained, three, monkeypatch, tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.7, "int8": 0.4}, kl={"int8": 5e-3})
    monkeypatch.setattr(precision, "measure", fake)
    decision = auto_precision(trained, CPU, threads=1, cache=tmp_path / "precision.json")
    assert decision.precision == "bf16" and fake.calls == [["fp32", "bf16", "int8"]]
    entry = next(iter(json.loads((tmp_path / "precision.json").read_text())["entries"].values()))
    assert entry["precision"] == "bf16" and "int8 is outside the bounds" in entry["reason"]
    assert [m["precision"] for m in entry["measured"]] == ["fp32", "bf16", "int8"]
    assert entry["measured"][2]["fidelity"]["kl_mean"] == 5e-3 and entry["measured"][1]["speed"]["score_ms"] == 0.7
    assert entry["key"]["cpu"]["model"] and entry["key"]["torch"] == torch.__version__


def test_a_machine_with_only_fp32_measures_nothing(trained, monkeypatch, tmp_path, no_fused):
    monkeypatch.setattr(model.device, "generation_precisions", lambda device: ["fp32"])
    fake = FakeMeasure({})
    monkeypatch.setattr(precision, "measure", fake)
    decision = auto_precision(trained, CPU, cache=tmp_path / "p.json")
    assert decision.precision == "fp32" and fake.calls == [] and "only fp32" in decision.reason


def test_a_cache_hit_skips_measuring(trained, three, monkeypatch, tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5, "int8": 0.7})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "state" / "precision.json"  # its folder is made on first write
    first = auto_precision(trained, CPU, threads=1, cache=cache)
    again = auto_precision(trained, CPU, threads=1, cache=cache)
    assert len(fake.calls) == 1 and not first.cached and again.cached
    assert again.precision == first.precision == "bf16" and again.reason == first.reason
    assert [m.speed.score_ms for m in again.measured] == [1.0, 0.5, 0.7]


def test_the_cache_is_keyed_per_checkpoint_cpu_threads_and_precisions_on_offer(trained, three, monkeypatch, tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "precision.json"
    auto_precision(trained, CPU, threads=1, cache=cache)
    other = copy.deepcopy(trained)
    with torch.no_grad():
        other.head.bias.add_(1e-3)  # another fine-tuned version: other weights
    auto_precision(other, CPU, threads=1, cache=cache)
    assert len(fake.calls) == 2
    monkeypatch.setattr(precision, "cpu_identity", lambda: {"model": "Another CPU", "flags": ["avx2"]})
    auto_precision(trained, CPU, threads=1, cache=cache)
    assert len(fake.calls) == 3
    auto_precision(trained, CPU, threads=2, cache=cache)
    assert len(fake.calls) == 4
    monkeypatch.setattr(model.device, "generation_precisions", lambda device: ["fp32", "bf16"])
    auto_precision(trained, CPU, threads=2, cache=cache)
    assert len(fake.calls) == 5
    assert len(json.loads(cache.read_text())["entries"]) == 5  # every decision kept beside the others


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"entries": 3}', ""])
def test_a_corrupt_cache_is_measured_again_and_rewritten(trained, three, monkeypatch, tmp_path, caplog, content):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "precision.json"
    cache.write_text(content)
    with caplog.at_level(logging.WARNING, logger="model.precision"):
        assert auto_precision(trained, CPU, cache=cache).precision == "bf16"
    assert len(fake.calls) == 1 and "precision cache" in caplog.text
    assert len(json.loads(cache.read_text())["entries"]) == 1
    assert auto_precision(trained, CPU, cache=cache).cached and len(fake.calls) == 1


def test_a_damaged_entry_is_measured_again(trained, three, monkeypatch, tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "precision.json"
    auto_precision(trained, CPU, cache=cache)
    data = json.loads(cache.read_text())
    for entry in data["entries"].values():
        entry["measured"] = [{"no": "precision"}]
    cache.write_text(json.dumps(data))
    assert not auto_precision(trained, CPU, cache=cache).cached and len(fake.calls) == 2


def test_an_unwritable_cache_is_only_logged(trained, three, monkeypatch, tmp_path, caplog):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5})
    monkeypatch.setattr(precision, "measure", fake)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="model.precision"):
        assert auto_precision(trained, CPU, cache=blocker / "precision.json").precision == "bf16"
    assert "not written" in caplog.text


def test_without_a_cache_every_engine_measures(trained, three, monkeypatch):
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5})
    monkeypatch.setattr(precision, "measure", fake)
    auto_precision(trained, CPU)
    auto_precision(trained, CPU)
    assert len(fake.calls) == 2


def test_a_failing_measurement_serves_fp32_and_is_not_cached(trained, three, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("no reference")

    monkeypatch.setattr(precision, "measure", broken)
    decision = auto_precision(trained, CPU, cache=tmp_path / "p.json")
    assert decision.precision == "fp32" and "measurement failed" in decision.reason
    assert not (tmp_path / "p.json").exists()


# ---- a fine-tuned checkpoint: its relative's step times, its own fidelity ------------------------

BASE, V1, V2 = "/state/base.safetensors", "/state/versions/g5-rules/v0001.safetensors", "/state/g5-bard/v1.safetensors"


class FakeFidelities:
    """Stands in for :func:`model.precision.fidelities`: counts calls, answers with given KLs (else exact)."""

    def __init__(self, kl: dict[str, float] | None = None) -> None:
        self.kl = kl or {}
        self.calls: list[list[str]] = []

    def __call__(self, model, device, precisions, max_batch=64, probe=None) -> list[Measured]:
        self.calls.append(list(precisions))
        return [Measured(p, Fidelity(p, 2048, k, k, k, 1.0, 0.0)) for p in precisions
                for k in [self.kl.get(p, 1e-6)]]


def fine_tuned(model: torch.nn.Module, nudge: float) -> torch.nn.Module:
    """Another set of weights of the same shapes, as fine-tuning leaves them."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.bias.add_(nudge)
    return other


@pytest.fixture
def timed(monkeypatch):
    """The full measurement, faked: bf16 fastest in the bounds, int8 faster but outside them."""
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.5, "int8": 0.3}, kl={"int8": 5e-3})
    monkeypatch.setattr(precision, "measure", fake)
    return fake


def test_a_second_checkpoint_from_the_same_parent_reuses_the_step_times_and_checks_its_own_fidelity(
        trained, three, timed, monkeypatch, tmp_path):
    checked = FakeFidelities(kl={"int8": 5e-3})
    monkeypatch.setattr(precision, "fidelities", checked)
    cache = tmp_path / "precision.json"
    first = auto_precision(fine_tuned(trained, 1e-3), CPU, threads=1, cache=cache, lineage=Lineage(V1, BASE))
    assert first.precision == "bf16" and len(timed.calls) == 1 and checked.calls == []  # measured in full

    second = auto_precision(fine_tuned(trained, 2e-3), CPU, threads=1, cache=cache, lineage=Lineage(V2, BASE))
    assert len(timed.calls) == 1  # no step timed again
    assert checked.calls == [["bf16", "int8"]]  # its choice and the faster candidate, on its own weights
    assert second.precision == "bf16" and not second.cached
    assert second.reason.endswith(f"; step times as measured for a checkpoint fine-tuned from the same parent ({V1}, "
                                  "the same shapes on this machine), fidelity measured on this checkpoint")
    assert [m.speed.score_ms for m in second.measured] == [1.0, 0.5, 0.3]
    assert [m.fidelity is not None for m in second.measured] == [False, True, True]  # fp32 could not win
    assert "int8 is outside the bounds" in second.reason
    again = auto_precision(fine_tuned(trained, 2e-3), CPU, threads=1, cache=cache, lineage=Lineage(V2, BASE))
    assert again.cached and len(timed.calls) == 1 and len(checked.calls) == 1  # its own entry now


def test_the_parents_own_decision_is_reused_too(trained, three, timed, monkeypatch, tmp_path):
    checked = FakeFidelities()
    monkeypatch.setattr(precision, "fidelities", checked)
    cache = tmp_path / "precision.json"
    auto_precision(trained, CPU, threads=1, cache=cache, lineage=Lineage(BASE, None))
    child = auto_precision(fine_tuned(trained, 1e-3), CPU, threads=1, cache=cache, lineage=Lineage(V1, BASE))
    assert len(timed.calls) == 1 and checked.calls == [["bf16", "int8"]]
    assert f"step times as measured for its parent ({BASE}," in child.reason
    assert child.precision == "int8"  # within the bounds on its own weights, and the fastest: as measure would pick


def test_when_the_relatives_choice_fails_here_every_candidate_is_checked(trained, three, timed, monkeypatch,
                                                                          tmp_path):
    checked = FakeFidelities(kl={"bf16": 5e-3, "int8": 5e-3})
    monkeypatch.setattr(precision, "fidelities", checked)
    cache = tmp_path / "precision.json"
    auto_precision(trained, CPU, threads=1, cache=cache, lineage=Lineage(BASE, None))
    child = auto_precision(fine_tuned(trained, 1e-3), CPU, threads=1, cache=cache, lineage=Lineage(V1, BASE))
    assert checked.calls == [["bf16", "int8"], ["fp32"]] and len(timed.calls) == 1
    assert child.precision == "fp32" and "bf16 is outside the bounds" in child.reason


def test_no_parent_another_shape_or_another_machine_is_measured_in_full(trained, three, timed, monkeypatch,
                                                                         tmp_path):
    checked = FakeFidelities()
    monkeypatch.setattr(precision, "fidelities", checked)
    cache = tmp_path / "precision.json"
    auto_precision(trained, CPU, threads=1, cache=cache, lineage=Lineage(BASE, None))
    auto_precision(fine_tuned(trained, 1e-3), CPU, threads=1, cache=cache, lineage=Lineage(V1, None))
    auto_precision(fine_tuned(trained, 2e-3), CPU, threads=1, cache=cache, lineage=Lineage(V2, "/elsewhere/x"))
    assert len(timed.calls) == 3
    wider = CharLSTM(ModelConfig(embed_size=8, hidden_size=48, n_layers=2, dropout=0.0)).eval()
    auto_precision(wider, CPU, threads=1, cache=cache, lineage=Lineage("/state/wide.safetensors", BASE))
    assert len(timed.calls) == 4  # its info names the parent, but its steps are not the parent's
    auto_precision(fine_tuned(trained, 3e-3), CPU, threads=2, cache=cache, lineage=Lineage(V2, BASE))
    assert len(timed.calls) == 5  # other threads: other step times
    assert checked.calls == []


def test_a_loaded_checkpoints_lineage_is_its_file_and_its_recorded_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lineage = Lineage.of("v1.safetensors", {"parent": {"path": "checkpoints/base.safetensors", "corpus": "base"}})
    assert lineage == Lineage(str(tmp_path / "v1.safetensors"), str(tmp_path / "checkpoints" / "base.safetensors"))
    assert Lineage.of(None, {}) == Lineage(None, None) and Lineage.of("a", {"parent": None}).parent is None


# ---- int8 missing --------------------------------------------------------------------------


def test_without_int8_auto_never_tries_it_and_asking_for_it_is_a_clear_error(trained, monkeypatch, tmp_path):
    monkeypatch.setattr(model.device, "int8_matmul_supported", lambda: False)
    fake = FakeMeasure({"fp32": 1.0, "bf16": 0.9, "int8": 0.1})
    monkeypatch.setattr(precision, "measure", fake)
    decision = auto_precision(trained, CPU, cache=tmp_path / "p.json")
    assert decision.precision != "int8" and all("int8" not in call for call in fake.calls)
    with pytest.raises(ValueError, match="int8 is not available"):
        Engine(Checkpoint(trained, trained.config), precision="int8")
    with pytest.raises(ValueError, match="int8 is not available"):
        FastStep(trained, 1, precision="int8")


def test_a_path_that_fails_to_build_is_recorded_not_raised(trained, monkeypatch):
    real = precision.FastStep

    def fragile(model_, max_batch, device=None, precision="fp32", **kw):
        if precision == "bf16":
            raise RuntimeError("could not create a primitive descriptor\nRun with ONEDNN_VERBOSE=all")
        return real(model_, max_batch, device, precision=precision, **kw)

    monkeypatch.setattr(precision, "FastStep", fragile)
    probe = precision.Probe(rows=2, chars=16, crowd=4, steps=1, rounds=1)
    got = {m.precision: m for m in precision.measure(trained, CPU, ["fp32", "bf16"], 8, probe)}
    assert got["bf16"].error == "RuntimeError: could not create a primitive descriptor"
    assert got["fp32"].qualifies(Bounds()) and choose(list(got.values()))[0] == "fp32"


# ---- the real measurement -------------------------------------------------------------------


def test_the_measurement_reads_the_models_own_text_and_fp32_matches_the_reference(trained):
    probe = precision.Probe(rows=3, chars=24, crowd=4, steps=2, rounds=2)
    got = precision.measure(trained, CPU, ["fp32"], 8, probe)
    fp32 = got[0]
    assert fp32.error is None and fp32.fidelity.chars == 3 * 24
    assert fp32.fidelity.kl_mean < 1e-6 and fp32.fidelity.top1_agreement == 1.0
    assert fp32.speed.crowd == 4 and fp32.speed.lone_ms > 0 and fp32.speed.crowd_ms > 0


def test_the_models_own_text_is_fixed_by_the_seed(trained):
    a = precision.own_text(trained, 2, 20, seed=5)
    assert torch.equal(a, precision.own_text(trained, 2, 20, seed=5))
    assert not torch.equal(a, precision.own_text(trained, 2, 20, seed=6))
    assert a.shape == (2, 20) and int(a.min()) >= 0 and int(a.max()) < trained.config.vocab_size


def test_fidelity_takes_one_text_or_a_batch(trained):
    codes = precision.own_text(trained, 2, 30, seed=1)
    one = precision.fidelity(trained, codes[0], "fp32")
    both = precision.fidelity(trained, codes, "fp32")
    assert one.chars == 30 and both.chars == 60 and one.top1_agreement == both.top1_agreement == 1.0


# ---- the fused step's candidates ---------------------------------------------------------------


@pytest.fixture
def with_fused(monkeypatch):
    """A CPU with only fp32 natively, where the fused step's kernel builds."""
    monkeypatch.setattr(model.device, "generation_precisions", lambda device: ["fp32"])
    monkeypatch.setattr(precision, "fused_candidates", lambda model, device: ["fp32 fused", "bf16 fused"])


def test_the_fused_step_is_a_candidate_like_a_precision_and_its_path_is_cached(trained, with_fused, monkeypatch,
                                                                                tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "fp32 fused": 0.4, "bf16 fused": 0.3})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "precision.json"
    decision = auto_precision(trained, CPU, threads=1, cache=cache)
    assert fake.calls == [["fp32", "fp32 fused", "bf16 fused"]]
    assert (decision.precision, decision.step, decision.label) == ("bf16", "fused", "bf16 fused")
    assert decision.reason.startswith("bf16 fused: the fastest within the bounds")
    again = auto_precision(trained, CPU, threads=1, cache=cache)
    assert again.cached and (again.precision, again.step) == ("bf16", "fused") and len(fake.calls) == 1


def test_an_equally_fast_fused_step_loses_the_tie_to_the_eager_one(with_fused, trained):
    assert precision.candidates(trained, CPU) == ["fp32", "fp32 fused", "bf16 fused"]
    got, _ = choose([measured("fp32", 1.0), measured("fp32 fused", 0.97), measured("bf16 fused", 0.99)])
    assert got == "fp32"
    assert precision.candidates(trained, CPU, steps=("fused",)) == ["fp32 fused", "bf16 fused"]


def test_an_engine_serves_the_path_auto_chose(trained, with_fused, monkeypatch):
    monkeypatch.setattr(precision, "measure", FakeMeasure({"fp32": 1.0, "fp32 fused": 0.5, "bf16 fused": 0.6}))
    with Engine(Checkpoint(trained, trained.config), precision="auto") as eng:
        assert eng.precision == "fp32" and eng.precision_decision.step == "fused"
        assert eng.step_path in ("fused", "eager")  # eager only where the kernel did not build after all


def test_another_version_of_the_fused_kernel_is_measured_again(trained, with_fused, monkeypatch, tmp_path):
    fake = FakeMeasure({"fp32": 1.0, "fp32 fused": 0.4, "bf16 fused": 0.3})
    monkeypatch.setattr(precision, "measure", fake)
    cache = tmp_path / "precision.json"
    monkeypatch.setattr(precision.fused_step, "kernel_id", lambda: "3-aaaa")
    auto_precision(trained, CPU, threads=1, cache=cache)
    auto_precision(trained, CPU, threads=1, cache=cache)
    monkeypatch.setattr(precision.fused_step, "kernel_id", lambda: "3-bbbb")
    auto_precision(trained, CPU, threads=1, cache=cache)
    assert len(fake.calls) == 2


def test_every_path_auto_can_pick_has_a_place_in_the_faithful_order():
    """Ties and the bench's tables go by this order: a path missing from it would never win a
    tie and would be left out of the tables."""
    paths = {precision.label(p) for p in GENERATION_PRECISIONS if p != "auto"}
    paths |= {precision.label(p, "fused") for p in fused_step.PRECISIONS}
    assert paths <= set(precision.FAITHFUL_ORDER)
