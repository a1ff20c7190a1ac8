"""Sampling: seeds, greedy decoding, top-k/top-p, the prime, stop strings, streaming, bad settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.charset import CHARS, VOCAB_SIZE, decode, encode
from model.sample import (
    Finish,
    Generation,
    SampleSettings,
    StopWatcher,
    candidate_seed,
    clean_ending,
    ends_sentence,
    generate,
    pick_next,
    prime_codes,
    stream,
)


@pytest.fixture
def lively(tiny_model):
    """The tiny model with its weights scaled up, so that what it writes depends on what it read."""
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.mul_(6)
    return tiny_model


def one(model, prompt: str, **kw) -> Generation:
    return generate(model, [prompt], SampleSettings(**kw))[0]


def greedy_by_hand(model, prime: str, n: int) -> str:
    """Feed the prime, then always the likeliest character, through the plain forward pass."""
    codes = encode(prime)
    out = []
    with torch.no_grad():
        logits, state = model(codes.view(1, -1))
        for _ in range(n):
            code = int(torch.argmax(logits[0, -1]))
            out.append(code)
            logits, state = model(torch.tensor([[code]]), state)
    return decode(out)


# ---- seeds -------------------------------------------------------------------------------


def test_same_seed_same_text(tiny_model):
    a = one(tiny_model, "Once", temperature=1.0, max_chars=80, seed=42)
    b = one(tiny_model, "Once", temperature=1.0, max_chars=80, seed=42)
    assert a.text == b.text and len(a.text) == 80
    assert a.seed == 42 and a.finish == "length"


def test_finish_reads_as_its_plain_word():
    """Logs, ``--json`` output and model cards show the reason exactly as the bare strings did."""
    assert [f"{f}" for f in Finish] == ["length", "stop", "cancelled", "sentence"]
    assert str(Finish.STOP) == "stop" and Finish.CANCELLED == "cancelled"
    assert json.dumps({"finish": Finish.LENGTH}) == '{"finish": "length"}'


def test_different_seeds_differ(tiny_model):
    texts = {one(tiny_model, "Once", temperature=1.0, max_chars=80, seed=s).text for s in range(5)}
    assert len(texts) == 5


def test_without_a_seed_the_seed_used_is_reported_and_reproduces(tiny_model):
    a = one(tiny_model, "Once", temperature=1.0, max_chars=60)
    b = one(tiny_model, "Once", temperature=1.0, max_chars=60)
    assert a.seed != b.seed
    assert one(tiny_model, "Once", temperature=1.0, max_chars=60, seed=a.seed).text == a.text


# ---- greedy and the prime ----------------------------------------------------------------


def test_temperature_zero_is_greedy(lively):
    got = one(lively, "The cat", temperature=0, max_chars=40, seed=1)
    assert got.text == greedy_by_hand(lively, "The cat", 40)
    assert len(set(got.text)) > 3  # a real continuation, not one character over and over
    assert one(lively, "The cat", temperature=0, max_chars=40, seed=2).text == got.text


def test_the_prime_is_continued_from_the_models_state(lively):
    """Every character is drawn from the model's state after the whole prime, not from a fresh state."""
    prime = "Tell me a story about a dragon"
    got = one(lively, prime, temperature=0, max_chars=30)
    assert got.prime == prime
    assert got.text == greedy_by_hand(lively, prime, 30)
    assert got.text != greedy_by_hand(lively, prime[-1], 30)  # the last character alone reads differently


def test_the_first_draw_uses_the_logits_after_the_prime(lively):
    prime = "Do I need a mask?"
    with torch.no_grad():
        last = lively(encode(prime).view(1, -1))[0][0, -1]
    for seed in range(20):
        settings = SampleSettings(temperature=1.0, max_chars=1, seed=seed)
        expected = pick_next(last, settings, torch.Generator().manual_seed(seed))
        assert generate(lively, [prime], settings)[0].text == decode([expected])


