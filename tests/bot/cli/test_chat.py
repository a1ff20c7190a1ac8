"""``charbot reply`` and ``charbot chat``: the bot's replies and commands in a terminal, with tiny checkpoints."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest

from bot.cli import main
from bot.cli.repl import LOCAL_GUILD, LOCAL_USER, parse_generation
from bot.core.refusals import Refusal
from bot.core.replies import hard_cap
from bot.discord_limits import MESSAGE_CHARS
from bot.store import open_store
from model.device import pick_device


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No .env or settings from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for name in ("CHARBOT_CHECKPOINT_DIR", "CHARBOT_DB", "CHARBOT_DEVICE", "CHARBOT_CORPORA", "CHARBOT_MAX_PROMPT"):
        monkeypatch.delenv(name, raising=False)


def reply(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["reply", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def chat(capsys, monkeypatch, lines: list[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(["chat", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reply_prints_the_message_the_bot_would_post(capsys, tiny_checkpoint_dir):
    ck = str(tiny_checkpoint_dir)
    code, out, err = reply(capsys, "tale", "Once upon a time there was a king", "--seed", "3", "--checkpoints", ck)
    assert code == 0 and err == ""
    message = out.removesuffix("\n")
    assert message.startswith("**Once upon a time there was a king**")
    assert len(message) <= MESSAGE_CHARS
    assert reply(capsys, "tale", "Once upon a time there was a king", "--seed", "3", "--checkpoints", ck)[1] == out
    other = reply(capsys, "tale", "Once upon a time there was a king", "--seed", "4", "--checkpoints", ck)[1]
    assert other != out


def test_reply_length_is_a_target_with_a_hard_cap(capsys, tiny_checkpoint_dir):
    code, out, _ = reply(
        capsys,
        "novel",
        "Anna",
        "--length",
        "30",
        "--seed",
        "1",
        "--temperature",
        "1.0",
        "--checkpoints",
        str(tiny_checkpoint_dir),
    )
    assert code == 0
    body = out.removesuffix("\n").removeprefix("**Anna**").removesuffix("\u2026")
    assert 0 < len(body.replace("\\", "")) <= hard_cap(30)  # the length is a target: to a sentence end, capped


def test_reply_reads_the_checkpoint_folder_from_the_env_file(capsys, tiny_checkpoint_dir, tmp_path):
    (tmp_path / ".env").write_text(f"CHARBOT_CHECKPOINT_DIR={tiny_checkpoint_dir}\n")
    code, out, _ = reply(capsys, "faq", "Do I need a mask?", "--seed", "1")
    assert code == 0 and out.startswith("> **Do I need a mask?**\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["faq", ""], "Ask me a question"),
        (["tale", "x", "--temperature", "5"], "Temperature must be a number from 0 to 2"),
        (["tale", "x", "--length", "0"], "Length must be a whole number"),
    ],
)
def test_reply_refusals_are_one_line(capsys, tiny_checkpoint_dir, args, message):
    code, out, err = reply(capsys, *args, "--checkpoints", str(tiny_checkpoint_dir))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("charbot reply: error: ")


def test_reply_without_checkpoints_says_how_to_get_them(capsys, tmp_path):
    code, _, err = reply(capsys, "tale", "x", "--checkpoints", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1
    assert "no checkpoint for tale" in err and "CHARBOT_CHECKPOINT_DIR" in err and "charbot train" in err


def test_chat_replies_exactly_like_reply(capsys, monkeypatch, tiny_checkpoint_dir, tmp_path):
    ck = str(tiny_checkpoint_dir)
    expected = reply(capsys, "tale", "Once upon a time", "--seed", "7", "--length", "80", "--checkpoints", ck)[1]
    code, out, err = chat(
        capsys,
        monkeypatch,
        ["/tale Once upon a time --seed 7 --length 80"],
        "--checkpoints",
        ck,
        "--db",
        str(tmp_path / "chat.db"),
    )
    assert code == 0 and err == ""
    assert out == expected


def test_chat_uses_the_saved_temperature_unless_the_command_gives_one(
    capsys, monkeypatch, tiny_checkpoint_dir, tmp_path
):
    ck, db = str(tiny_checkpoint_dir), str(tmp_path / "chat.db")
    at_zero = reply(capsys, "novel", "Anna", "--seed", "2", "--temperature", "0", "--checkpoints", ck)[1]
    at_two = reply(capsys, "novel", "Anna", "--seed", "2", "--temperature", "2", "--checkpoints", ck)[1]
    assert at_zero != at_two
    _, out, _ = chat(
        capsys,
        monkeypatch,
        ["/temp 0", "/novel Anna --seed 2", "/novel Anna --seed 2 --temperature 2"],
        "--checkpoints",
        ck,
        "--db",
        db,
    )
    assert out == "Your default temperature in this server is now 0.\n" + at_zero + at_two


def test_chat_session_commands_and_their_answers(capsys, monkeypatch, tiny_checkpoint_dir, tmp_path):
    db = tmp_path / "chat.db"
    lines = [
        "/help",
        "/temp",
        "/temp 0.5",
        "/temp 3",
        "/contribute faq Masks are required in all campus buildings.",
        "/contribute poems roses are red",
        "/contribute",
        "/optout",
        "/forget",
        "/listen tale",
        "/dance",
        "hello there",
        "",
        "/quit",
        "/temp 1.5",
    ]
    code, out, err = chat(capsys, monkeypatch, lines, "--checkpoints", str(tiny_checkpoint_dir), "--db", str(db))
    assert code == 0 and err == ""
    assert "/tale prompt --temperature T" in out and "/quit" in out
    for expected in [
        "You have no default temperature in this server",
        "Your default temperature in this server is now 0.5.",
        "Temperature must be a number from 0 to 2",
        "Thank you! Saved your text (43 characters) for **faq** as contribution #1.",
        "There is no corpus called `poems`",
        "Say which corpus and the text: /contribute tale your text here",
        "Done: I won't store your messages in listening channels in this server.",
        "Deleted 1 contribution of yours from this server.",
        "/listen works in Discord channels only.",
        "Unknown command /dance; try /help.",
        "Commands start with a slash (or talk to me: @bot words); try /help.",
    ]:
        assert expected in out
    assert "1.5" not in out  # nothing after /quit runs

    async def saved() -> tuple:
        async with await open_store(db) as s:
            return (
                await s.get_temperature(LOCAL_GUILD, LOCAL_USER),
                await s.contributions(),
                await s.is_opted_out(LOCAL_GUILD, LOCAL_USER),
            )

    temperature, contributions, opted_out = asyncio.run(saved())
    assert temperature == 0.5 and contributions == [] and opted_out


def test_chat_contributions_are_stored_as_cli(capsys, monkeypatch, tiny_checkpoint_dir, tmp_path):
    db = tmp_path / "chat.db"
    chat(
        capsys,
        monkeypatch,
        ["/contribute novel Levin walked through the field."],
        "--checkpoints",
        str(tiny_checkpoint_dir),
        "--db",
        str(db),
    )

    async def saved():
        async with await open_store(db) as s:
            return await s.contributions()

    (c,) = asyncio.run(saved())
    assert (c.corpus, c.text, c.source, c.guild_id, c.user_id) == (
        "novel",
        "Levin walked through the field.",
        "cli",
        LOCAL_GUILD,
        LOCAL_USER,
    )


def test_chat_forget_takes_the_texts_out_of_the_kept_versions_learned_texts(capsys, monkeypatch, tiny_checkpoint_dir,
                                                                            tmp_path):
    monkeypatch.delenv("CHARBOT_STATE_DIR", raising=False)  # the bot's versions: charbot-state/ beside its database
    ck, db = str(tiny_checkpoint_dir), tmp_path / "chat.db"
    mine = "Levin walked through the field at dawn."
    _, out, _ = chat(capsys, monkeypatch, [f"/contribute tale {mine}"], "--checkpoints", ck, "--db", str(db))
    assert "as contribution #1." in out
    # A kept version that learned it beside someone else's text, as a fine-tune writes them (bot.jobs.manager).
    learned = tmp_path / "charbot-state" / "versions" / "tale" / "v0001.learned.json"
    learned.parent.mkdir(parents=True)
    learned.write_text(json.dumps([{"id": 1, "text": mine}, {"id": 2, "text": "Someone else's words."}]))

    code, out, err = chat(capsys, monkeypatch, ["/forget"], "--checkpoints", ck, "--db", str(db))
    assert code == 0 and out == "Deleted 1 contribution of yours from this server.\n", err
    assert json.loads(learned.read_text()) == [{"id": 2, "text": "Someone else's words."}]


def test_chat_model_lists_every_corpus(capsys, monkeypatch, tiny_checkpoint_dir, tmp_path):
    _, out, _ = chat(
        capsys, monkeypatch, ["/model"], "--checkpoints", str(tiny_checkpoint_dir), "--db", str(tmp_path / "c.db")
    )
    for name in ("tale", "faq", "novel"):
        assert f"**{name}**" in out
    assert "bits/char" in out and f"on {pick_device('auto')}" in out  # the GPU where there is one


def test_chat_with_an_unusable_database_is_one_line(capsys, monkeypatch, tiny_checkpoint_dir, tmp_path):
    code, _, err = chat(
        capsys,
        monkeypatch,
        ["/temp"],
        "--checkpoints",
        str(tiny_checkpoint_dir),
        "--db",
        str(tmp_path / "missing" / "c.db"),
    )
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


def test_generation_options_are_split_off_the_prompt():
    opts = parse_generation("Once upon a time --temperature 0.5 --length=200 --seed 9")
    assert (opts.prompt, opts.temperature, opts.length, opts.seed) == ("Once upon a time", 0.5, 200, 9)
    assert parse_generation("the king's -- daughter").prompt == "the king's -- daughter"
    with pytest.raises(Refusal, match="--length must be a whole number"):
        parse_generation("x --length lots")
    with pytest.raises(Refusal, match="Temperature must be a number from 0 to 2"):
        parse_generation("x --temperature warm")


def test_chat_talks_as_in_a_channel_mentions_replies_and_the_buttons(capsys, monkeypatch, tiny_checkpoint_dir,
                                                                     tmp_path):
    lines = [
        "/another",  # nothing to press yet
        "@bot",  # a mention with no words
        "@bot Once upon a time there was a fox --seed 1",
        "> and then the fox ran --seed 2",
        "/continue --seed 3",
        "/another --seed 4",
        "/channel novel",
        "@bot Anna looked at him --seed 5",
    ]
    code, out, err = chat(capsys, monkeypatch, lines, "--checkpoints", str(tiny_checkpoint_dir),
                          "--db", str(tmp_path / "chat.db"))
    assert code == 0 and err == ""
    said = out.split("\n")
    assert said[0].startswith("These buttons have expired") and said[1].startswith("Mention me with some words")
    assert said[2].startswith("**Once upon a time there was a fox**")
    assert out.count("**and then the fox ran**") == 1
    assert "Done. In this channel I speak as **novel**" in out and "**Anna looked at him**" in out


async def test_a_reply_in_chat_is_primed_with_the_chain(tiny_checkpoint_dir, tmp_path):
    from bot.cli.repl import ChatSession
    from bot.config import Limits
    from bot.core.engines import Models
    from bot.core.replies import ReplyService

    limits = Limits(cooldown_s=0.0)
    with Models.load(["tale", "faq", "novel"], tiny_checkpoint_dir, "cpu") as models:
        async with await open_store(tmp_path / "c.db") as store:
            session = ChatSession(store, ReplyService(models, limits), limits)
            await session.handle("@bot A fox --seed 1")
            seen = []
            made = session.service.reply

            async def spy(request):
                seen.append(request)
                return await made(request)

            session.service.reply = spy
            await session.handle("> and a crow --seed 2")
            assert seen[0].trigger == "reply" and seen[0].context.startswith("A fox")
            assert seen[0].prompt == "and a crow"
