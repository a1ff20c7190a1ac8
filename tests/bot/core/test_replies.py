"""The reply logic the bot and the CLI share: checks, temperature precedence, stop rules, streaming, limits."""

from __future__ import annotations

import asyncio
import itertools
import threading
from contextlib import aclosing
from dataclasses import replace

import pytest
import torch

from bot.config import Limits
from bot.core.engines import Models
from bot.core.refusals import Refusal
from bot.core.render import CUT_SHORT, QUOTE_ROOM
from bot.core.replies import (
    ENGINE_BUSY,
    RESTARTING,
    ReplyService,
    hard_cap,
    make_request,
    prime_of,
    resolve_temperature,
    sample_settings,
)
from bot.discord_limits import MESSAGE_CHARS
from corpora.passages import grounded_head
from corpora.registry import CORPORA
from model.charset import CHARS
from model.checkpoint import save_checkpoint
from model.network import CharLSTM
from tests.helpers import eventually

LIMITS = Limits(edit_interval_s=0.0, cooldown_s=0.0)


def constant_checkpoint(folder, corpus: str, char: str, config) -> None:
    """A checkpoint whose model always writes ``char`` (its logits ignore the input)."""
    model = CharLSTM(config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-20.0)
        model.head.bias[CHARS.index(char)] = 20.0
    save_checkpoint(folder / f"{corpus}.safetensors", model, {"corpus": corpus})


def hold_after_first_piece(monkeypatch, engine) -> threading.Event:
    """Make ``engine`` pause after its first piece of text until the returned event is set.

    Cancelling a reply also releases it. This makes the order of events in a test certain
    instead of depending on how fast the tiny model runs.
    """
    gate = threading.Event()
    real_submit, real_cancel = engine.submit, engine.cancel

    def submit(prime, settings, on_text, **options):
        def held(piece: str) -> None:
            on_text(piece)
            gate.wait(30)

        return real_submit(prime, settings, held, **options)

    def cancel(future) -> None:
        real_cancel(future)
        gate.set()

    monkeypatch.setattr(engine, "submit", submit)
    monkeypatch.setattr(engine, "cancel", cancel)
    return gate


@pytest.fixture
def models(tiny_checkpoint_dir):
    loaded = Models.load(list(CORPORA), tiny_checkpoint_dir, device="cpu")
    yield loaded
    loaded.close(wait=False)


# ---- checks and precedence ----------------------------------------------------------------


def test_temperature_precedence_option_then_user_then_corpus():
    assert resolve_temperature(0.2, 1.5, 0.8) == 0.2
    assert resolve_temperature(None, 1.5, 0.8) == 1.5
    assert resolve_temperature(None, None, 0.8) == 0.8
    assert resolve_temperature(0.0, 1.5, 0.8) == 0.0  # zero is a choice, not "unset"


def test_make_request_applies_precedence_with_the_corpus_default():
    assert make_request("faq", "Masks?", LIMITS).temperature == CORPORA["faq"].default_temperature
    assert make_request("faq", "Masks?", LIMITS, user_default=1.1).temperature == 1.1
    assert make_request("faq", "Masks?", LIMITS, temperature=0.3, user_default=1.1).temperature == 0.3


def test_length_and_prompt_limits_are_explained():
    limits = Limits(max_prompt_chars=20, max_length=100, default_length=50)
    assert make_request("tale", "hi", limits).length == 50
    with pytest.raises(Refusal, match="from 1 to 100"):
        make_request("tale", "hi", limits, length=101)
    with pytest.raises(Refusal, match="from 1 to 100"):
        make_request("tale", "hi", limits, length=0)
    with pytest.raises(Refusal) as err:
        make_request("tale", "x" * 21, limits)
    assert "21 characters" in err.value.message and "limit is 20" in err.value.message


def test_an_empty_question_is_refused_with_an_example_but_an_empty_story_prompt_starts_fresh():
    with pytest.raises(Refusal) as err:
        make_request("faq", "   ", LIMITS)
    assert f"/faq question: {CORPORA['faq'].example_prompt}" in err.value.message
    with pytest.raises(Refusal, match="could not find any words"):
        make_request("faq", "???", LIMITS)
    with pytest.raises(Refusal, match="could not find any words"):
        make_request("faq", "\U0001f600\U0001f600", LIMITS)
    assert make_request("tale", "", LIMITS).prompt == ""