def test_prime_state_matters(lively):
    a = one(lively, "aaaaaaaaaaaa", temperature=0, max_chars=30).text
    b = one(lively, "zzzzzzzzzzzz", temperature=0, max_chars=30).text
    assert a != b


def test_long_prime_is_read_in_chunks_with_the_state_carried(lively, monkeypatch):
    import model.sample as sample_mod

    prime = "the quick brown fox jumps over the lazy dog. " * 3
    whole = one(lively, prime, temperature=0, max_chars=20).text
    monkeypatch.setattr(sample_mod, "PRIME_CHUNK", 7)
    assert one(lively, prime, temperature=0, max_chars=20).text == whole


def test_empty_prime_starts_at_a_line_start(lively):
    got = one(lively, "", temperature=0, max_chars=20)
    assert got.prime == ""
    assert got.text == greedy_by_hand(lively, "\n", 20)


def test_prime_is_normalized_and_drops_are_counted(tiny_model):
    got = one(tiny_model, "\u201cHi\u201d \U0001f600", temperature=0, max_chars=5)
    assert got.prime == '"Hi" '
    assert got.dropped == 1
    text, dropped, codes = prime_codes("\u201cHi\u201d \U0001f600")
    assert (text, dropped) == ('"Hi" ', 1)
    assert torch.equal(codes, encode('"Hi" '))
    assert torch.equal(prime_codes("")[2], encode("\n"))


# ---- top-k and top-p ---------------------------------------------------------------------


def crafted_logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(VOCAB_SIZE, generator=g) * 2


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_never_leaves_the_k_likeliest(k):
    logits = crafted_logits()
    allowed = set(torch.topk(logits, k).indices.tolist())
    g = torch.Generator().manual_seed(1)
    settings = SampleSettings(temperature=2.0, top_k=k)
    drawn = {pick_next(logits, settings, g) for _ in range(2000)}
    assert drawn <= allowed
    if k > 1:
        assert len(drawn) > 1  # it does sample, not just take the best


def test_top_k_with_ties_keeps_exactly_k():
    logits = torch.zeros(VOCAB_SIZE)
    g = torch.Generator().manual_seed(1)
    settings = SampleSettings(temperature=1.0, top_k=2)
    drawn = {pick_next(logits, settings, g) for _ in range(1000)}
    assert len(drawn) <= 2


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_top_p_never_leaves_the_nucleus(p):
    logits = crafted_logits()
    probs = torch.softmax(logits, dim=-1)
    order = torch.argsort(probs, descending=True).tolist()
    nucleus, mass = set(), 0.0
    for i in order:  # the smallest set of likeliest characters whose mass reaches p
        nucleus.add(i)
        mass += probs[i].item()
        if mass >= p:
            break
    g = torch.Generator().manual_seed(2)
    settings = SampleSettings(temperature=1.0, top_p=p)
    drawn = {pick_next(logits, settings, g) for _ in range(2000)}
    assert drawn <= nucleus
    likely = {i for i in nucleus if probs[i].item() / mass > 0.01}
    assert likely <= drawn  # and it does draw from the whole nucleus


def test_top_k_and_top_p_together():
    logits = crafted_logits()
    top5 = set(torch.topk(logits, 5).indices.tolist())
    g = torch.Generator().manual_seed(3)
    drawn = {pick_next(logits, SampleSettings(temperature=1.5, top_k=5, top_p=0.8), g) for _ in range(1000)}
    assert drawn <= top5


def test_draws_follow_the_distribution():
    logits = torch.full((VOCAB_SIZE,), -1e9)
    logits[5], logits[9] = math.log(0.8), math.log(0.2)
    g = torch.Generator().manual_seed(4)
    draws = [pick_next(logits, SampleSettings(temperature=1.0), g) for _ in range(2000)]
    assert set(draws) == {5, 9}
    assert 0.74 < draws.count(5) / len(draws) < 0.86


