"""A server's own persona end to end through the fake Discord, with the real training process: /persona
create (attachments downloaded from the fake CDN), the job reported in the channel, /say, the channel
persona, /persona retrain, /persona delete; and the attacks: another server, a forged key, a DM, bad
files, quotas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.bench.fake_discord import FakeInteraction, FakeUser
from bot.core.answers import SERVERS_ONLY
from bot.discord_app.choices import voice_choices
from bot.store.conversation import ConversationStore
from bot.store.jobs import FinetuneStore
from bot.store.personas import PersonaStore
from corpora.voices import is_voice, persona_key
from tests.bot.e2e_bot import BotUnderTest, bot_on_fake
from tests.helpers import contributed_texts, eventually, fake_finetune

pytestmark = pytest.mark.slow  # starts the bot and training processes: `make test-fast` skips it

ADMIN_ONLY = "Only server admins"
QUICK = {"max_epochs": 4, "lr": 1e-2, "corpus_eval_chars": 2000}  # seconds of training on the tiny models
ENDLESS = {"max_epochs": 100_000, "patience": 100_000, "lr": 1e-2, "corpus_eval_chars": 2000}


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARBOT_FINETUNE_STATUS_INTERVAL", "1")
    monkeypatch.setenv("CHARBOT_FINETUNE_NICE", "1")


@contextlib.asynccontextmanager
async def two_servers(tmp_path: Path, config: dict[str, Any]) -> AsyncIterator[tuple[BotUnderTest, str]]:
    """The bot on the fake with a second server ("B"), its jobs trained with ``config``."""
    other: list[str] = []

    def add_server(fake: Any) -> dict[str, str]:
        other.append(fake.add_guild("Server B"))
        return {}

    async with bot_on_fake(tmp_path, env=add_server) as world:
        assert world.bot.finetune is not None and world.bot.personas is not None
        world.bot.finetune.settings = replace(world.bot.finetune.settings, config=config)
        yield world, other[0]


def text_file(name: str = "rules.md", seed: int = 0) -> tuple[str, bytes, str]:
    """About 3,000 characters of learnable text, as an uploaded file."""
    return name, "\n\n".join(contributed_texts(seed=seed)).encode(), "text/markdown"


def posts(world: BotUnderTest, guild: str | None = None) -> list[str]:
    channel = world.fake.guild_channels[guild or world.fake.guild_id]["general"]
    return [m["content"] for m in world.fake.channel_messages.get(channel, {}).values()]


async def create(world: BotUnderTest, name: str, user: FakeUser | None = None, guild: str | None = None,
                 style: str = "faq", **files: tuple[str, bytes, str | None]) -> FakeInteraction:
    return await world.run("persona create", {"name": name, "style": style}, user=user or world.fake.admin,
                           files=files or {"file": text_file()}, guild=guild)


async def nothing_stored(world: BotUnderTest) -> None:
    assert await PersonaStore(world.store).every() == []
    assert await world.store.contributions() == []
    assert await FinetuneStore(world.store).recent_jobs() == []


async def test_a_persona_trains_answers_its_server_only_and_delete_removes_everything(tmp_path: Path) -> None:
    async with two_servers(tmp_path, QUICK) as (world, server_b):
        fake, key = world.fake, persona_key(world.guild, "rules")
        made = await create(world, "Rules")
        answer = world.private_answer(made)
        assert answer.startswith("Persona **rules** (faq) created from 1 file(s), ") and "(job 1, up to" in answer
        assert [d.status for d in fake.cdn.downloads] == [200]  # the bytes came from the CDN URL
        early = await world.run("say", {"persona": "rules", "prompt": "How do I join?"})
        assert "still training" in world.private_answer(early)

        # The job is reported in the channel like a /finetune job, by the persona's name, never its key.
        report = await eventually(lambda: next((p for p in posts(world) if "finished: now serving v1" in p), None),
                                  timeout=180, what="the persona's training to finish")
        assert report.startswith(f"<@{fake.admin.id}> Fine-tune of rules finished: now serving v1.")
        assert "better than the general base on its own held-out text" in report
        assert [p for p in posts(world) if p.startswith("Fine-tuning rules (job 1)")] == [
            "Fine-tuning rules (job 1): done."]  # one status message, edited to the end
        assert sum("Fine-tune of rules finished" in p for p in posts(world)) == 1
        assert "Old style: not measured (a server's persona keeps no other style" in report
        assert not any(str(world.guild) in p for p in posts(world)), posts(world)  # its name, never its key
        listed = world.private_answer(await world.run("persona list"))
        assert "- **rules** (faq, " in listed and "ready (v1)" in listed
        info = world.private_answer(await world.run("persona info", {"name": "rules"}))
        assert "v1 (served)" in info and "held-out loss on its own text" in info

        # /say: written like a corpus's reply (streamed, buttons), grounded in its own text and quoting it.
        words = " ".join(contributed_texts()[0].split()[:6])
        said = await world.run("say", {"persona": "rules", "prompt": words, "length": 120, "temperature": 0})
        reply = world.public_answer(said)
        assert reply.startswith(f"> **{words}**\n") and "\n\n> *From rules:* \u201c" in reply  # as /faq writes
        assert [c["custom_id"] for row in said.original["components"] for c in row["components"]] == [
            "charbot:continue", "charbot:another"]
        assert key in world.bot.models.engines and key in world.bot.models.passages
        await eventually(lambda: ConversationStore(world.store).reply(int(said.original["id"])), what="its record")
        before = len(fake.bot_messages())
        await world.press(said.original, "charbot:continue")  # its buttons go on in the same persona
        await fake.wait_until(lambda: len(fake.bot_messages()) > before, what="the persona's continuation")
        follow = await fake.wait_settled(fake.bot_messages()[-1])
        kept = await eventually(lambda: ConversationStore(world.store).reply(int(follow["id"])), what="its record")
        assert kept.corpus == key and kept.made_by == "button"
        assert [c.value for c in await voice_choices(world.bot, world.guild, "ru")] == ["rules"]
        assert await voice_choices(world.bot, int(server_b), "") == []

        # Server B cannot reach it: by its name, by its key, or by any other route; a DM neither.
        unknown = world.private_answer(await world.run("say", {"persona": "nosuch", "prompt": "hi"}, guild=server_b))
        as_b = world.private_answer(await world.run("say", {"persona": "rules", "prompt": "hi"}, guild=server_b))
        assert as_b == unknown.replace("nosuch", "rules") and "has no persona called" in as_b
        forged = world.private_answer(await world.run("say", {"persona": key, "prompt": "hi"}, guild=server_b))
        assert forged == unknown.replace("nosuch", key)
        info_b = world.private_answer(await world.run("persona info", {"name": "rules"}, guild=server_b))
        assert "has no persona called" in info_b
        assert "no personas yet" in world.private_answer(await world.run("persona list", guild=server_b))
        channel_b = await world.run("channel", {"persona": "rules"}, user=fake.admin, guild=server_b)
        assert "I don't serve `rules` here; I serve tale, faq, novel." in world.private_answer(channel_b)
        dm = await world.run("say", {"persona": "rules", "prompt": "hi"}, dm=True)
        assert world.private_answer(dm) == SERVERS_ONLY

        # The channel persona: mentions in this channel are answered by it.
        here = await world.run("channel", {"persona": "rules"}, user=fake.admin)
        assert "In this channel I speak as **rules**" in world.public_answer(here)
        mentioned = await world.ask(words)
        assert "> *From rules:* \u201c" in mentioned["content"]
        record = await eventually(lambda: ConversationStore(world.store).reply(int(mentioned["id"])),
                                  what="the reply's record")
        assert record.corpus == key

        # Delete reaches its text, its versions (rows and files), its index and the channel setting.
        versions = world.bot.finetune.versions_dir(key).root
        assert versions.is_dir()
        refused = await world.run("persona delete", {"name": "rules"})
        assert ADMIN_ONLY in world.private_answer(refused)
        gone = world.private_answer(await world.run("persona delete", {"name": "rules"}, user=fake.admin))
        assert gone.startswith("Deleted the persona **rules**")
        assert await PersonaStore(world.store).get(world.guild, "rules") is None
        assert await world.store.contributions(corpus=key) == []
        assert await FinetuneStore(world.store).versions(key, include_pruned=True) == []
        assert not versions.exists()
        assert key not in world.bot.models.engines and key not in world.bot.models.passages and not is_voice(key)
        after = world.private_answer(await world.run("say", {"persona": "rules", "prompt": words}))
        assert after == unknown.replace("nosuch", "rules")
        spoken = await world.ask("Once upon a time")
        assert "From rules" not in spoken["content"]  # the channel went back to the default persona


async def test_a_refused_persona_is_retrained_by_an_admin_of_its_own_server(tmp_path: Path) -> None:
    async with two_servers(tmp_path, QUICK) as (world, server_b):
        fake, gate = world.fake, tmp_path / "gate"
        # A stand-in training child held at the gate, whose result is never better than the base: refused.
        world.bot.finetune.settings = replace(world.bot.finetune.settings, command=fake_finetune(gate, 2.5))
        await create(world, "rules")
        busy = world.private_answer(await world.run("persona retrain", {"name": "rules"}, user=fake.admin))
        assert busy.startswith("The persona rules is training now (job 1)")
        gate.touch()
        refused = await eventually(lambda: next((p for p in posts(world) if "was refused" in p), None), timeout=60,
                                   what="the refused training to be reported")
        assert refused.startswith(f"<@{fake.admin.id}> Fine-tune of rules (job 1) was refused")
        assert "run it again with force (`/persona retrain rules force:True`)" in refused
        untrained = world.private_answer(await world.run("say", {"persona": "rules", "prompt": "How do I join?"}))
        assert "has no trained model" in untrained and "`/persona retrain rules`" in untrained
        info = world.private_answer(await world.run("persona info", {"name": "rules"}))
        assert "an admin can train it again with `/persona retrain rules`" in info

        # Admins only, and only in its own server: server B's admin gets what an unknown name gets.
        assert ADMIN_ONLY in world.private_answer(await world.run("persona retrain", {"name": "rules"}))
        as_b = world.private_answer(await world.run("persona retrain", {"name": "rules", "force": True},
                                                    user=fake.admin, guild=server_b))
        assert as_b == "This server has no persona called `rules` (its personas: none yet)."

        again = world.private_answer(await world.run("persona retrain", {"name": "rules", "force": True},
                                                     user=fake.admin))
        assert again.startswith("Training the persona **rules** again from the general base (job 2, up to ")
        report = await eventually(lambda: next((p for p in posts(world) if "finished: now serving v1" in p), None),
                                  timeout=60, what="the forced training to be reported")
        assert report.startswith(f"<@{fake.admin.id}> Fine-tune of rules finished") and "forced" in report
        assert not any(str(world.guild) in p for p in posts(world)), posts(world)  # its name, never its key
        words = " ".join(contributed_texts()[0].split()[:6])
        said = world.public_answer(await world.run("say", {"persona": "rules", "prompt": words}))
        assert said.startswith(f"> **{words}**\n") and "*From rules:*" in said
        assert "ready (v1)" in world.private_answer(await world.run("persona list"))


async def test_bad_files_get_one_clear_answer_each_and_nothing_is_stored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHARBOT_PERSONA_MAX_FILE_BYTES", "50000")
    monkeypatch.setenv("CHARBOT_PERSONA_MAX_FILES", "2")
    async with two_servers(tmp_path, ENDLESS) as (world, _):
        cases = {
            "looks like a binary file": ("data.txt", bytes(range(256)) * 20, "text/plain"),
            "is not UTF-8 text": ("latin.txt", "caf\u00e9 au lait. ".encode("latin-1") * 300, "text/plain"),
            "is empty": ("empty.md", b"", "text/markdown"),
            "is not a .txt or .md file": ("rules.pdf", b"%PDF-1.4 " * 400, "application/pdf"),
            "0.1 MB; the limit is 0.05 MB per file": ("big.txt", b"All work and no play. " * 3000, "text/plain"),
            "training a persona needs at least 2,000": ("short.txt", b"Just one short line of text.", None),
        }
        for expected, file in cases.items():
            answer = world.private_answer(await create(world, "rules", file=file))
            assert expected in answer, (file[0], answer)
            assert file[0] in answer or expected.startswith("training")
        big = next(a for a in world.fake.cdn.attachments.values() if a.filename == "big.txt")
        assert big.id not in {d.attachment_id for d in world.fake.cdn.downloads}, "a too-big file was downloaded"
        same = world.private_answer(await create(world, "rules", file=text_file("a.md"), file2=text_file("a.md")))
        assert "Two files have the same name" in same
        bad_name = world.private_answer(await create(world, "tale"))
        assert "taken by charbot itself" in bad_name

        # Three files where the command takes two: only a stale or crafted client can send that.
        too_many = await send_raw_create(world, [text_file(f"{i}.md", seed=i) for i in range(3)])
        assert world.private_answer(too_many) == "That is more files than this command takes: at most 2."
        await nothing_stored(world)


async def send_raw_create(world: BotUnderTest, files: list[tuple[str, bytes, str]]) -> FakeInteraction:
    """/persona create with exactly these files, however many the command declares (a crafted request)."""
    fake = world.fake
    registered = fake._find_command("persona")
    attachments = [fake.cdn.upload(fake.channels["general"], *file) for file in files]
    names = ["file", *(f"file{i}" for i in range(2, len(files) + 1))]
    options = [{"name": "name", "type": 3, "value": "rules"}, {"name": "style", "type": 3, "value": "faq"},
               *({"name": n, "type": 11, "value": a["id"]} for n, a in zip(names, attachments, strict=True))]
    data = {"id": registered["id"], "name": "persona", "guild_id": registered.get("guild_id"),
            "options": [{"name": "create", "type": 1, "options": options}],
            "resolved": {"attachments": {a["id"]: a for a in attachments}}}
    inter = await fake.command(data, user=fake.admin)
    future = world._finished.setdefault(int(inter.id), asyncio.get_running_loop().create_future())
    await asyncio.wait_for(asyncio.shield(future), 30)
    return inter


async def test_quotas_admins_and_the_queue(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHARBOT_PERSONA_MAX_PER_SERVER", "1")
    async with two_servers(tmp_path, ENDLESS) as (world, server_b):
        fake = world.fake
        assert ADMIN_ONLY in world.private_answer(await create(world, "first", user=fake.member))
        await nothing_stored(world)
        assert "(job 1, up to" in world.private_answer(await create(world, "first"))
        over = world.private_answer(await create(world, "second", style="story"))
        assert over == ("This server has 1 personas, the most it may have (1); delete one with /persona delete "
                        "first.")
        taken = world.private_answer(await create(world, "first"))
        assert "already has a persona called `first`" in taken

        # Another server's quota is its own; one job runs at a time on the machine, so its training waits.
        queued = world.private_answer(await create(world, "first", guild=server_b))
        assert "Its training is queued (job" in queued and "0 ahead of it" in queued
        listed = world.private_answer(await world.run("persona list", guild=server_b))
        assert "- **first** (faq, " in listed and "queued" in listed

        # Deleting the running one frees the machine: the queue starts B's job, reported in B's channel.
        await world.run("persona delete", {"name": "first"}, user=fake.admin)
        status = await eventually(lambda: next((p for p in posts(world, server_b) if p.startswith("Fine-tuning first")),
                                               None), timeout=60, what="B's queued job to start and be reported")
        assert "Fine-tuning first (job " in status
        assert persona_key(int(server_b), "first") in world.bot.finetune.jobs
        assert await PersonaStore(world.store).of_guild(world.guild) == []


async def test_help_shows_admins_the_persona_bounds(world: BotUnderTest) -> None:
    member = world.private_answer(await world.run("help"))
    assert "/say persona prompt" in member and "/persona list" in member
    assert "Personas on this bot" not in member
    admin = world.private_answer(await world.run("help", user=world.fake.admin))
    assert "Personas on this bot (admins): at most 5 personas per server" in admin
    assert "5 files per persona" in admin
