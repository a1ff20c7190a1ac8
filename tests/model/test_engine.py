"""The generation engine: the fused step matches the reference forward, replies match
``sample.generate`` and do not depend on what else runs, and busy/cancel/close behave."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from model import engine as engine_mod
from model.charset import encode
from model.checkpoint import Checkpoint
from model.device import bf16_matmul_supported
from model.engine import Engine, EngineBusy, EngineClosed
from model.fast_sample import BatchSampler, Noise, batched_draw_matches
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig
from model.precision import candidates
from model.sample import SampleSettings, generate, pick_next
from tests.model.stepping import TEXT, teacher_forced

BF16_MAX_KL = 5e-4  # nats per character; bf16 rounding of the recurrent weights and their inputs


@pytest.fixture
def engine(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=8, max_queue=16)
    yield eng
    eng.close(wait=False)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_step_matches_reference_forward(layers):
    torch.manual_seed(layers)
    model = CharLSTM(ModelConfig(embed_size=8, hidden_size=24, n_layers=layers, dropout=0.0)).eval()
    with torch.no_grad():
        for w in model.parameters():
            w.mul_(4)  # large weights: peaked distributions, saturated gates
    texts = [TEXT[i : i + 40] for i in (0, 7, 19)]
    ref = torch.softmax(model(torch.stack([encode(t) for t in texts]))[0], -1).transpose(0, 1)
    got = torch.softmax(teacher_forced(FastStep(model, 4), texts), -1)
    assert (got - ref).abs().max().item() < 1e-4


def test_fused_step_continues_a_primed_state(trained):
    """A state handed over from nn.LSTM (how very long primes are read) continues exactly."""
    codes = encode(TEXT[:60])
    with torch.no_grad():
        ref = torch.softmax(trained(codes.view(1, -1))[0][0], -1)
        out, state = trained(codes[:30].view(1, -1))
        fast = FastStep(trained, 2)
        fast.set_row(1, state, out[0, -1])
        assert torch.allclose(fast.logits[1], out[0, -1])
        for t in range(30, 60):
            fast.codes[0] = 0
            fast.codes[1] = int(codes[t])
            got = torch.softmax(fast.step(2)[1], -1)
            assert (got - ref[t]).abs().max().item() < 1e-4


def test_bf16_step_stays_within_kl_bound(trained):
    texts = [TEXT[i : i + 80] for i in (0, 5)]
    ref = F.log_softmax(teacher_forced(FastStep(trained, 2), texts), -1)
    low = F.log_softmax(teacher_forced(FastStep(trained, 2, precision="bf16"), texts), -1)
    kl = (ref.exp() * (ref - low)).sum(-1)
    assert kl.max().item() < BF16_MAX_KL
    assert kl.mean().item() < BF16_MAX_KL / 10


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_row_gets_the_same_bits_in_any_batch(trained, precision):
    """With the weights packed once for the largest batch, a row's logits do not depend on
    how many rows are stepped with it (the fallback matmul only promises near-equality)."""
    alone, crowd = FastStep(trained, 8, precision=precision), FastStep(trained, 8, precision=precision)
    if any(lin.packed is None for lin in alone.linears):
        pytest.skip("oneDNN packing is not available here")
    texts = [TEXT[i : i + 25] for i in (0, 4, 9, 13, 21)]
    assert torch.equal(teacher_forced(alone, texts[:1])[:, 0], teacher_forced(crowd, texts)[:, 0])


def test_unknown_precision_is_refused(trained):
    with pytest.raises(ValueError, match="precision"):
        FastStep(trained, 1, precision="int3")


def test_auto_precision_uses_bf16_only_where_the_cpu_has_it(trained):
    want = "bf16" if bf16_matmul_supported() else "fp32"
    assert FastStep(trained, 1, precision="auto").precision == want  # the fused step alone keeps the static rule


def test_the_engines_auto_is_measured_and_says_why(trained):
    with Engine(Checkpoint(trained, trained.config), precision="auto") as eng:
        decision = eng.precision_decision
        assert decision is not None and decision.precision == eng.precision and decision.step == eng.step_path
        assert decision.label in candidates(trained, eng.device)  # a native precision, or one of the fused step's
        assert decision.reason
    with Engine(Checkpoint(trained, trained.config), precision="fp32") as eng:
        assert eng.precision == "fp32" and eng.precision_decision is None  # explicit: nothing measured


def test_batch_sampler_draws_what_pick_next_draws():
    assert batched_draw_matches()
    torch.manual_seed(3)
    logits = torch.randn(12, 96) * 4
    settings = [SampleSettings(temperature=t) for t in (0.1, 0.5, 0.8, 1.0, 1.7, 2.0)] + [
        SampleSettings(temperature=0), SampleSettings(top_k=5), SampleSettings(top_p=0.7),
        SampleSettings(temperature=1.2, top_k=3, top_p=0.9), SampleSettings(), SampleSettings(temperature=0.3),
    ]
    sampler = BatchSampler(16, 96)
    ours = [Noise(torch.Generator().manual_seed(i), block=7) for i in range(12)]  # 20 draws cross block ends
    refs = [torch.Generator().manual_seed(i) for i in range(12)]
    for _ in range(20):
        want = [pick_next(logits[i], settings[i], refs[i]) for i in range(12)]
        assert sampler.draw(logits, settings, ours) == want



def test_a_rows_draw_and_score_do_not_depend_on_the_other_rows():
    """draw_scored: the same code and log-likelihood (temperature 1) for a row alone or in any block."""
    torch.manual_seed(4)
    logits = torch.randn(6, 96) * 4
    settings = [SampleSettings(temperature=t) for t in (0.5, 0.8, 1.3)] + [SampleSettings(top_k=4)]
    sampler = BatchSampler(8, 96)
    for rows in ([0], [1], [2], [3], [0, 2], [1, 3, 5], [0, 1, 2, 3]):
        alone = []
        for i, row in enumerate(rows):
            s = settings[i % len(settings)]
            got = sampler.draw_scored(logits[row : row + 1], [0], [s], [Noise(torch.Generator().manual_seed(row))])
            alone.append((got[0][0], got[1][0]))
        codes, scores = sampler.draw_scored(
            logits, rows, [settings[i % len(settings)] for i in range(len(rows))],
            [Noise(torch.Generator().manual_seed(row)) for row in rows],
        )
        assert list(zip(codes, scores, strict=True)) == alone
        want = torch.log_softmax(logits, dim=-1)
        assert scores == [float(want[row, code]) for row, code in zip(rows, codes, strict=True)]

SETTINGS = [
    SampleSettings(seed=1, max_chars=150),
    SampleSettings(seed=2, max_chars=150, temperature=0),
    SampleSettings(seed=3, max_chars=150, temperature=1.5, top_k=5),
    SampleSettings(seed=4, max_chars=150, top_p=0.8),
    SampleSettings(seed=5, max_chars=300, stop=("dog",)),
    SampleSettings(seed=6, max_chars=120, temperature=1.0, stop=(". t", "zz")),
]
PRIMES = ["the cat", "", "The dog ate", "ol\u00e9 caf\u00e9 ", "the cat sat on the", "x"]


def test_engine_matches_reference_generate(trained, engine):
    futures = [engine.submit(p, s) for p, s in zip(PRIMES, SETTINGS, strict=True)]
    got = [f.result(timeout=60) for f in futures]
    want = [generate(trained, [p], s)[0] for p, s in zip(PRIMES, SETTINGS, strict=True)]
    for g, w in zip(got, want, strict=True):
        assert (g.prime, g.text, g.finish, g.seed, g.dropped) == (w.prime, w.text, w.finish, w.seed, w.dropped)
    assert {g.finish for g in got} == {"length", "stop"}


def test_reply_text_does_not_depend_on_the_batch(engine):
    """Alone, in a crowd, joining while others run: the same seed gives the same text."""
    alone = [engine.submit(p, s).result(timeout=60).text for p, s in zip(PRIMES, SETTINGS, strict=True)]
    crowd = [engine.submit(p, s) for p, s in zip(PRIMES, SETTINGS, strict=True)]
    assert [f.result(timeout=60).text for f in crowd] == alone
    staggered = []
    for p, s in zip(PRIMES, SETTINGS, strict=True):
        first = threading.Event()
        staggered.append(engine.submit(p, s, lambda piece, e=first: e.set()))
        first.wait(timeout=60)  # the next one joins a batch that is already running
    assert [f.result(timeout=60).text for f in staggered] == alone


def test_streamed_text_is_the_reply_without_stop_strings(engine):
    pieces: list[str] = []
    gen = engine.submit("the ", SampleSettings(seed=9, max_chars=400, stop=("the",)), pieces.append).result(60)
    assert gen.finish == "stop"
    assert "".join(pieces) == gen.text
    assert "the" not in "".join(pieces)


def test_more_replies_than_max_batch_all_finish(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=2)
    try:
        futures = [eng.submit("the", SampleSettings(seed=i, max_chars=40)) for i in range(7)]
        texts = [f.result(timeout=60).text for f in futures]
        assert [len(t) for t in texts] == [40] * 7
        assert eng.pending() == 0
    finally:
        eng.close()


def test_long_primes_are_read_through_the_reference_forward(trained, monkeypatch):
    monkeypatch.setattr(engine_mod, "PRIME_IN_BATCH", 16)
    monkeypatch.setattr(engine_mod, "PRIME_CHUNK", 20)
    prime = TEXT[:75]
    s = SampleSettings(seed=11, max_chars=80)
    with Engine(Checkpoint(trained, trained.config)) as eng:
        got = eng.submit(prime, s).result(timeout=60)
    assert got.text == generate(trained, [prime], s)[0].text


def long_reply(engine: Engine, seed: int = 1, chars: int = 100_000):
    started = threading.Event()
    fut = engine.submit("the", SampleSettings(seed=seed, max_chars=chars), lambda piece: started.set())
    assert started.wait(timeout=60)
    return fut


def test_busy_when_queue_is_full(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=1, max_queue=2)
    try:
        running = long_reply(eng)
        waiting = eng.submit("the", SampleSettings(seed=2))
        assert eng.pending() == 2
        with pytest.raises(EngineBusy, match="2 replies already pending"):
            eng.submit("the", SampleSettings())
        eng.cancel(running)
        assert running.result(timeout=60).finish == "cancelled"
        assert waiting.result(timeout=60).finish == "length"
        eng.submit("the", SampleSettings(max_chars=5)).result(timeout=60)  # room again
    finally:
        eng.close(wait=False)


def test_cancel_returns_the_text_so_far(trained, engine):
    fut = long_reply(engine, seed=5)
    engine.cancel(fut)
    gen = fut.result(timeout=60)
    assert gen.finish == "cancelled"
    full = generate(trained, ["the"], SampleSettings(seed=5, max_chars=len(gen.text)))[0]
    assert 0 < len(gen.text) < 100_000 and gen.text == full.text
    engine.cancel(fut)  # cancelling a finished reply is harmless
    assert engine.pending() == 0


def test_a_queued_future_can_be_cancelled_before_it_runs(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=1)
    try:
        running = long_reply(eng)
        queued = eng.submit("the", SampleSettings())
        assert queued.cancel()
        eng.cancel(running)
        running.result(timeout=60)
        eng.submit("a", SampleSettings(max_chars=3)).result(timeout=60)
        assert eng.pending() == 0
    finally:
        eng.close()


def test_close_waits_for_replies_then_refuses_new_ones(trained):
    eng = Engine(Checkpoint(trained, trained.config))
    futures = [eng.submit("the", SampleSettings(seed=i, max_chars=200)) for i in range(3)]
    eng.close(wait=True)
    assert [f.result(timeout=0).finish for f in futures] == ["length"] * 3
    with pytest.raises(EngineClosed):
        eng.submit("the", SampleSettings())


def test_close_without_waiting_cancels(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=1)
    running = long_reply(eng)
    queued = eng.submit("the", SampleSettings(max_chars=100_000))
    eng.close(wait=False)
    assert running.result(timeout=0).finish == "cancelled"
    assert queued.result(timeout=0).finish == "cancelled"
    assert not eng._worker.is_alive()


def test_a_failing_listener_does_not_break_the_reply(trained, engine):
    def boom(piece: str) -> None:
        raise RuntimeError("listener bug")

    got = engine.submit("the", SampleSettings(seed=3, max_chars=50), boom).result(timeout=60)
    assert got.text == generate(trained, ["the"], SampleSettings(seed=3, max_chars=50))[0].text


def test_bad_requests_are_refused(engine):
    with pytest.raises(TypeError, match="prime must be text"):
        engine.submit(b"bytes", SampleSettings())
    with pytest.raises(TypeError, match="SampleSettings"):
        engine.submit("the", {"temperature": 1})
    with pytest.raises(ValueError):
        Engine(Checkpoint(CharLSTM(ModelConfig(hidden_size=8, embed_size=4)), ModelConfig()), max_batch=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Engine(engine.checkpoint, device="cuda")


def test_bf16_engine_runs_and_mostly_agrees(trained):
    with Engine(Checkpoint(trained, trained.config), precision="bf16") as eng:
        gen = eng.submit("the cat", SampleSettings(seed=1, max_chars=100, temperature=0)).result(timeout=60)
    ref = generate(trained, ["the cat"], SampleSettings(seed=1, max_chars=100, temperature=0))[0]
    assert len(gen.text) == 100
    assert gen.text[:20] == ref.text[:20]




# ---- best-of-n and sentence ends ------------------------------------------------------------


def test_candidate_zero_is_the_single_reply_and_the_others_differ(engine):
    s = SampleSettings(seed=21, max_chars=80, temperature=1.0)
    single = engine.submit("the cat", s).result(timeout=60)
    group = engine.submit_best_of("the cat", s, 4).result(timeout=60)
    assert len(group) == 4
    assert group[0].text == single.text and group[0].seed == 21
    assert len({g.text for g in group}) > 1
    assert all(len(g.logprobs) == len(g.text) and all(lp <= 0 for lp in g.logprobs) for g in group)


def test_same_seed_same_candidates_alone_and_in_a_crowd(engine):
    s = SampleSettings(seed=5, max_chars=120, temperature=0.9, target_chars=60)
    alone = [g.text for g in engine.submit_best_of("The dog ate", s, 3).result(timeout=60)]
    others = [engine.submit("the", SampleSettings(seed=100 + i, max_chars=150)) for i in range(3)]
    crowd = engine.submit_best_of("The dog ate", s, 3)
    more = engine.submit_best_of("x", SampleSettings(seed=7, max_chars=90), 2)
    assert [g.text for g in crowd.result(timeout=60)] == alone
    assert all(f.result(timeout=60) for f in others) and len(more.result(timeout=60)) == 2


def test_best_of_falls_towards_one_as_the_engine_fills(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=64, max_queue=64)
    try:
        assert eng.best_of(8) == 8
        running = [long_reply(eng, seed=i) for i in range(20)]
        assert eng.best_of(8) == 1
        for f in running:
            eng.cancel(f)
        assert all(f.result(timeout=60).finish == "cancelled" for f in running)
        assert eng.best_of(8) == 8
    finally:
        eng.close(wait=False)


def test_cancelling_a_best_of_reply_cancels_every_candidate(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=8)
    try:
        started = threading.Event()
        fut = eng.submit_best_of("the", SampleSettings(seed=1, max_chars=100_000), 3, lambda piece: started.set())
        assert started.wait(timeout=60)
        eng.cancel(fut)
        assert [g.finish for g in fut.result(timeout=60)] == ["cancelled"] * 3
        assert eng.pending() == 0
    finally:
        eng.close(wait=False)


def test_engine_ends_at_sentences_as_generate_does(trained, engine):
    runs = [SampleSettings(seed=i, max_chars=90, target_chars=30) for i in range(4)]
    got = [engine.submit("the cat", s).result(timeout=60) for s in runs]
    want = [generate(trained, ["the cat"], s)[0] for s in runs]
    assert [(g.text, g.finish) for g in got] == [(w.text, w.finish) for w in want]
    assert "sentence" in {g.finish for g in got}


def test_a_crowd_sheds_the_extra_candidates_of_adaptive_replies_only(trained):
    eng = Engine(Checkpoint(trained, trained.config), max_batch=64, max_queue=64)
    try:
        s = SampleSettings(seed=3, max_chars=3000)
        adaptive = eng.submit_best_of("the", s, 8, adaptive=True)
        fixed = eng.submit_best_of("the", s, 4)
        crowd = [eng.submit("the", SampleSettings(seed=i, max_chars=50)) for i in range(engine_mod.SHED_ROWS)]
        assert all(f.result(timeout=60).finish == "length" for f in crowd)
        kept = adaptive.result(timeout=60)
        assert kept[0].finish == "length" and {g.finish for g in kept[1:]} == {"cancelled"}
        assert [g.finish for g in fixed.result(timeout=60)] == ["length"] * 4
    finally:
        eng.close(wait=False)


HEAD = "the king said to the queen that the little girl went into the wood. "  # no user's words in it


@pytest.mark.parametrize("step", ["eager", "fused"])
def test_a_shared_head_is_read_once_and_the_replies_keep_their_text(trained, step):
    """A grounded answer's passage is the same for every question it answers: the engine keeps
    the state after reading it, and later replies start there, in fewer steps, with the text
    they would have had reading it."""
    ck = Checkpoint(trained, trained.config)
    settings = SampleSettings(seed=5, max_chars=60)
    primes = [HEAD + "where is the wood\n", HEAD + "who is the king\n"]
    with Engine(ck, precision="bf16" if step == "fused" else "fp32", step=step, max_batch=8) as plain:
        want = [plain.submit(p, settings).result(timeout=60).text for p in primes]
        want_best = [g.text for g in plain.submit_best_of(primes[1], settings, 3).result(timeout=60)]
    with Engine(ck, precision="bf16" if step == "fused" else "fp32", step=step, max_batch=8) as eng:
        first = eng.submit(primes[0], settings, shared=HEAD).result(timeout=60).text
        assert list(eng._heads) == [HEAD]
        before = eng.steps
        second = eng.submit(primes[1], settings, shared=HEAD).result(timeout=60).text
        read_again = eng.steps - before
        best = [g.text for g in eng.submit_best_of(primes[1], settings, 3, shared=HEAD).result(timeout=60)]
    assert [first, second] == want and best == want_best
    with Engine(ck, precision="fp32", max_batch=8) as eng:
        before = eng.steps
        eng.submit(primes[1], settings).result(timeout=60)
        assert read_again <= eng.steps - before - len(HEAD)  # the head was not read again


def test_a_shared_text_that_is_no_head_of_the_prime_is_not_kept(engine):
    settings = SampleSettings(seed=2, max_chars=30)
    want = engine.submit("the wood\n", settings).result(timeout=60).text
    for shared in ("a king. ", "the wood\n", "the wood\nand more"):  # not a head; all of it; longer
        assert engine.submit("the wood\n", settings, shared=shared).result(timeout=60).text == want
    assert not engine._heads
    with pytest.raises(TypeError, match="shared must be text"):
        engine.submit("the wood", settings, shared=3)


def test_the_engine_keeps_only_the_newest_shared_heads(trained, monkeypatch):
    monkeypatch.setattr(engine_mod, "SHARED_HEADS", 2)
    with Engine(Checkpoint(trained, trained.config), max_batch=4) as eng:
        for head in ("one king. ", "two kings. ", "three kings. "):
            eng.submit(head + "and then", SampleSettings(seed=1, max_chars=5), shared=head).result(timeout=60)
        assert list(eng._heads) == ["two kings. ", "three kings. "]
        eng.submit("two kings. and then", SampleSettings(seed=1, max_chars=5), shared="two kings. ").result(timeout=60)
        assert list(eng._heads) == ["three kings. ", "two kings. "]  # a head used again is the newest