def test_unknown_corpus_is_refused():
    with pytest.raises(Refusal, match="tale, faq, novel"):
        make_request("poems", "x", LIMITS)


def test_settings_use_the_corpus_stop_rules_and_leave_room_for_the_prompt():
    request = make_request("faq", "Do I need a mask?", LIMITS, length=1500)
    settings = sample_settings(request)
    assert settings.stop == CORPORA["faq"].stop
    assert settings.max_chars <= MESSAGE_CHARS - len("> **Do I need a mask?**\n") - len(CUT_SHORT) - QUOTE_ROOM
    assert settings.target_chars <= settings.max_chars


def test_the_length_is_a_target_with_a_hard_cap_well_under_discords_limit():
    short = sample_settings(make_request("tale", "x", LIMITS, length=10))
    assert short.target_chars == 10 and 10 < short.max_chars <= 10 + 60
    usual = sample_settings(make_request("novel", "Anna", LIMITS, length=400))
    assert usual.target_chars == 400 and usual.max_chars == 500
    longest = sample_settings(make_request("novel", "Anna", LIMITS, length=LIMITS.max_length))
    assert longest.max_chars < MESSAGE_CHARS - 100


def test_prime_comes_from_the_corpus_framing():
    prime, continues = prime_of(make_request("tale", "Once upon a time there was a king", LIMITS))
    assert prime == CORPORA["tale"].prime("Once upon a time there was a king") and continues
    assert not prime_of(make_request("faq", "Do I need a mask?", LIMITS))[1]


# ---- generating -----------------------------------------------------------------------------


async def test_stream_grows_then_finishes_with_the_same_text_as_a_plain_reply(models, monkeypatch):
    service = ReplyService(models, LIMITS)
    request = make_request("tale", "Once upon a time there was a king", LIMITS, length=120, seed=5, n=1)
    gate = hold_after_first_piece(monkeypatch, models.engines["tale"])
    updates = []
    async for update in service.stream(request):
        updates.append(update)
        gate.set()
    assert updates[-1].done and not any(u.done for u in updates[:-1])
    assert len(updates) >= 2
    final = updates[-1].text.removesuffix("\u2026")
    shown = [u.text.removesuffix(" \u2026").rstrip() for u in updates[:-1]]
    for u, body in zip(updates[:-1], shown, strict=True):
        assert u.text.startswith("**Once upon a time there was a king**") and u.text.endswith(" \u2026")
        assert final.startswith(body) or body.startswith(final)  # the end may be cut back to a whole word
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(shown))
    monkeypatch.undo()
    assert all(len(u.text) <= MESSAGE_CHARS for u in updates)
    again = await service.reply(request)
    assert again.text == updates[-1].text
    assert again.generation.seed == 5
    assert service.in_flight() == 0


async def test_edits_are_throttled_to_the_interval(models):
    service = ReplyService(models, replace(LIMITS, edit_interval_s=3600.0))
    request = make_request("novel", "Anna looked at him", LIMITS, length=300, seed=1)
    updates = [u async for u in service.stream(request)]
    assert len(updates) <= 2  # at most the first snapshot, then the finished reply
    assert updates[-1].done


async def test_stop_strings_end_the_reply_and_are_not_shown(tmp_path, tiny_config):
    constant_checkpoint(tmp_path, "faq", "\n", tiny_config)
    with Models.load(["faq"], tmp_path, device="cpu") as m:
        update = await ReplyService(m, LIMITS).reply(make_request("faq", "Is it open?", LIMITS, temperature=0))
    assert update.generation.finish == "stop"
    assert update.generation.text == ""
    assert update.text.startswith("> **Is it open?**\n") and "no words came" in update.text


