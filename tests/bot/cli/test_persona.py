"""``charbot persona`` as an operator runs it, and ``charbot reply --persona`` posting what /say would."""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Limits
from bot.core.engines import Models
from bot.core.replies import ReplyService, make_request
from bot.core.verbatim import VerbatimGuard
from bot.jobs import settings as job_settings
from bot.jobs.manager import FinetuneManager
from bot.jobs.settings import FinetuneSettings
from bot.personas.service import PersonaService
from bot.personas.settings import PersonaSettings
from bot.store import open_store
from bot.store.jobs import FinetuneStore
from bot.store.queue import JobQueue
from corpora import voices
from tests.helpers import fake_finetune

SERVER, OTHER = 1_146_439_104_567_410_688, 42
RULES = ["The ferry to Inisheer leaves the north pier at nine every morning except Sunday.",
         "Members pay their dues to the harbour master before the first of the month.",
         "Lanterns must be lit on the breakwater whenever the fog bell rings twice."]
TEXT = "\n".join(RULES * 12) + "\n"


@pytest.fixture(autouse=True)
def no_machine_settings(monkeypatch, tmp_path):
    """No .env or settings from the machine running the tests, and no persona left registered."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CHARBOT_") and name != "CHARBOT_DATA_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setattr(voices, "_personas", {})


@pytest.fixture
def bot(tmp_path, random_checkpoint):
    """The bot's database (empty), its checkpoints folder with the general base model, and its text files."""
    db = tmp_path / "charbot.db"

    async def create() -> None:
        async with await open_store(db):
            pass

    asyncio.run(create())
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    for name in ("base", "tale", "faq", "novel"):  # the general base, and the corpora `charbot chat` loads
        shutil.copy(random_checkpoint, ckdir / f"{name}.safetensors")
    (tmp_path / "rules.txt").write_text(TEXT)
    return tmp_path, db, ckdir


