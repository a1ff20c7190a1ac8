"""/finetune and /rollback end to end through the fake Discord, with the real job process."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.bench.fake_discord import EPHEMERAL, MANAGE_GUILD
from bot.discord_app.cogs.finetune import Finetune
from tests.bot.e2e_bot import BotUnderTest
from tests.helpers import contributed_texts, eventually

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

ADMIN_ONLY = "Only server admins"
ENDLESS = {"max_epochs": 100_000, "patience": 100_000, "lr": 1e-2, "corpus_eval_chars": 2000}
QUICK = {"max_epochs": 4, "lr": 1e-2, "corpus_eval_chars": 2000}


@pytest.fixture(autouse=True)
def _settings(monkeypatch):
    monkeypatch.setenv("CHARBOT_FINETUNE_STATUS_INTERVAL", "1")
    monkeypatch.setenv("CHARBOT_FINETUNE_NICE", "1")


def cog(world: BotUnderTest) -> Finetune:
    found = world.bot.get_cog("Finetune")
    assert found is not None, "the finetune cog was not loaded"
    return found


async def contribute(world: BotUnderTest, texts: list[str]) -> None:
    for text in texts:
        await world.store.add_contribution(world.guild, world.channel(), int(world.fake.member.id), "tale", text,
                                           "modal")


def channel_posts(world: BotUnderTest) -> list[str]:
    return [m["content"] for m in world.fake.channel_messages.get(str(world.channel()), {}).values()]


async def tale(world: BotUnderTest) -> str:
    inter = await world.run("tale", {"prompt": "The king", "temperature": 0, "length": 80})
    return world.final(inter)


async def test_only_admins_may_finetune_or_roll_back(world: BotUnderTest) -> None:
    for name in ("finetune", "rollback"):
        assert world.fake._find_command(name)["default_member_permissions"] == str(MANAGE_GUILD)
    await contribute(world, contributed_texts())
    for command, options in (("finetune start", {"corpus": "tale"}), ("finetune status", {}),
                             ("finetune cancel", {"corpus": "tale"}), ("rollback", {"corpus": "tale"})):
        refused = await world.run(command, options)
        assert ADMIN_ONLY in world.private_answer(refused), command
    assert await cog(world).manager.store.recent_jobs() == []


async def test_too_little_text_is_refused_with_the_amount_needed(world: BotUnderTest) -> None:
    await contribute(world, ["A fox once met a crow on a fence, and they talked about cheese."])
    refused = await world.run("finetune start", {"corpus": "tale"}, user=world.fake.admin)
    answer = world.private_answer(refused)
    assert "not enough text for tale" in answer and "1,9" in answer and "more" in answer
    status = await world.run("finetune status", user=world.fake.admin)
    assert "No fine-tune is running or queued. None has run yet" in world.private_answer(status)


async def test_a_job_runs_beside_replies_then_serves_its_version_and_rollback_restores_the_old_replies(
    world: BotUnderTest,
) -> None:
    ft = cog(world)
    await contribute(world, contributed_texts())
    base_reply = await tale(world)

    # A job that would run for minutes: replies still come while it trains, from the unchanged model.
    ft.manager.settings = replace(ft.manager.settings, config=ENDLESS)
    started = await world.run("finetune start", {"corpus": "tale", "minutes": 5}, user=world.fake.admin)
    assert "Started fine-tuning **tale** (job 1)" in world.private_answer(started)
    job = ft.manager.jobs["tale"]
    await eventually(lambda: job.progress is not None, timeout=120, what="training to start")
    assert await tale(world) == base_reply
    assert not job.task.done(), "the job should still be running while the reply was written"
    status = await world.run("finetune status", user=world.fake.admin)
    assert "Fine-tuning tale (job 1, from base" in world.private_answer(status)
    await eventually(lambda: any("step" in p for p in channel_posts(world)), timeout=60,
                     what="the status message to show training progress")
    cancelled = await world.run("finetune cancel", {"corpus": "tale"}, user=world.fake.admin)
    assert "Stopping the fine-tune of **tale** (job 1)" in world.private_answer(cancelled)
    await eventually(lambda: any("was cancelled" in p for p in channel_posts(world)), timeout=60,
                     what="the cancellation to be posted")
    assert any(p == "Fine-tuning tale (job 1): cancelled." for p in channel_posts(world))
    assert await tale(world) == base_reply

    # A short job: its result is posted in the channel and served at once, without a restart.
    ft.manager.settings = replace(ft.manager.settings, config=QUICK)
    await world.run("finetune start", {"corpus": "tale", "minutes": 2}, user=world.fake.admin)
    report = await eventually(lambda: next((p for p in channel_posts(world) if "now serving v1" in p), None),
                              timeout=120, what="the fine-tune result")
    assert f"<@{world.fake.admin.id}> Fine-tune of tale finished: now serving v1." in report
    assert "New text (held-out contributions, " in report and "Old style (tale held-out, " in report
    assert "nats/char" in report and "bits/char" in report  # both figures, before and after, in both units
    assert "75% of each batch replayed from the tale training text" in report
    tuned_reply = await tale(world)
    assert tuned_reply != base_reply
    model = world.private_answer(await world.run("model"))
    assert "**tale** versions: serving **v1** (fine-tuned from base" in model
    assert "; new text (" in model and ", tale text (2,001 chars) " in model and "bits/char" in model

    # force: the admin's word that the result is served whatever the guard says
    forced = await world.run("finetune start", {"corpus": "tale", "minutes": 2, "force": True}, user=world.fake.admin)
    assert "(forced: served whatever the checks say)" in world.private_answer(forced)
    assert ft.manager.jobs["tale"].force
    await eventually(lambda: any("now serving v2" in p for p in channel_posts(world)), timeout=120,
                     what="the forced fine-tune result")
    await world.run("rollback", {"corpus": "tale"}, user=world.fake.admin)

    rolled = await world.run("rollback", {"corpus": "tale"}, user=world.fake.admin)
    assert "**tale** now serves **base** (was v1)" in world.final(rolled)
    assert rolled.original["flags"] & EPHEMERAL
    assert await tale(world) == base_reply
    rolled = await world.run("rollback", {"corpus": "tale", "version": 1}, user=world.fake.admin)
    assert await tale(world) == tuned_reply
    refused = await world.run("rollback", {"corpus": "tale", "version": 7}, user=world.fake.admin)
    assert "I can't roll back: tale v7 does not exist; available: base (0), v1" in world.final(refused)
    assert refused.original["flags"] & EPHEMERAL


async def test_stopping_the_bot_mid_job_cancels_it_and_changes_nothing(tmp_path) -> None:
    from bot.store import open_store
    from bot.store.jobs import FinetuneStore
    from tests.bot.e2e_bot import bot_on_fake

    async with bot_on_fake(tmp_path) as world:
        ft = cog(world)
        await contribute(world, contributed_texts())
        ft.manager.settings = replace(ft.manager.settings, config=ENDLESS)
        await world.run("finetune start", {"corpus": "tale", "minutes": 5}, user=world.fake.admin)
        job = ft.manager.jobs["tale"]
        await eventually(lambda: job.progress is not None, timeout=120, what="training to start")
        child = job.process.proc
    assert child.returncode is not None, "the training process outlived the bot"
    async with await open_store(tmp_path / "charbot.db") as store:
        row = await FinetuneStore(store).job(job.id)
        assert row.state == "cancelled" and row.error == "the bot shut down"
        assert await FinetuneStore(store).served("tale") is None
        assert len(await store.contributions(corpus="tale")) == 8


async def test_bad_finetune_settings_switch_it_off_with_the_reason_and_replies_go_on(tmp_path, monkeypatch) -> None:
    from tests.bot.e2e_bot import bot_on_fake

    monkeypatch.setenv("CHARBOT_KEEP_VERSIONS", "0")
    async with bot_on_fake(tmp_path) as world:
        world.expect_errors = True  # the bad setting is logged at start
        refused = await world.run("finetune start", {"corpus": "tale"}, user=world.fake.admin)
        assert "fine-tuning is switched off on this bot: CHARBOT_KEEP_VERSIONS must be at least 1" in \
            world.private_answer(refused)
        assert await tale(world)


async def test_a_version_made_by_the_command_line_beside_the_bot_is_served_without_restart(world: BotUnderTest) -> None:
    from bot.jobs.manager import FinetuneManager

    ft = cog(world)
    # `charbot finetune tale --install FILE` in another process: same database, no engines to swap.
    cli = FinetuneManager(ft.manager.store, ft.manager.settings, world.bot._base)
    served = await cli.import_checkpoint("tale", world.checkpoints["novel"], "cli:op")
    assert served.version == 1 and world.bot.models.info["tale"].path != str(served.path)
    assert await ft.manager.sync_served() == ["tale"]
    assert world.bot.models.info["tale"].path == str(served.path)
    assert await ft.manager.sync_served() == []
    model = await world.run("model")
    assert "serving **v1** (imported from novel.safetensors by op (command line)" in world.private_answer(model)


async def test_forget_after_a_fine_tune_names_the_version_and_an_admin_takes_the_texts_out(world: BotUnderTest) -> None:
    ft = cog(world)
    ft.manager.settings = replace(ft.manager.settings, config=QUICK)
    await contribute(world, contributed_texts())  # all the member's
    await world.run("finetune start", {"corpus": "tale", "minutes": 2}, user=world.fake.admin)
    await eventually(lambda: any("now serving v1" in p for p in channel_posts(world)), timeout=120,
                     what="the fine-tune result")

    forgot = world.private_answer(await world.run("forget"))
    assert forgot.startswith("Deleted 8 contributions of yours from this server. But the tale model, version 1 "
                             "(served now), learned from 8 of your texts;")
    assert "An admin has been told (`/finetune status`)" in forgot
    status = world.private_answer(await world.run("finetune status", user=world.fake.admin))
    assert "Forgotten texts: tale v1 (served) learned from 8 texts that 1 member deleted with /forget" in status

    # Nothing else remains to learn from, so taking them out rolls back to the version before them.
    undone = await world.run("finetune start", {"corpus": "tale", "without_forgotten": True}, user=world.fake.admin)
    assert "so it now serves **base**, the newest version that never saw them" in world.private_answer(undone)
    assert "Forgotten" not in world.private_answer(await world.run("finetune status", user=world.fake.admin))
    again = world.private_answer(await world.run("forget"))
    assert again == "You have no contributions stored in this server; nothing to delete."