async def test_text_with_no_sentence_end_runs_to_its_cap_and_ends_with_an_ellipsis(tmp_path, tiny_config):
    constant_checkpoint(tmp_path, "novel", "a", tiny_config)
    with Models.load(["novel"], tmp_path, device="cpu") as m:
        update = await ReplyService(m, LIMITS).reply(make_request("novel", "Anna", LIMITS, length=40, seed=1))
    assert update.generation.finish == "length"
    assert update.text == "**Anna**" + "a" * hard_cap(40) + "\u2026"


async def test_user_cooldown_and_one_reply_at_a_time(models):
    now = [100.0]
    service = ReplyService(models, replace(LIMITS, cooldown_s=10.0), clock=lambda: now[0])
    request = make_request("tale", "Once", LIMITS, length=1500, user=42, seed=1)
    first = service.start(request)
    with pytest.raises(Refusal, match="still being written"):
        service.start(request)
    first.close()
    now[0] += 3
    with pytest.raises(Refusal, match="ask again in 7 s"):
        service.start(request)
    other = service.start(replace(request, user=43))  # someone else is not held back
    other.close()
    now[0] += 7
    service.start(request).close()


async def test_a_bound_on_queued_replies_says_busy(models):
    service = ReplyService(models, replace(LIMITS, max_pending=1))
    long = make_request("tale", "Once", LIMITS, length=1500, seed=1)
    running = service.start(long)
    try:
        with pytest.raises(Refusal) as err:
            service.start(long)
        assert (err.value.message, err.value.kind) == (ENGINE_BUSY, "busy")
        service.start(make_request("faq", "Masks?", LIMITS, length=5)).close()  # other corpora have their own engine
    finally:
        running.close()


async def test_watchers_hear_every_start_and_every_refusal_by_its_kind(models):
    class Heard:
        def __init__(self) -> None:
            self.events: list[tuple[str, str]] = []

        def started(self, request, stream) -> None:
            self.events.append(("started", request.corpus))

        def refused(self, request, refusal) -> None:
            self.events.append((refusal.kind, request.corpus))

    service = ReplyService(models, LIMITS)
    heard = Heard()
    service.watchers.append(heard)
    request = make_request("tale", "Once", LIMITS, length=5, seed=1, user=7)
    first = service.start(request)
    with pytest.raises(Refusal):
        service.start(request)  # the same person while their reply is still being written
    first.close()
    await service.drain(grace_s=0.0)
    with pytest.raises(Refusal):
        service.start(replace(request, user=8))
    assert heard.events == [("started", "tale"), ("cooldown", "tale"), ("restarting", "tale")]


async def test_closing_a_stream_early_cancels_its_generation(models):
    service = ReplyService(models, LIMITS)
    engine = models.engines["novel"]
    async with aclosing(service.stream(make_request("novel", "Anna", LIMITS, length=1500, seed=1))) as updates:
        async for _ in updates:
            break
    await eventually(lambda: engine.pending() == 0, timeout=2, what="the engine to drop the closed stream's work")
    assert service.in_flight() == 0


async def test_drain_cuts_running_replies_and_says_so_then_refuses_new_ones(models, monkeypatch):
    service = ReplyService(models, LIMITS)
    hold_after_first_piece(monkeypatch, models.engines["novel"])
    request = make_request("novel", "Anna", LIMITS, length=1500, seed=1)
    finals = []

    async def consume() -> None:
        async for update in service.stream(request):
            if update.done:
                finals.append(update)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await eventually(service.in_flight, what="the reply to start")
    cut = await service.drain(grace_s=0.0)
    await task
    assert cut == 1
    assert finals[0].generation.finish == "cancelled"
    assert finals[0].text.endswith(CUT_SHORT)
    with pytest.raises(Refusal) as err:
        service.start(request)
    assert (err.value.message, err.value.kind) == (RESTARTING, "restarting")


async def test_drain_lets_short_replies_finish(models):
    service = ReplyService(models, LIMITS)
    finals = []

    async def consume() -> None:
        async for update in service.stream(make_request("tale", "Once", LIMITS, length=20, seed=2)):
            if update.done:
                finals.append(update)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert await service.drain(grace_s=30.0) == 0
    await task
    assert finals and finals[0].generation.finish in ("length", "stop")


# ---- best-of-n, grounding ---------------------------------------------------------------------