def test_temperature_zero_ignores_the_generator():
    logits = crafted_logits()
    best = int(torch.argmax(logits))
    g = torch.Generator().manual_seed(5)
    assert {pick_next(logits, SampleSettings(temperature=0), g) for _ in range(50)} == {best}


# ---- stop strings and streaming ----------------------------------------------------------


def test_stop_string_ends_generation_and_is_left_out(tiny_model):
    free = one(tiny_model, "Once", temperature=1.0, max_chars=120, seed=9).text
    stop = free[40:43]
    cut = free.find(stop)
    got = one(tiny_model, "Once", temperature=1.0, max_chars=120, seed=9, stop=(stop,))
    assert got.finish == "stop"
    assert got.text == free[:cut]
    assert stop not in got.text


def test_the_earliest_of_several_stop_strings_wins(tiny_model):
    free = one(tiny_model, "Once", temperature=1.0, max_chars=120, seed=9).text
    late, early = free[60:64], free[30:32]
    cut = min(free.find(late), free.find(early))
    for stops in [(late, early), (early, late)]:
        assert one(tiny_model, "Once", temperature=1.0, max_chars=120, seed=9, stop=stops).text == free[:cut]


def test_stop_strings_are_normalized_like_text(tiny_model):
    assert SampleSettings(stop=("\u201cQ:",)).stop == ('"Q:',)
    assert SampleSettings(stop="\r\n").stop == ("\n",)
    with pytest.raises(ValueError, match="no characters the model can write"):
        SampleSettings(stop=("\U0001f600",))
    with pytest.raises(ValueError, match="non-empty"):
        SampleSettings(stop=("",))


@pytest.mark.parametrize("seed", range(6))
def test_streamed_pieces_add_up_to_the_final_text(tiny_model, seed):
    free = one(tiny_model, "Once", temperature=1.0, max_chars=150, seed=seed).text
    # multi-character stop strings whose first characters occur early and often
    stops = (free[70:75], free[5] + "\x7e\x7e", free[20:22] + "#")
    run = stream(tiny_model, ["Once"], SampleSettings(temperature=1.0, max_chars=150, seed=seed, stop=stops))
    pieces = list(run)
    results = run.generations
    assert all(i == 0 and piece for i, piece in pieces)
    assert "".join(p for _, p in pieces) == results[0].text
    assert results[0].text == free[: min(free.find(s) for s in stops if s in free)]
    assert results[0].finish == "stop"


def test_streaming_without_a_stop_sends_everything(tiny_model):
    settings = SampleSettings(temperature=1.0, max_chars=50, seed=3, stop=("\x7e\x7e\x7e",))
    run = stream(tiny_model, ["x"], settings)
    text = "".join(p for _, p in run)
    results = run.generations
    assert text == results[0].text and len(text) == 50 and results[0].finish == "length"


def test_a_stream_returns_its_replies_once_used_up(tiny_model):
    run = stream(tiny_model, ["a"], SampleSettings(temperature=0, max_chars=5))
    with pytest.raises(RuntimeError, match="not finished"):
        run.generations  # noqa: B018 (the property is what is tested)
    assert "".join(p for _, p in run) == run.generations[0].text
    assert list(run) == [] and len(run.generations) == 1  # used up: the replies stay
    empty = stream(tiny_model, [], SampleSettings())
    assert list(empty) == [] and empty.generations == []


def test_stop_watcher_holds_back_a_possible_stop_string():
    w = StopWatcher(["\n\nQ:"])
    assert w.add("Hello") == ("Hello", False)
    assert w.add("\n") == ("", False)
    assert w.add("\n") == ("", False)
    assert w.add("X") == ("\n\nX", False)  # it was not the stop string after all
    assert w.add("\n") == ("", False)
    assert w.add("\n") == ("", False)
    assert w.add("Q") == ("", False)
    assert w.add(":") == ("", True)
    assert w.text == "Hello\n\nX"


