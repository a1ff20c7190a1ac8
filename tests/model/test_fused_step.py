"""The fused step (model/fused_step.py): it computes the reference step, a row's bits depend
neither on the batch nor on the thread count, replies keep their text, and where its kernel
cannot be built every step runs eagerly after one log line saying why.

No timings here: those belong in ``charbot bench``.
"""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import torch
import torch.nn.functional as F

import model.precision as precision
from model import fused_step
from model.charset import encode
from model.checkpoint import Checkpoint
from model.engine import Engine
from model.fast_step import FastStep
from model.network import CharLSTM, ModelConfig
from model.sample import SampleSettings
from tests.model.stepping import TEXT, teacher_forced

KERNEL = fused_step.load_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason=f"no fused kernel here: {fused_step.unavailable_reason()}")
BF16_MAX_KL = 5e-4  # as for the eager bf16 step (tests/model/test_engine.py)


@pytest.fixture
def fresh_kernel():
    """Forget the process's kernel before and after, so a test can make it fail to build."""
    fused_step.reset()
    yield
    fused_step.reset()


def _texts() -> list[str]:
    return [TEXT[i : i + 25] for i in (0, 4, 9, 13, 21)]


@needs_kernel
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_step_matches_the_reference_forward(layers):
    torch.manual_seed(layers)
    model = CharLSTM(ModelConfig(embed_size=8, hidden_size=24, n_layers=layers, dropout=0.0)).eval()
    with torch.no_grad():
        for w in model.parameters():
            w.mul_(4)  # large weights: peaked distributions, saturated gates
    texts = [TEXT[i : i + 40] for i in (0, 7, 19)]
    ref = torch.softmax(model(torch.stack([encode(t) for t in texts]))[0], -1).transpose(0, 1)
    fast = FastStep(model, 4, step="fused")
    assert fast.path == "fused"
    got = torch.softmax(teacher_forced(fast, texts), -1)
    assert (got - ref).abs().max().item() < 1e-4