async def test_best_of_n_gives_the_same_reply_for_the_same_seed_alone_and_in_a_crowd(models):
    service = ReplyService(models, replace(LIMITS, max_pending=64))
    request = make_request("tale", "Once upon a time there was a king", LIMITS, length=80, seed=11, n=4)
    alone = await service.reply(request)
    assert alone.candidates == 4 and alone.seed == 11 and 0 <= alone.chosen < 4
    crowd = [make_request("tale", "The moon", LIMITS, length=120, seed=100 + i) for i in range(12)]
    results = await asyncio.gather(service.reply(request), *(service.reply(r) for r in crowd))
    assert results[0].text == alone.text and results[0].chosen == alone.chosen
    assert alone.score is not None


async def test_the_posted_candidate_is_the_best_scored_one(models, monkeypatch):
    from bot.core import replies

    seen = {}
    real_choose = replies.choose

    def spy(request, candidates, models_, source):
        chosen, scores = real_choose(request, candidates, models_, source)
        seen.update(candidates=candidates, chosen=chosen, scores=scores)
        return chosen, scores

    monkeypatch.setattr(replies, "choose", spy)
    update = await ReplyService(models, LIMITS).reply(make_request("novel", "Anna", LIMITS, length=60, seed=3, n=5))
    assert len(seen["candidates"]) == 5
    assert seen["scores"][seen["chosen"]].total == max(s.total for s in seen["scores"])
    assert update.generation.text == seen["candidates"][seen["chosen"]].text


async def test_an_idle_bot_draws_several_candidates_and_a_busy_one_fewer(models):
    service = ReplyService(models, replace(LIMITS, max_pending=64))
    idle = await service.reply(make_request("novel", "Anna", LIMITS, length=30, seed=1))
    assert idle.candidates == CORPORA["novel"].best_of > 1
    crowd = await asyncio.gather(*(service.reply(make_request("novel", "Anna", LIMITS, length=200, seed=i))
                                   for i in range(24)))
    assert min(u.candidates for u in crowd) == 1


async def test_faq_answers_are_grounded_and_quote_their_passage(models):
    if "faq" not in models.passages:
        pytest.skip("the faq corpus is not on this machine")
    update = await ReplyService(models, LIMITS).reply(
        make_request("faq", "Where do I upload my vaccination record?", LIMITS, length=120, seed=2))
    assert update.source is not None and update.source.score > 0
    assert "vaccin" in update.source.passage.text.lower()
    assert "\n\n> *From the FAQ:* \u201c" in update.text and len(update.text) <= MESSAGE_CHARS
    tale = await ReplyService(models, LIMITS).reply(make_request("tale", "The moon", LIMITS, length=60, seed=2))
    assert tale.source is None and "From the FAQ" not in tale.text


async def test_a_passage_is_read_once_for_every_question_it_answers(models):
    """The engine keeps the state after a grounded prime's passage (corpus text, no user's words),
    so a second question on the same passage starts after it; the user's question is never kept."""
    if "faq" not in models.passages:
        pytest.skip("the faq corpus is not on this machine")
    service = ReplyService(models, LIMITS)
    first = await service.reply(make_request("faq", "Where do I upload my vaccination record?", LIMITS, length=80,
                                             seed=2))
    heads = models.engines["faq"]._heads
    assert list(heads) == [grounded_head(first.source.passage.text)]
    again = await service.reply(make_request("faq", "How do I upload my vaccination record", LIMITS, length=80,
                                             seed=2))
    assert again.source.passage.text == first.source.passage.text and len(heads) == 1


@pytest.mark.parametrize("kwargs", [{"temperature": "@everyone <@123>"}, {"length": "<@&5> click"},
                                    {"prompt": 5}, {"corpus": "@here"}])
def test_a_refusal_never_repeats_a_raw_value(kwargs):
    args = {"corpus": "tale", "prompt": "Once", **kwargs}
    with pytest.raises(Refusal) as err:
        make_request(args.pop("corpus"), args.pop("prompt"), Limits(), **args)
    message = err.value.message
    assert "@everyone" not in message and "<@123>" not in message and "<@&5>" not in message
    assert "@here" not in message
