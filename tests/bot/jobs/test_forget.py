"""/forget after a member's texts were trained into a version: the answer names the version, the
admins see it in /finetune status, and the deleted texts are nowhere in clear any more."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core import answers
from bot.core.engines import learned_texts
from bot.jobs.manager import FinetuneRefused, RunningJob, Served
from bot.jobs.messages import status_text
from bot.store.jobs import DONE, digest
from tests.bot.jobs.test_manager import ADMIN, CHANNEL, GUILD, env  # noqa: F401 (the bench's fixture)
from tests.helpers import contributed_texts

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

MEMBER = 77


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` (the database, its WAL, the state folder) holding one of ``needles``."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.name}: {n[:20]!r}" for n in needles if n in data]
    return found


async def test_forget_names_the_versions_that_learned_from_the_texts_and_tells_the_admins(env):  # noqa: F811
    manager = await env.open()
    mine = contributed_texts(seed=3)
    for text in mine:
        await env.store.add_contribution(GUILD, CHANNEL, MEMBER, "tale", text, "modal")
    await env.contribute(contributed_texts(n=2, seed=4))  # the admin's own two, which stay
    outcome = await manager.wait(await manager.start("tale", "discord:30", minutes=2))
    assert outcome.state == DONE and outcome.version == 1, outcome.error
    provenance = await env.fstore.provenance("tale", 1)
    assert [p.user_id for p in provenance].count(MEMBER) == 8 and len(provenance) == 10
    assert {p.digest for p in provenance} >= {digest(t) for t in mine}
    assert "Forgotten" not in await status_text(manager)

    learned = env.tmp / "state" / "versions" / "tale" / "v0001.safetensors"
    assert len(learned_texts(learned)) == 10
    answer = (await answers.forget(env.store, GUILD, MEMBER, manager, env.models)).text  # as the bot's /forget
    assert len(learned_texts(learned)) == 2  # the texts v1 quotes lost them too
    assert answer.startswith("Deleted 8 contributions of yours from this server.")
    assert "the tale model, version 1 (served now), learned from 8 of your texts" in answer
    assert "An admin has been told" in answer
    status = await status_text(manager)
    assert ("Forgotten texts: tale v1 (served) learned from 8 texts that 1 member deleted with /forget; the newest "
            "version that never saw them is the base checkpoint (`/rollback tale 0`).") in status
    again = (await answers.forget(env.store, GUILD, MEMBER)).text  # still honest the second time
    assert "You have no contributions stored" in again and "version 1 (served now), learned from 8" in again

    # Nothing in the database or the state folder holds the forgotten texts any more.
    needles = [t.encode() for t in mine] + [t[:48].encode() for t in mine]
    assert files_holding(env.tmp, needles) == []
    assert files_holding(env.tmp, [contributed_texts(n=2, seed=4)[0][:48].encode()])  # the scan does find text

    await manager.rollback("tale", 0)
    assert "(served)" not in await status_text(manager)  # v1 is still on disk, so still listed


def loss_on(path: Path, texts: list[str]) -> float:
    """The version's loss (nats per character) on ``texts``: how well it could reproduce them."""
    from model.checkpoint import load_checkpoint
    from model.evaluate import evaluate_loss
    from model.finetune import contributed_data

    return evaluate_loss(load_checkpoint(path).model, contributed_data(texts, "tale").codes())


async def test_retraining_without_forgotten_texts_starts_from_a_version_that_never_saw_them(env):  # noqa: F811
    manager = await env.open()
    # The member's words (spelt backwards) are their own, so only a model that saw them knows them.
    mine = [" ".join(w[::-1] for w in t.split()) for t in contributed_texts(seed=3)]
    theirs = contributed_texts(seed=4)
    for text in mine:
        await env.store.add_contribution(GUILD, CHANNEL, MEMBER, "tale", text, "modal")
    await env.contribute(theirs)
    assert (await manager.wait(await manager.start("tale", "discord:30", minutes=2))).version == 1
    v1 = manager.versions_dir("tale").path(1)
    learned = loss_on(v1, mine)
    with pytest.raises(FinetuneRefused, match="nothing to retrain"):
        await manager.retrain_without_forgotten("tale", "discord:30")
    await answers.forget(env.store, GUILD, MEMBER)

    job = await manager.retrain_without_forgotten("tale", "discord:30", minutes=2)
    assert isinstance(job, RunningJob) and job.parent.version == 0 and job.contributions == 8
    outcome = await manager.wait(job)
    assert outcome.state == DONE and outcome.version == 2, outcome.error
    v2 = await env.fstore.version("tale", 2)
    assert v2.served and v2.parent_version is None
    assert {p.user_id for p in await env.fstore.provenance("tale", 2)} == {ADMIN}
    assert (await env.fstore.version("tale", 1)).pruned and not v1.exists()  # no rollback brings them back
    assert await env.fstore.forgotten() == [] and "Forgotten" not in await status_text(manager)
    assert (await answers.forget(env.store, GUILD, MEMBER)).text.startswith("You have no contributions")
    # What v1 learned of them is gone: measured 2.75 nats on v1, 3.01 on v2 (4.36 on the base).
    assert loss_on(Path(v2.path), mine) > learned + 0.1


async def test_when_too_little_text_remains_the_model_rolls_back_to_the_version_before_them(env):  # noqa: F811
    manager = await env.open()
    mine = contributed_texts(seed=3)
    for text in mine:
        await env.store.add_contribution(GUILD, CHANNEL, MEMBER, "tale", text, "modal")
    assert (await manager.wait(await manager.start("tale", "discord:30", minutes=2))).version == 1
    before = loss_on(manager.versions_dir("tale").path(1), mine)
    await answers.forget(env.store, GUILD, MEMBER)
    served = await manager.retrain_without_forgotten("tale", "discord:30")
    assert served == Served("tale", 0, env.base) and await manager.served("tale") == served
    assert (await env.fstore.version("tale", 1)).pruned and not manager.versions_dir("tale").path(1).exists()
    assert env.models.info["tale"].path == str(env.base)
    assert loss_on(env.base, mine) > before + 0.5  # what is served now cannot recite them
