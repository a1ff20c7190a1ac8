"""``charbot reply --json``: the posted message and how it came to be; the CLI posts what the bot posts."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.cli import main
from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, make_request


@pytest.fixture(autouse=True)
def no_machine_settings(monkeypatch, tmp_path):
    """No .env or settings from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for name in ("CHARBOT_CHECKPOINT_DIR", "CHARBOT_DB", "CHARBOT_DEVICE", "CHARBOT_CORPORA", "CHARBOT_MAX_PROMPT"):
        monkeypatch.delenv(name, raising=False)


def reply_json(capsys, *args: str) -> dict:
    assert main(["reply", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_says_what_was_posted_and_why(capsys, tiny_checkpoint_dir):
    got = reply_json(capsys, "tale", "Once upon a time", "--seed", "3", "--best-of", "3", "--length", "60",
                     "--checkpoints", str(tiny_checkpoint_dir))
    assert set(got) >= {"message", "generated", "finish", "seed", "n", "chosen", "score", "source"}
    assert got["n"] == 3 and got["seed"] == 3 and 0 <= got["chosen"] < 3
    assert got["finish"] in ("sentence", "length", "stop")
    assert got["message"].startswith("**Once upon a time**")
    assert set(got["score"]) >= {"loglik", "invented", "ending", "repetition", "grounding", "total", "invented_words"}
    assert got["source"] is None  # tales are not grounded
    plain = main(["reply", "tale", "Once upon a time", "--seed", "3", "--best-of", "3", "--length", "60",
                  "--checkpoints", str(tiny_checkpoint_dir)])
    assert plain == 0 and capsys.readouterr().out == got["message"] + "\n"


def test_json_for_faq_names_the_retrieved_passage_and_its_score(capsys, tiny_checkpoint_dir):
    got = reply_json(capsys, "faq", "Where do I upload my vaccination record?", "--seed", "1",
                     "--checkpoints", str(tiny_checkpoint_dir))
    if got["source"] is None:
        pytest.skip("the faq corpus is not on this machine")
    assert got["source"]["score"] > 0 and got["source"]["passage"]
    assert "*From the FAQ:*" in got["message"]


def test_the_cli_posts_exactly_what_the_bot_posts(capsys, tiny_checkpoint_dir):
    args = ["novel", "Anna looked at him", "--seed", "9", "--length", "80", "--checkpoints", str(tiny_checkpoint_dir)]
    assert main(["reply", *args]) == 0
    printed = capsys.readouterr().out.removesuffix("\n")
    with Models.load(["novel"], tiny_checkpoint_dir, device="cpu") as models:
        update = asyncio.run(ReplyService(models, Limits()).reply(
            make_request("novel", "Anna looked at him", Limits(), length=80, seed=9)))
    assert printed == update.text


def test_a_bad_candidate_count_is_explained(capsys, tiny_checkpoint_dir):
    assert main(["reply", "tale", "x", "--best-of", "0", "--checkpoints", str(tiny_checkpoint_dir)]) != 0
    assert "candidates" in capsys.readouterr().err