@pytest.fixture
def run(capsys, bot):
    """``charbot ...`` in this process on the bot's database: exit code, stdout, stderr."""
    tmp, db, ckdir = bot

    def call(*args: str) -> tuple[int, str, str]:
        extra = ["--db", str(db), "--env-file", "/nonexistent"]
        if args[0] == "persona":
            extra += ["--state-dir", str(tmp / "state"), "--checkpoints", str(ckdir)]
        code = main([*args, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def chat(run, args: list[str], lines: list[str]) -> tuple[int, str, str]:
    """``charbot chat ARGS`` reading ``lines``, in this process on the bot's database."""
    stdin = sys.stdin
    sys.stdin = io.StringIO("".join(line + "\n" for line in lines))
    try:
        return run("chat", *args)
    finally:
        sys.stdin = stdin


async def someone_else_trains(db: Path, corpus: str) -> int:
    """A fine-tune recorded as running in another live process of this machine (a bot, say)."""
    async with await open_store(db) as store:
        job = await FinetuneStore(store).create_job(corpus, "discord:1", {"minutes": 10})
        await store.write([("UPDATE jobs SET owner_pid = ? WHERE id = ?", (os.getppid(), job))])
        return job


def test_a_persona_is_created_queued_behind_a_running_job_listed_described_and_deleted(run, bot):
    tmp, db, _ = bot
    asyncio.run(someone_else_trains(db, "tale"))  # the machine's one fine-tune slot is taken
    code, out, err = run("persona", "create", "Rules", str(tmp / "rules.txt"), "--style", "faq",
                         "--server", str(SERVER), "--by", "77")
    assert code == 0, err
    assert out.startswith(f"Persona rules (faq) created in server {SERVER} from 1 file(s), {len(TEXT):,} characters. "
                          "A fine-tune is already running on this machine, so its training waits in the queue "
                          "(entry 1, 0 ahead of it) for a bot process sharing this database to start it.")

    code, out, _ = run("persona", "list", "--server", str(SERVER), "--json")
    listed = json.loads(out)
    assert code == 0 and [(p["name"], p["style"], p["state"], p["created_by"]) for p in listed["personas"]] == [
        ("rules", "faq", "queued (job 1)", 77)]
    assert "- **rules** (faq, 2,772 characters): queued (job 1)" in listed["text"]
    code, out, _ = run("persona", "list", "--server", str(OTHER))
    assert code == 0 and out.startswith("This server has no personas yet.")
    code, out, _ = run("persona", "info", "rules", "--server", str(SERVER))
    assert code == 0 and "**rules**: a faq persona" in out and "by <@77> from rules.txt" in out

    # It cannot speak before it is trained, and says why in the words /say would.
    code, out, err = run("reply", "--persona", "rules", "--server", str(SERVER), "When does the ferry leave?")
    assert code == 2 and out == ""
    assert err == "charbot reply: error: The persona rules is waiting for its training (job 1); try again later.\n"

    code, out, err = run("persona", "delete", "rules", "--server", str(SERVER))
    assert code == 0, err
    assert out.startswith("Deleted the persona **rules**: its 2,772 characters of text")

    async def nothing_left() -> None:
        async with await open_store(db) as store:
            assert await store.contributions() == []
            assert await store.fetchall("SELECT id FROM job_queue") == []

    asyncio.run(nothing_left())


@pytest.fixture
def refusing_training(monkeypatch, tmp_path):
    """Jobs run the stand-in training child (tests.helpers.FAKE_FINETUNE), which ends at once with a result no
    better than the general base: the guard refuses it unless forced."""
    gate = tmp_path / "gate"
    gate.touch()
    load_settings = job_settings.load_settings
    monkeypatch.setattr(job_settings, "load_settings",
                        lambda *a, **k: replace(load_settings(*a, **k), command=fake_finetune(gate, 2.5)))


def test_a_refused_persona_is_retrained_from_the_command_line(run, bot, refusing_training):
    tmp, _, ckdir = bot
    code, out, err = run("persona", "create", "rules", str(tmp / "rules.txt"), "--style", "faq",
                         "--server", str(SERVER), "--quiet")
    assert code == 1, err
    assert out.startswith("The training of the persona **rules** (job 1) was refused: it did not get better at the "
                          "new text (held-out contributions")
    assert (f"It cannot speak until it is trained: `charbot persona retrain rules --server {SERVER} --force` serves "
            "such a result anyway, or delete it and create it again with more text.") in out
    code, out, _ = run("persona", "info", "rules", "--server", str(SERVER))
    assert code == 0 and "an admin can train it again with `/persona retrain rules`" in out

    code, out, err = run("persona", "retrain", "rules", "--server", str(OTHER), "--force")
    assert (code, out) == (2, "") and err == ("charbot persona: error: This server has no persona called `rules` "
                                              "(its personas: none yet).\n")
    code, out, _ = run("persona", "retrain", "rules", "--server", str(SERVER), "--quiet")
    assert code == 1 and out.startswith("The training of the persona **rules** (job 2) was refused")

    code, out, err = run("persona", "retrain", "rules", "--server", str(SERVER), "--force", "--json")
    assert code == 0, err
    result = json.loads(out)
    version = tmp / "state" / "versions" / f"g{SERVER}-rules" / "v0001.safetensors"
    assert (result["state"], result["job"], result["version"], result["path"]) == ("done", 3, 1, str(version))
    code, out, err = run("reply", "--persona", "rules", "--server", str(SERVER), "When does the ferry leave?",
                         "--seed", "1", "--device", "cpu", "--precision", "fp32", "--checkpoints", str(ckdir))
    assert code == 0 and out.startswith("> **When does the ferry leave?**"), err


def test_forget_in_chat_takes_the_text_out_of_the_versions_and_what_the_persona_quotes(run, bot, refusing_training,
                                                                                     monkeypatch):
    """``charbot chat``'s /forget does what the bot's does: the texts are deleted, every kept version's learned
    texts lose them, and the persona answering in the session no longer quotes them."""
    tmp, db, ckdir = bot
    monkeypatch.setenv("CHARBOT_STATE_DIR", str(tmp / "state"))  # the bot's versions, which the chat scrubs
    code, _, err = run("persona", "create", "rules", str(tmp / "rules.txt"), "--style", "faq", "--server",
                       str(SERVER), "--force", "--quiet")  # by 0: the chat's own user
    assert code == 0, err
    learned = tmp / "state" / "versions" / f"g{SERVER}-rules" / "v0001.learned.json"
    assert [e["text"] for e in json.loads(learned.read_text())] == [TEXT]
    ask = "/say rules When does the ferry leave? --seed 1 --length 60"
    code, out, err = chat(run, ["--server", str(SERVER), "--checkpoints", str(ckdir), "--device", "cpu",
                                "--precision", "fp32"], [ask, "/forget", ask])
    assert code == 0, err
    before, forgot, after = out.partition("Deleted 1 contribution of yours from this server.")
    assert forgot, out
    assert "the rules model, version 1" in after and f"g{SERVER}-" not in out  # named as people call it
    assert "*From rules:*" in before and "north pier" in before  # grounded in its text, quoting it
    assert json.loads(learned.read_text()) == []  # the version's learned texts lost it
    assert "*From rules:*" not in after and "north pier" not in after  # and the session's persona stopped quoting

    async def stored() -> list:
        async with await open_store(db) as store:
            return await store.contributions()

    assert asyncio.run(stored()) == []


def test_a_persona_queued_or_training_is_not_retrained_and_a_retrain_waits_its_turn(run, bot):
    tmp, db, _ = bot
    key = f"g{SERVER}-rules"
    asyncio.run(someone_else_trains(db, "tale"))  # the machine's one fine-tune slot is taken
    assert run("persona", "create", "rules", str(tmp / "rules.txt"), "--style", "faq", "--server", str(SERVER))[0] == 0
    code, _, err = run("persona", "retrain", "rules", "--server", str(SERVER))
    assert code == 2 and err == ("charbot persona: error: The persona rules is already waiting for its training "
                                 "(job 1, 0 ahead of it); it trains when the machine has room.\n")

    async def started_elsewhere() -> int:  # a bot took it from the queue and trains it
        async with await open_store(db) as store:
            await JobQueue(store).drop(key)
        return await someone_else_trains(db, key)

    job = asyncio.run(started_elsewhere())
    code, _, err = run("persona", "retrain", "rules", "--server", str(SERVER))
    assert code == 2 and f"The persona rules is training now (job {job}); /persona info rules shows how far" in err

    async def ended() -> None:
        async with await open_store(db) as store:
            await FinetuneStore(store).finish_job(job, "failed", "the training process was killed")

    asyncio.run(ended())
    code, out, err = run("persona", "retrain", "rules", "--server", str(SERVER), "--minutes", "3", "--force")
    assert code == 0, err
    assert out.startswith(f"Persona rules in server {SERVER}: training it again on the text it keeps. A fine-tune is "
                          "already running on this machine, so its training waits in the queue (entry 2, 0 ahead")

    async def queued() -> list:
        async with await open_store(db) as store:
            return await JobQueue(store).waiting()

    (entry,) = asyncio.run(queued())
    assert (entry.corpus, entry.minutes, entry.force, entry.guild_id, entry.channel_id, entry.started_by) == (
        key, 3.0, True, SERVER, None, f"cli:{getpass.getuser()}")


@pytest.mark.parametrize("args, words", [
    (["create", "rules", "missing.txt", "--style", "faq"], "missing.txt: no such file"),
    (["create", "tale", "rules.txt", "--style", "faq"], "'tale' is taken by charbot itself; choose another name."),
    (["create", "rules", "rules.txt", "rules.txt", "--style", "faq"], "Two files have the same name"),
    (["create", "rules", "rules.txt", "--style", "faq", "--minutes", "0"], "minutes must be more than 0"),
    (["info", "nosuch"], "This server has no persona called `nosuch` (its personas: none yet)."),
    (["delete", "nosuch"], "This server has no persona called `nosuch`"),
    (["retrain", "nosuch"], "This server has no persona called `nosuch`"),
])
def test_a_mistake_is_one_line_on_stderr_and_nothing_is_kept(run, bot, args, words):
    tmp, db, _ = bot
    os.chdir(tmp)
    code, out, err = run("persona", *args, "--server", str(SERVER))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("charbot persona: error: ") and words in err

    async def nothing_kept() -> None:
        async with await open_store(db) as store:
            assert await store.contributions() == [] and await store.fetchall("SELECT name FROM personas") == []

    asyncio.run(nothing_kept())


def test_a_binary_file_is_refused_with_json_too(run, bot):
    tmp, _, _ = bot
    (tmp / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    code, out, err = run("persona", "create", "rules", str(tmp / "photo.txt"), "--style", "story",
                         "--server", str(SERVER), "--json")
    assert code == 2 and "looks like a binary file" in json.loads(out)["error"] and "binary" in err


def test_a_server_is_required_and_must_be_an_id(run, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["persona", "list"])
    assert exited.value.code == 2 and "--server" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["persona", "list", "--server", "0"])
    assert "a server id is a positive whole number" in capsys.readouterr().err
    code, _, err = run("reply", "--persona", "rules", "Hello")
    assert code == 2 and "give its id with --server" in err
    code, _, err = run("reply", "tale", "--server", "5", "Hello")
    assert code == 2 and "--server goes with --persona" in err


def test_a_persona_training_in_another_process_is_not_deleted_under_it(run, bot):
    tmp, db, _ = bot
    asyncio.run(someone_else_trains(db, "tale"))
    assert run("persona", "create", "rules", str(tmp / "rules.txt"), "--style", "story", "--server", "5")[0] == 0
    asyncio.run(someone_else_trains(db, "g5-rules"))
    code, _, err = run("persona", "delete", "rules", "--server", "5")
    assert code == 2 and "The persona rules is training in another process (job 2); delete it once" in err


def test_chat_without_a_server_has_no_personas(run, bot):
    _, _, ckdir = bot
    code, out, err = chat(run, ["--checkpoints", str(ckdir), "--device", "cpu"], ["/say rules Hello"])
    assert code == 0, err
    assert out == "Personas belong to a server: start the chat with `charbot chat --server ID` to talk to one.\n"


def test_no_such_database_is_one_clear_line(capsys, tmp_path):
    code = main(["persona", "list", "--server", "5", "--db", str(tmp_path / "nope.db"), "--env-file", "/nonexistent"])
    assert code == 2 and "no such database (give the bot's database with --db)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_persona_trained_from_the_command_line_replies_as_the_bot_would(run, bot):
    """Create with a tiny budget (real training), then ``charbot reply --persona`` prints exactly the text the
    bot's reply path gives for the same seed."""
    tmp, db, ckdir = bot
    code, out, err = run("persona", "create", "rules", str(tmp / "rules.txt"), "--style", "faq",
                         "--server", str(SERVER), "--minutes", "0.1", "--force", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["state"], result["version"], result["key"]) == ("done", 1, f"g{SERVER}-rules")
    version = tmp / "state" / "versions" / f"g{SERVER}-rules" / "v0001.safetensors"
    assert result["path"] == str(version) and version.is_file()
    losses = result["losses"]
    assert {"before_nats", "after_nats", "before_bits", "after_bits", "heldout_chars"} <= set(losses)
    assert losses["heldout_chars"] > 0 and losses["before_bits"] == pytest.approx(losses["before_nats"] / 0.6931, 1e-3)

    code, out, _ = run("persona", "info", "rules", "--server", str(SERVER))
    assert code == 0 and "State: ready (v1)" in out and "v1 (served)" in out and "held-out loss on its own text" in out

    prompt, seed = "When does the ferry leave?", 11
    code, out, err = run("reply", "--persona", "rules", "--server", str(SERVER), prompt, "--seed", str(seed),
                         "--length", "60", "--device", "cpu", "--precision", "fp32", "--checkpoints", str(ckdir))
    assert code == 0, err
    printed = out.removesuffix("\n")
    assert printed.startswith(f"> **{prompt}**")

    async def as_the_bot() -> str:
        async with await open_store(db) as store:
            manager = FinetuneManager(FinetuneStore(store), FinetuneSettings(state_dir=tmp / "state"),
                                      lambda corpus: ckdir / "base.safetensors")
            with Models.load([], ckdir, device="cpu", precision="fp32") as models:
                personas = PersonaService(store, manager, PersonaSettings(), models)
                await personas.register_all()
                guard = VerbatimGuard()
                await guard.sync(store)
                replies = ReplyService(models, Limits(), guard=guard)
                replies.locate = personas.locate
                request = make_request(f"g{SERVER}-rules", prompt, Limits(), length=60, seed=seed, guild=SERVER)
                return (await replies.reply(request)).text

    assert printed == asyncio.run(as_the_bot())

    # `charbot chat --server` answers /say as the bot would too.
    lines = [f"/say rules {prompt} --seed {seed} --length 60", "/say nosuch Hello", "/say"]
    code, out, err = chat(run, ["--server", str(SERVER), "--checkpoints", str(ckdir), "--device", "cpu",
                                "--precision", "fp32"], lines)
    assert code == 0, err
    said = out.split("\n")
    assert "\n".join(said[: printed.count("\n") + 1]) == printed
    assert "This server has no persona called `nosuch` (its personas: rules)." in out
    assert "Say which persona: /say NAME words (this server's personas: rules)." in out
    # Another server cannot reach it, with the words a name that does not exist gets.
    code, _, err = run("reply", "--persona", "rules", "--server", str(OTHER), prompt)
    assert code == 2 and "This server has no persona called `rules` (its personas: none yet)." in err
