"""The verbatim-copy guard: a reply never posts 50+ characters copied from a contribution, forgotten or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, make_request
from bot.core.score import Score
from bot.core.verbatim import SPAN, VerbatimGuard, shingles
from bot.store import open_store
from model.sample import Finish, Generation

LIMITS = Limits(cooldown_s=0.0)
SENTENCE = "Once upon a time a princess sat by the well and wept, for her golden ball had rolled into the water. "
RECITED = SENTENCE * 2


@pytest.fixture
def reciting(tmp_path) -> Path:
    """A tiny tale model overfit on one sentence (2 s on a CPU core): it recites it from "Once upon a time"."""
    import torch

    from model.network import ModelConfig
    from model.textdata import TextData
    from model.train import TrainConfig, train

    torch.manual_seed(0)
    cfg = TrainConfig(n_seqs=8, n_steps=64, max_steps=300, lr=2e-2, eval_every=100, warmup_steps=5, threads=1)
    train(TextData.from_text("tale", SENTENCE * 60), tmp_path / "tale.safetensors", cfg,
          ModelConfig(embed_size=16, hidden_size=64, n_layers=1, dropout=0.0), progress_bar=False)
    return tmp_path


def longest_copy(text: str, source: str) -> int:
    """The longest span of ``text`` found verbatim in ``source``."""
    return max((n for i in range(len(text)) for n in range(1, len(text) - i + 1) if text[i:i + n] in source),
               default=0)


def test_a_copied_span_is_found_across_case_and_spacing_and_common_phrases_are_not():
    guard = VerbatimGuard()
    guard.add("tale", "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door.")
    text = "Once upon a time. Then THE quick brown fox jumps over the lazy   dog while the cat sleeps on the mat."
    start, end = guard.copied("tale", text)
    assert text[start:end] == "THE quick brown fox jumps over the lazy   dog while the cat sleeps on the "
    assert guard.trim(text, start) == "Once upon a time."
    assert guard.copied("tale", "The quick brown fox jumps over the lazy dog, said nobody else at all.") is None
    assert guard.copied("faq", text) is None  # each corpus guards its own contributions
    assert all(isinstance(h, int) and -(2**63) <= h < 2**63 for h in shingles(text))  # fit a BIGINT column


def test_another_candidate_is_posted_when_the_best_one_copies():
    guard = VerbatimGuard()
    guard.add("tale", RECITED)
    service = ReplyService(None, LIMITS, guard=guard)  # type: ignore[arg-type]
    copy = Generation("", RECITED[:60], Finish.SENTENCE, 1, logprobs=(-0.1,) * 60)
    own = Generation("", "The well was deep and the princess was gone.", Finish.SENTENCE, 2, logprobs=(-1.0,) * 44)
    scores = [Score(-0.1, 0, 0, 0, 0, 0), Score(-1.0, 0, 0, 0, 0, 0)]
    assert service.not_copied("tale", [copy, own], scores, 0) == (1, own)
    assert (guard.replaced, guard.trimmed) == (1, 0)


async def test_a_model_that_recites_a_contribution_has_its_reply_trimmed_and_counted(reciting):
    models = Models.load(["tale"], reciting, device="cpu")
    try:
        request = make_request("tale", "Once upon a time", LIMITS, temperature=0, length=150, seed=1, n=2)
        unguarded = (await ReplyService(models, LIMITS).reply(request)).generation.text
        assert longest_copy(unguarded, RECITED) >= 100  # it does recite the sentence
        guard = VerbatimGuard()
        guard.add("tale", RECITED)
        update = await ReplyService(models, LIMITS, guard=guard).reply(request)
        assert longest_copy(update.generation.text, RECITED) < SPAN
        assert "princess" not in update.text and "no words came" in update.text  # nothing of its own to say
        assert (guard.replaced, guard.trimmed) == (0, 1)  # both candidates copied (temperature 0)
    finally:
        models.close(wait=False)


async def test_forgotten_texts_stay_guarded_as_hashes_only(database):
    async with await open_store(database) as store:
        await store.add_contribution(1, 2, 3, "tale", RECITED, "modal")
        assert await store.forget(1, 3) == 1
        guard = VerbatimGuard()  # as a bot started after the /forget builds it
        await guard.sync(store)
        assert guard.copied("tale", "She said: " + RECITED[:70]) is not None
        assert await store.count_forgotten_shingles() == len(shingles(RECITED))
        await guard.sync(store)  # nothing new: nothing reloaded
        assert await store.contributions() == []


@pytest.mark.parametrize("chars", [4000])
def test_hashing_a_long_contribution_is_quick(chars):
    import time

    text = "word " * (chars // 5)
    t0 = time.perf_counter()
    shingles(text)
    assert time.perf_counter() - t0 < 0.5