def test_stop_watcher_flush_and_multi_character_pieces():
    w = StopWatcher(["END", "##"])
    assert w.add("abc E") == ("abc ", False)
    assert w.add("N") == ("", False)
    assert w.flush() == "EN"
    w = StopWatcher(["END", "##"])
    assert w.add("one # two ## three END") == ("one # two ", True)
    assert w.text == "one # two "



def _held(text: str, stops: list[str]) -> int:
    """The longest end of ``text`` that begins some stop string (what must not be shown yet)."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("ab\nQ", min_size=1, max_size=3), min_size=1, max_size=4),
       st.lists(st.text("ab\nQ", max_size=3), max_size=40))
def test_stop_watcher_shows_exactly_what_no_stop_string_can_still_claim(stops, pieces):
    w = StopWatcher(stops)
    shown, text = "", ""
    for piece in pieces:
        text += piece
        out, hit = w.add(piece)
        shown += out
        ends = [at for at in (text.find(s) for s in stops) if at != -1]
        if ends:
            assert hit and shown == text[: min(ends)] == w.text
            return
        assert not hit and shown == text[: len(text) - _held(text, stops)]
    assert shown + w.flush() == text


# ---- several requests at once ------------------------------------------------------------


def test_several_prompts_with_different_settings_equal_each_alone(lively):
    prompts = ["Once upon a time", "", "Q: Do I need a mask?\nA:", "x"]
    settings = [
        SampleSettings(temperature=1.0, max_chars=60, seed=1),
        SampleSettings(temperature=0, max_chars=25),
        SampleSettings(temperature=0.7, top_k=5, max_chars=80, seed=2, stop=("e",)),
        SampleSettings(temperature=1.3, top_p=0.8, max_chars=40, seed=3),
    ]
    together = generate(lively, prompts, settings)
    alone = [generate(lively, [p], s)[0] for p, s in zip(prompts, settings, strict=True)]
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.finish for g in together] == [g.finish for g in alone]
    assert [len(g.text) for g in together][:2] == [60, 25]


def test_stream_tags_pieces_with_their_request(tiny_model):
    prompts = ["a", "b", "c"]
    settings = [SampleSettings(temperature=1.0, max_chars=n, seed=n) for n in (5, 30, 12)]
    run = stream(tiny_model, prompts, settings)
    by_request = {0: "", 1: "", 2: ""}
    for i, piece in run:
        by_request[i] += piece
    results = run.generations
    assert [by_request[i] for i in range(3)] == [g.text for g in results]
    assert [len(g.text) for g in results] == [5, 30, 12]


def test_one_settings_for_all_and_mismatched_counts(tiny_model):
    gens = generate(tiny_model, ["a", "b"], SampleSettings(temperature=0, max_chars=5))
    assert len(gens) == 2
    with pytest.raises(ValueError, match="one SampleSettings per prompt"):
        generate(tiny_model, ["a", "b"], [SampleSettings()])
    assert generate(tiny_model, [], SampleSettings()) == []


def test_text_stays_inside_the_character_set(tiny_model):
    text = one(tiny_model, "", temperature=2.0, max_chars=300, seed=0).text
    assert set(text) <= set(CHARS)


# ---- bad settings ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 3, float("nan"), float("inf"), "hot", None, True])
def test_bad_temperature(value):
    with pytest.raises(ValueError, match="temperature must be a number from 0 to 2"):
        SampleSettings(temperature=value)


@pytest.mark.parametrize("value", [0, -0.1, 1.5, float("nan"), "0.9"])
def test_bad_top_p(value):
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        SampleSettings(top_p=value)


@pytest.mark.parametrize("value", [-1, 2.5, "5", True])
def test_bad_top_k(value):
    with pytest.raises(ValueError, match="top_k must be a whole number >= 0"):
        SampleSettings(top_k=value)


@pytest.mark.parametrize("value", [0, -5, 10.0])
def test_bad_length(value):
    with pytest.raises(ValueError, match="max_chars must be a whole number >= 1"):
        SampleSettings(max_chars=value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 1.5, "7"])
def test_bad_seed(value):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        SampleSettings(seed=value)


def test_edge_settings_are_accepted():
    SampleSettings(temperature=0, top_k=0, top_p=1, max_chars=1, seed=0)
    SampleSettings(temperature=2, top_k=1000, top_p=1e-9, seed=2**64 - 1)


# ---- endings: the length is a target, never a guillotine ------------------------------------


def test_what_counts_as_a_sentence_end():
    for text in ("She wept.", "Is it open?", "Go!", '"Yes, sir."', "(It was.)  \n", "He said \u201cno.\u201d"):
        assert ends_sentence(text), text
    for text in ("and have I becom", "Mr.", "It was Dr.", "signed A.", "one, two,", "", "wait:"):
        assert not ends_sentence(text), text


def test_clean_ending_cuts_back_to_the_last_sentence_never_mid_word():
    assert clean_ending("The king slept. The queen wo", Finish.LENGTH) == ("The king slept.", True)
    assert clean_ending("The king slept.", Finish.LENGTH) == ("The king slept.", True)
    assert clean_ending("no end in sight and have I becom", Finish.LENGTH) == ("no end in sight and have I", False)
    assert clean_ending("Contact your provider\n", Finish.STOP) == ("Contact your provider", False)
    assert clean_ending("Ends. and a bit", Finish.STOP) == ("Ends.", True)
    assert clean_ending("cut by a restart mid-wo", Finish.CANCELLED) == ("cut by a restart mid-wo", False)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab .!?\n\"", min_size=0, max_size=80))
def test_a_cut_back_text_is_a_prefix_that_ends_a_sentence_or_a_whole_word(text):
    kept, clean = clean_ending(text, Finish.LENGTH)
    assert text.startswith(kept)
    if clean:
        assert ends_sentence(kept)
    elif kept:
        rest = text[len(kept):]
        assert not rest or rest[0].isspace() or (kept == text.rstrip() and not any(c.isspace() for c in kept))


def test_with_a_target_replies_end_at_a_sentence_across_many_seeds_and_lengths(base_checkpoint):
    from model.checkpoint import load_checkpoint

    model = load_checkpoint(base_checkpoint).model
    runs = [SampleSettings(seed=seed, temperature=0.9, target_chars=target, max_chars=target + 60)
            for seed in range(6) for target in (1, 20, 45, 90)]
    uncut = generate(model, ["Once upon a time"] * len(runs), [replace(s, target_chars=0) for s in runs])
    got = generate(model, ["Once upon a time"] * len(runs), runs)
    for s, g, raw in zip(runs, got, uncut, strict=True):
        assert g.finish in ("sentence", "length")
        assert len(g.text) <= s.max_chars and raw.text.startswith(g.text)
        assert raw.text[len(g.text):][:1] in ("", " ", "\n")  # never mid-word
        if ends_sentence(g.text):
            assert g.finish == "length" or len(g.text) >= s.target_chars - 1
        else:  # only text with no sentence end at all may end unclean
            assert not any(ends_sentence(raw.text[:i]) for i in range(1, len(g.text) + 1))
    assert "sentence" in {g.finish for g in got}


def test_a_target_leaves_replies_without_one_as_they_were(lively):
    plain = generate(lively, ["the"], SampleSettings(seed=3, max_chars=60))[0]
    assert plain.finish == "length" and len(plain.text) == 60


def test_candidate_seeds_are_fixed_by_the_reply_seed_and_distinct():
    seeds = [candidate_seed(42, i) for i in range(8)]
    assert seeds[0] == 42 and len(set(seeds)) == 8
    assert seeds == [candidate_seed(42, i) for i in range(8)]
    assert all(SampleSettings(seed=s).seed == s for s in seeds)  # all valid torch seeds
    assert candidate_seed(2**64 - 1, 5) < 2**64