@needs_kernel
@pytest.mark.parametrize("prec", fused_step.PRECISIONS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_row_gets_the_same_bits_in_any_batch_and_with_any_thread_count(trained, prec, threads):
    """The kernel's helper threads each step whole rows, so neither the batch nor how its rows
    are shared among threads changes a row's bits (torch's own thread count plays no part)."""
    before = torch.get_num_threads()
    alone = FastStep(trained, 8, precision=prec, step="fused")
    crowd = FastStep(trained, 8, precision=prec, step="fused")
    try:
        torch.set_num_threads(1)
        want = teacher_forced(alone, _texts()[:1])[:, 0]
        crowd.fused.set_threads(threads)
        torch.set_num_threads(threads)
        for n in (2, 3, 5, 8):  # every tile shape and share: pairs of rows, a row left over, a short last share
            texts = (_texts() * 2)[:n]
            assert torch.equal(teacher_forced(crowd, texts)[:, 0], want)
    finally:
        torch.set_num_threads(before)
        crowd.close()


@needs_kernel
def test_a_step_shared_by_threads_advances_every_row_as_one_thread_does(trained):
    one, two = (FastStep(trained, 32, precision="bf16", step="fused") for _ in range(2))
    two.fused.set_threads(2)
    for fast in (one, two):
        for row in range(32):
            fast.codes[row] = 1 + row % 40
    for n in (32, 7, 4, 3):
        assert torch.equal(one.step(n), two.step(n))
        assert torch.equal(one.hs, two.hs) and torch.equal(one.cs, two.cs)
    two.close()  # the helpers stop; the step goes on, on the calling thread
    assert torch.equal(one.step(32), two.step(32))


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_a_launched_step_gives_every_row_the_bits_of_a_plain_step(trained, threads):
    """The engine launches one half of its rows and draws for the other meanwhile: whichever
    thread takes which chunk, and whatever the caller does to rows outside the job, each row
    advances exactly as a plain step advances it."""
    plain, launched = (FastStep(trained, 32, precision="bf16", step="fused") for _ in range(2))
    launched.fused.set_threads(threads)
    for fast in (plain, launched):
        for row in range(32):
            fast.codes[row] = 1 + row % 40
    for _ in range(3):
        plain.step(32)
        first = launched.launch(0, 13)
        second = launched.launch(13, 19)
        launched.wait(first)
        launched.codes[0] = launched.codes[0]  # the caller is free to touch the first half's rows now
        launched.wait(second)
        assert torch.equal(plain.logits[:32], launched.logits[:32])
        assert torch.equal(plain.hs, launched.hs) and torch.equal(plain.cs, launched.cs)
    launched.close()


@needs_kernel
def test_a_launched_step_with_a_bad_code_launches_nothing(trained):
    fast = FastStep(trained, 4, step="fused")
    fast.codes[:] = 3
    fast.codes[2] = trained.config.vocab_size
    before = fast.hs.clone()
    with pytest.raises(IndexError, match="row 2"):
        fast.launch(1, 3)
    assert torch.equal(fast.hs, before)
    with pytest.raises(ValueError, match="rows within"):
        fast.launch(3, 2)
    fast.close()


@needs_kernel
def test_closing_finishes_the_steps_in_flight(trained):
    plain, launched = (FastStep(trained, 8, precision="bf16", step="fused") for _ in range(2))
    launched.fused.set_threads(2)
    plain.codes[:] = launched.codes[:] = 5
    plain.step(8)
    launched.launch(0, 8)
    launched.close()  # waits for the job, then stops the helpers
    assert torch.equal(plain.logits, launched.logits)
    launched.fused.set_threads(2)  # a wider pool again: jobs are numbered afresh, nothing stale is waited for
    plain.step(8)
    launched.wait(launched.launch(0, 8))
    assert torch.equal(plain.logits, launched.logits)
    launched.close()


@needs_kernel
@pytest.mark.parametrize("prec", fused_step.PRECISIONS)
def test_every_tile_shape_gives_a_row_the_same_bits(prec):
    """Five blocks of 8 hidden units: a lone row takes four at a time (int8: two) and then one;
    rows go in pairs and one."""
    torch.manual_seed(3)
    model = CharLSTM(ModelConfig(embed_size=8, hidden_size=40, n_layers=2, dropout=0.0)).eval()
    alone = teacher_forced(FastStep(model, 8, precision=prec, step="fused"), _texts()[:1])[:, 0]
    for n in (2, 3, 5):
        assert torch.equal(teacher_forced(FastStep(model, 8, precision=prec, step="fused"), _texts()[:n])[:, 0], alone)


@needs_kernel
def test_fused_and_eager_steps_agree_and_give_the_same_replies(trained):
    """Not the same bits (the sums run in another order), but the same distributions to float
    rounding and, barring near-ties, the same text for the same seed."""
    eager = teacher_forced(FastStep(trained, 8), _texts())
    fused = teacher_forced(FastStep(trained, 8, step="fused"), _texts())
    assert (F.softmax(eager, -1) - F.softmax(fused, -1)).abs().max().item() < 1e-5
    settings = [SampleSettings(seed=s, max_chars=120, temperature=0.8) for s in range(6)]
    ck = Checkpoint(trained, trained.config)
    replies = {}
    for step in ("eager", "fused"):
        with Engine(ck, precision="fp32", step=step, max_batch=8) as eng:
            assert eng.step_path == step
            replies[step] = [eng.submit("the ", s).result(timeout=60).text for s in settings]
    assert replies["fused"] == replies["eager"]


@needs_kernel
def test_a_fused_engine_shares_a_crowds_steps_among_threads_and_keeps_its_text(trained, monkeypatch):
    """A crowd's steps are what the kernel's threads speed up (a lone row cannot be split): the
    engine's thread chooser may boost any batch of at least three rows, and boosted or not, the
    replies are the same."""
    settings = [SampleSettings(seed=s, max_chars=80, temperature=0.8) for s in range(6)]
    ck = Checkpoint(trained, trained.config)
    with Engine(ck, precision="bf16", step="fused", max_batch=8, threads=1) as eng:
        plain = [f.result(timeout=60).text for f in [eng.submit("the ", s) for s in settings]]
    with Engine(ck, precision="bf16", step="fused", max_batch=8) as eng:
        chooser = eng._threads
        assert chooser.min_rows == fused_step.MIN_SPLIT_ROWS and chooser.max_rows == 8
        monkeypatch.setattr(chooser, "boost", 2)
        monkeypatch.setattr(chooser, "enabled", True)
        monkeypatch.setattr(chooser, "_choose", lambda rows, replies: 2 if rows >= chooser.min_rows else 1)
        boosted = [f.result(timeout=60).text for f in [eng.submit("the ", s) for s in settings]]
        assert chooser.boosted_steps > 0 and eng._fast.fused._pool_size == 1
    assert boosted == plain


@needs_kernel
def test_fused_engine_gives_the_same_text_alone_and_in_a_crowd(trained):
    settings = [SampleSettings(seed=s, max_chars=120, temperature=0.8) for s in range(6)]
    with Engine(Checkpoint(trained, trained.config), precision="bf16", step="fused", max_batch=8) as eng:
        assert eng.step_path == "fused"
        alone = [eng.submit("the ", s).result(timeout=60).text for s in settings]
        crowd = [eng.submit("the ", s) for s in settings]
        assert [f.result(timeout=60).text for f in crowd] == alone
    assert len(set(alone)) > 1


@needs_kernel
def test_lanes_stepped_in_turn_give_every_reply_the_text_of_one_batch(trained, monkeypatch):
    """With the kernel, the batch is two lanes (one stepped while the worker draws for the other);
    a best-of-n reply's candidates spread over both, singles join the emptier one, and every
    candidate's text is what one batch of every row gives."""
    import model.engine as engine_module

    ck = Checkpoint(trained, trained.config)
    settings = [SampleSettings(seed=s, max_chars=90, temperature=0.8) for s in range(5)]
    texts = {}
    for lanes in (1, 2):
        monkeypatch.setattr(engine_module, "LANES", lanes)
        with Engine(ck, precision="bf16", step="fused", max_batch=12) as eng:
            assert len(eng._lanes) == lanes
            best = eng.submit_best_of("the ", settings[0], 6)
            singles = [eng.submit("a ", s) for s in settings[1:]]
            texts[lanes] = ([g.text for g in best.result(timeout=60)], [f.result(timeout=60).text for f in singles])
    assert texts[2] == texts[1]
    assert len(set(texts[2][0])) > 1


@needs_kernel
def test_fused_bf16_stays_within_the_kl_bound(trained):
    texts = [TEXT[i : i + 80] for i in (0, 5)]
    ref = F.log_softmax(teacher_forced(FastStep(trained, 2), texts), -1)
    low = F.log_softmax(teacher_forced(FastStep(trained, 2, precision="bf16", step="fused"), texts), -1)
    kl = (ref.exp() * (ref - low)).sum(-1)
    assert kl.max().item() < BF16_MAX_KL
    assert kl.mean().item() < BF16_MAX_KL / 10


@needs_kernel
def test_fused_int8_computes_the_eager_int8_rule_within_the_bounds(trained):
    """The kernel's int8 is the eager int8 step's rule (weights rounded per output row, hidden
    states at 1/127) in exact integer sums: it agrees with that rule computed in float64, and
    stays within the bounds the engine serves a precision by."""
    texts = [TEXT[i : i + 80] for i in (0, 5)]
    ref = F.log_softmax(teacher_forced(FastStep(trained, 2), texts), -1)
    low = F.log_softmax(teacher_forced(FastStep(trained, 2, precision="int8", step="fused"), texts), -1)
    kl = (ref.exp() * (ref - low)).sum(-1).clamp_min(0)
    assert kl.mean().item() < 1e-3
    assert (ref.argmax(-1) == low.argmax(-1)).float().mean().item() >= 0.99
    fast = FastStep(trained, 2, precision="int8", step="fused")
    q, scale = fused_step.int8_weights(torch.randn(12, 6))
    assert q.dtype == torch.int8 and q.abs().max().item() == 127 and scale.shape == (12,)
    assert fast.precision == "int8" and fast.path == "fused"


@needs_kernel
def test_the_kernels_int8_runs_where_onednns_cannot(trained, monkeypatch):
    """oneDNN's int8 linear saturates on a CPU without VNNI, so there the eager step has no int8;
    the kernel sums exactly on any CPU, so the fused step has one. Without the kernel, int8 on
    such a CPU is the eager step's clear error, not a wrong answer."""
    import model.device as device_mod

    monkeypatch.setattr(device_mod, "int8_matmul_supported", lambda: False)
    fast = FastStep(trained, 2, precision="int8", step="fused")
    assert fast.path == "fused" and fast.precision == "int8"
    monkeypatch.setattr(fused_step, "load_kernel", lambda: None)
    with pytest.raises(ValueError, match="int8 is not available"):
        FastStep(trained, 2, precision="int8", step="fused")


@needs_kernel
def test_bf16_weights_that_lose_nothing_give_the_fp32_bits(trained):
    """The shipped checkpoints are stored in bfloat16: for them the bf16 fused step computes exactly
    what the fp32 one does, reading half the bytes."""
    model = copy.deepcopy(trained)
    with torch.no_grad():
        for w in model.parameters():
            w.copy_(w.to(torch.bfloat16).float())
    fp32 = teacher_forced(FastStep(model, 4, step="fused"), _texts()[:3])
    assert torch.equal(teacher_forced(FastStep(model, 4, precision="bf16", step="fused"), _texts()[:3]), fp32)


@needs_kernel
def test_rows_set_moved_and_read_back_continue_exactly(trained):
    """A reply moved between rows, or handed over from nn.LSTM, continues exactly as before."""
    fast = FastStep(trained, 4, step="fused")
    twin = FastStep(trained, 4, step="fused")
    zeros = (torch.zeros(fast.n_layers, 1, fast.hidden),) * 2
    for step in (fast, twin):
        step.set_row(0, zeros, torch.zeros(step.vocab))
    for code in (5, 9, 11):
        fast.codes[0] = twin.codes[0] = code
        fast.step(1)
        twin.step(1)
    fast.set_row(2, twin.state(0), twin.logits[0])
    fast.move_row(2, 1)
    fast.codes[0] = fast.codes[1] = 7
    out = fast.step(2)
    assert torch.equal(out[0], out[1])


@needs_kernel
def test_a_code_outside_the_vocabulary_is_an_error_not_a_wild_read(trained):
    fast = FastStep(trained, 2, step="fused")
    fast.codes[0], fast.codes[1] = 3, trained.config.vocab_size
    with pytest.raises(IndexError, match="row 1"):
        fast.step(2)


def test_what_the_fused_step_cannot_do_is_a_clear_error(trained):
    assert "no fp16 path" in fused_step.unsupported(2, 32, "fp16", torch.device("cpu"))
    assert "runs on the CPU" in fused_step.unsupported(2, 32, "int8", torch.device("cuda"))
    odd = CharLSTM(ModelConfig(embed_size=8, hidden_size=20, n_layers=1, dropout=0.0))
    with pytest.raises(ValueError, match="divisible by 8"):
        FastStep(odd, 1, step="fused")
    with pytest.raises(ValueError, match="step must be"):
        FastStep(trained, 1, step="compiled")


# ---- where the kernel cannot be built ------------------------------------------------------


def _fallback_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "model.fused_step" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("failure", ["no compiler", "import failure"])
def test_without_a_kernel_every_step_runs_eagerly_after_one_line_saying_why(trained, monkeypatch, caplog, failure,
                                                                            fresh_kernel):
    if failure == "no compiler":
        monkeypatch.setattr(fused_step, "find_compiler", lambda: None)
        why = "no C++ compiler"
    else:
        def broken(*args, **kwargs):
            raise OSError("fused_step.so: cannot open shared object file")

        monkeypatch.setattr(fused_step, "build", lambda folder=None: (fused_step.kernel_dir() / "x.so", 0.0))
        monkeypatch.setattr(fused_step, "Kernel", broken)
        why = "cannot open shared object"
    caplog.set_level(logging.INFO)
    eager = teacher_forced(FastStep(trained, 4), _texts()[:2])
    fast = FastStep(trained, 4, step="fused")
    assert fast.path == "eager" and fast.fused is None
    assert torch.equal(teacher_forced(fast, _texts()[:2]), eager)  # the eager step itself, bit for bit
    with Engine(Checkpoint(trained, trained.config), precision="auto") as eng:
        assert eng.step_path == "eager"
        assert why in eng.precision_decision.reason
    assert precision.fused_candidates(trained, torch.device("cpu")) == []
    lines = _fallback_lines(caplog)
    assert len(lines) == 1 and why in lines[0].getMessage() and "eagerly" in lines[0].getMessage()


def test_engines_loading_side_by_side_look_once(monkeypatch, caplog, fresh_kernel):
    looks = []
    monkeypatch.setattr(fused_step, "find_compiler", lambda: looks.append(1))
    caplog.set_level(logging.INFO)
    threads = [threading.Thread(target=fused_step.load_kernel) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(looks) == 1 and len(_fallback_lines(caplog)) == 1


def test_charbot_fused_0_turns_it_off(trained, monkeypatch, caplog, fresh_kernel):
    monkeypatch.setenv("CHARBOT_FUSED", "0")
    caplog.set_level(logging.INFO)
    assert FastStep(trained, 1, step="fused").path == "eager"
    lines = _fallback_lines(caplog)
    assert len(lines) == 1 and "CHARBOT_FUSED" in lines[0].getMessage()


def test_a_kernel_that_computes_the_wrong_thing_is_refused(trained, monkeypatch, caplog, fresh_kernel):
    if KERNEL is None:
        pytest.skip("no fused kernel here")
    monkeypatch.setattr(fused_step, "pack_head", lambda w, b: (torch.zeros(-(-w.shape[0] // 8), w.shape[1], 8),
                                                               torch.zeros(-(-w.shape[0] // 8) * 8)))
    caplog.set_level(logging.INFO)
    assert fused_step.load_kernel() is None
    assert "failed its fp32 check" in fused_step.unavailable_reason()
    assert len(_fallback_lines(caplog)) == 1


@needs_kernel
def test_the_kernel_is_compiled_once_into_the_cache(monkeypatch, tmp_path):
    first, seconds = fused_step.build(tmp_path)
    again, cached = fused_step.build(tmp_path)
    assert first == again and first.is_file() and seconds > 0 and cached == 0.0
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # nothing left behind
