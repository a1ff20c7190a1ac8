"""A server's personas through the service both front ends call: created, trained, served, kept to their
server, counted against its quotas, and deleted without a trace.

Jobs run a stand-in child (tests.helpers.FAKE_FINETUNE) that leaves the base weights as its result, so
a persona is "trained" in a Python start-up; the real training is covered by tests/bot/jobs and by
``charbot persona create`` in tests/bot/cli/test_persona.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Limits
from bot.core import answers
from bot.core.engines import Models, learned_texts
from bot.core.refusals import Refusal
from bot.core.replies import ReplyService, make_request
from bot.jobs.manager import FinetuneManager, Queued, RunningJob
from bot.jobs.settings import FinetuneSettings
from bot.personas.service import NOT_IN_DM, PersonaService, persona_key_of
from bot.personas.settings import PersonaSettings
from bot.personas.uploads import File
from bot.store import Store, open_store
from bot.store.jobs import DONE, FinetuneStore
from corpora import voices
from corpora.voices import is_voice, persona_key
from tests.helpers import eventually, fake_finetune, fake_runs

pytestmark = pytest.mark.slow  # starts processes (a stand-in training child): `make test-fast` skips it

GUILD, OTHER = 1_146_439_104_567_410_688, 42
ADMIN, CHANNEL = 987_654_321_098_765_432, 7
KEY = f"g{GUILD}-rules"
RULES = ["The ferry to Inisheer leaves the north pier at nine every morning except Sunday.",
         "Members pay their dues to the harbour master before the first of the month.",
         "Lanterns must be lit on the breakwater whenever the fog bell rings twice."]
TEXT = "\n".join(RULES * 12) + "\n"  # 2,772 characters: enough to train
CHARS = f"{len(TEXT):,}"


def upload(name: str = "rules.txt", text: str = TEXT) -> list[File]:
    return [File(name, text.encode())]


class World:
    """One bot process: a database, a fine-tuning manager with the stand-in child, the models and the service."""

    def __init__(self, tmp: Path, base: str) -> None:
        self.tmp, self.base = tmp, Path(base)
        self.gate = tmp / "gate"

    async def open(self, persona_settings: PersonaSettings = PersonaSettings(), after: float | None = None,
                   **finetune) -> PersonaService:
        self.store: Store = await open_store(self.tmp / "charbot.db")
        self.fstore = FinetuneStore(self.store)
        self.models = Models.load([], None, device="cpu", precision="fp32")
        self.settings = FinetuneSettings(state_dir=self.tmp / "state", command=fake_finetune(self.gate, after),
                                         **finetune)
        self.manager = FinetuneManager(self.fstore, self.settings, lambda corpus: self.base)
        self.service = PersonaService(self.store, self.manager, persona_settings, self.models)
        self.replies = ReplyService(self.models, Limits(cooldown_s=0))
        self.replies.locate = self.service.locate
        return self.service

    async def trained(self, name: str = "rules", style: str = "story", guild: int = GUILD) -> str:
        """Create a persona and wait for its training; its key."""
        self.gate.touch()
        created = await self.service.create(guild, name, style, upload(), ADMIN, CHANNEL)
        assert isinstance(created.job, RunningJob)
        outcome = await self.manager.wait(created.job)
        assert outcome.state == DONE, outcome.message()
        return created.persona.key

    async def say(self, key: str, prompt: str = "Once upon a time", guild: int | None = GUILD, seed: int = 3) -> str:
        request = make_request(key, prompt, self.replies.limits, guild=guild, seed=seed, length=40, n=1)
        return (await self.replies.reply(request)).text

    async def close(self) -> None:
        await self.manager.close(grace_s=10)
        self.models.close(wait=False)
        await self.store.close()


@pytest.fixture
async def world(tmp_path, random_checkpoint, monkeypatch) -> AsyncIterator[World]:
    monkeypatch.setattr(voices, "_personas", {})  # the personas this "process" registered
    w = World(tmp_path, random_checkpoint)
    yield w
    await w.close()


async def refusal(awaitable) -> Refusal:
    with pytest.raises(Refusal) as caught:
        await awaitable
    return caught.value


# ---- creating one, and when it can speak ----------------------------------------------------


async def test_a_created_persona_trains_then_speaks_from_its_own_version(world):
    service = await world.open()
    created = await service.create(GUILD, " Rules ", "faq", upload(), ADMIN, CHANNEL, source="cli")
    row, job = created.persona, created.job
    assert (row.name, row.style, row.key, row.files, row.chars) == ("rules", "faq", KEY, ["rules.txt"], len(TEXT))
    assert isinstance(job, RunningJob) and job.corpus == KEY and job.parent.version == 0
    assert job.parent.path == world.base  # a persona starts from the general base model
    assert f"Persona **rules** (faq) created from 1 file(s), {CHARS} characters." in created.message()
    assert "Training from the general base started (job 1" in created.message()
    assert is_voice(KEY)  # it is registered at once, so its name resolves while it trains
    stored = await world.store.contributions(corpus=KEY)
    assert [(c.guild_id, c.user_id, c.source, c.text) for c in stored] == [(GUILD, ADMIN, "cli", TEXT)]

    # While it trains it cannot speak yet, and says why.
    await eventually(lambda: fake_runs(world.gate), what="the job to start")
    r = await refusal(service.locate(KEY))
    assert r.kind == "unavailable" and r.message.startswith("The persona rules is still training; /persona info")
    r = await refusal(world.say(KEY, "When does the ferry leave?"))
    assert "still training" in r.message and KEY not in world.models.engines
    assert f"**rules** (faq, {CHARS} characters): training" in await service.list_text(GUILD)

    world.gate.touch()
    outcome = await world.manager.wait(job)
    assert (outcome.state, outcome.version) == (DONE, 1), outcome.message()
    version = world.tmp / "state" / "versions" / KEY / "v0001.safetensors"
    assert await service.locate(KEY) == version
    assert sorted(learned_texts(version)) == [TEXT]  # what grounding quotes
    text = await world.say(KEY, "When does the ferry leave?")
    assert text.startswith("> **When does the ferry leave?**") and "*From rules:*" in text
    assert world.models.info[KEY].path == str(version) and world.models.personas_loaded() == [KEY]
    assert "ready (v1)" in await service.list_text(GUILD)
    info = await service.info_text(GUILD, "rules")
    assert "**rules**: a faq persona" in info and f"by <@{ADMIN}> from rules.txt: {CHARS} characters." in info
    assert "v1 (served)" in info and "held-out loss on its own text 2.000 -> 1.500 nats/char" in info
    assert "(2.885 -> 2.164 bits)" in info


async def test_a_persona_waiting_for_a_busy_machine_is_queued_and_says_so(world):
    service = await world.open()
    first = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    second = await service.create(GUILD, "bard", "prose", upload("bard.md"), ADMIN, CHANNEL)
    assert isinstance(first.job, RunningJob) and isinstance(second.job, Queued)
    assert second.job.ahead == 0
    assert f"Its training is queued (job {second.job.id}, 0 ahead of it)" in second.message()
    bard = persona_key(GUILD, "bard")
    r = await refusal(service.locate(bard))
    assert r.message == f"The persona bard is waiting for its training (job {second.job.id}); try again later."
    assert f"**bard** (prose, {CHARS} characters): queued (job {second.job.id})" in await service.list_text(GUILD)
    world.gate.touch()  # the first ends, and this process takes the next from the queue
    await eventually(lambda: world.manager.running(bard) or None, timeout=30, what="the queued job to start")
    assert (await world.manager.wait(world.manager.running(bard))).state == DONE
    assert await service.locate(bard) == world.tmp / "state" / "versions" / bard / "v0001.safetensors"


async def test_a_persona_whose_training_was_refused_cannot_speak_and_info_says_why(world):
    service = await world.open(after=2.5)  # no better than the base on its own text: refused
    world.gate.touch()
    created = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    outcome = await world.manager.wait(created.job)
    assert outcome.state == "refused"
    r = await refusal(service.locate(KEY))
    assert r.message.startswith("The persona rules has no trained model: its training did not finish or was refused")
    assert "an admin can train it again with `/persona retrain rules` (with force:True" in r.message
    info = await service.info_text(GUILD, "rules")
    assert "State: not trained" in info and "Job 1 failed: refused: it did not get better at the new text" in info
    assert info.endswith("It cannot speak until it is trained: an admin can train it again with `/persona retrain "
                         "rules` (with force:True it is served even if it is no better than the general base).")


# ---- training one again ----------------------------------------------------------------------


async def test_a_refused_persona_retrained_with_force_is_served_from_its_kept_text(world):
    service = await world.open(after=2.5)  # every result is no better than the base: refused unless forced
    world.gate.touch()
    created = await service.create(GUILD, "rules", "faq", upload(), ADMIN, CHANNEL)
    assert (await world.manager.wait(created.job)).state == "refused"

    again = await service.retrain(GUILD, "Rules", started_by=f"discord:{ADMIN}", channel_id=CHANNEL)
    assert isinstance(again.job, RunningJob) and again.job.id == 2 and again.job.parent.path == world.base
    assert again.message() == ("Training the persona **rules** again from the general base (job 2, up to 10 min); "
                               "/persona info shows how it goes.")
    assert (again.job.started_by, again.job.channel_id, again.job.chars) == (f"discord:{ADMIN}", CHANNEL, len(TEXT))
    assert (await world.manager.wait(again.job)).state == "refused"  # the same guard, without force
    assert "has no trained model" in (await refusal(service.locate(KEY))).message

    forced = await service.retrain(GUILD, "rules", minutes=2, force=True)
    assert isinstance(forced.job, RunningJob) and "up to 2 min" in forced.message()
    outcome = await world.manager.wait(forced.job)
    assert (outcome.state, outcome.version, outcome.forced) == (DONE, 1, True), outcome.message()
    version = world.tmp / "state" / "versions" / KEY / "v0001.safetensors"
    assert await service.locate(KEY) == version and learned_texts(version) == [TEXT]  # trained on what it kept
    text = await world.say(KEY, "When does the ferry leave?")
    assert text.startswith("> **When does the ferry leave?**") and "*From rules:*" in text
    info = await service.info_text(GUILD, "rules")
    assert "State: ready (v1)" in info and "v1 (served)" in info and "retrain" not in info
    assert fake_runs(world.gate) == [KEY, KEY, KEY]


async def test_a_persona_is_retrained_only_by_its_own_server(world):
    service = await world.open(after=2.5)
    world.gate.touch()
    created = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    await world.manager.wait(created.job)
    theirs = (await refusal(service.retrain(OTHER, "rules", force=True))).message
    assert theirs == "This server has no persona called `rules` (its personas: none yet)."
    assert theirs == (await refusal(service.retrain(OTHER, "nosuch"))).message.replace("nosuch", "rules")
    assert (await refusal(service.retrain(None, "rules"))).message == NOT_IN_DM
    assert (await refusal(service.retrain(GUILD, KEY))).message.startswith("This server has no persona called")
    assert fake_runs(world.gate) == [KEY] and await world.manager.queued(KEY) is None  # nothing was started


async def test_a_persona_training_or_queued_is_not_retrained(world):
    service = await world.open()
    first = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    second = await service.create(GUILD, "bard", "prose", upload("bard.md"), ADMIN, CHANNEL)
    assert isinstance(first.job, RunningJob) and isinstance(second.job, Queued)

    r = await refusal(service.retrain(GUILD, "bard", force=True))
    assert (r.message, r.kind) == (f"The persona bard is already waiting for its training (job {second.job.id}, 0 "
                                   "ahead of it); it trains when the machine has room.", "unavailable")
    r = await refusal(service.retrain(GUILD, "rules"))
    assert r.message == (f"The persona rules is training now (job {first.job.id}); /persona info rules shows how far "
                         "it is. Retrain it once that job has ended.")
    assert len(await world.manager.queue.waiting()) == 1  # nothing more was queued

    # Once its training has ended it may be retrained; when the machine is busy it waits in the queue.
    world.gate.touch()
    assert (await world.manager.wait(first.job)).state == DONE
    bard = persona_key(GUILD, "bard")
    await eventually(lambda: world.manager.running(bard) or None, timeout=30, what="the queued job to start")
    assert (await world.manager.wait(world.manager.running(bard))).state == DONE
    elsewhere = await world.fstore.create_job("tale", "cli:op", {"minutes": 1})  # another process of this machine
    waiting = await service.retrain(GUILD, "rules")
    assert isinstance(waiting.job, Queued) and waiting.message() == (
        f"Training of the persona **rules** is queued (job {waiting.job.id}, 0 ahead of it); /persona info shows "
        "how it goes.")
    assert (await world.manager.queued(KEY)).id == waiting.job.id
    await world.fstore.finish_job(elsewhere, "failed", "done elsewhere")
    (retrained,) = await world.manager.drain()
    assert retrained.corpus == KEY and retrained.parent.version == 1  # a ready persona goes on from its version
    assert (await world.manager.wait(retrained)).version == 2



async def test_two_admins_retraining_one_persona_at_the_same_instant_queue_one_job(world):
    service = await world.open(after=2.5)
    world.gate.touch()
    created = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    await world.manager.wait(created.job)
    elsewhere = await world.fstore.create_job("tale", "cli:op", {"minutes": 1})  # the machine is busy: they queue
    got = await asyncio.gather(*(service.retrain(GUILD, "rules", started_by=f"discord:{who}") for who in (1, 2)),
                               return_exceptions=True)
    queued = [g.job for g in got if not isinstance(g, BaseException)]
    refused = [g for g in got if isinstance(g, Refusal)]
    assert len(queued) == 1 and isinstance(queued[0], Queued) and len(refused) == 1, got
    assert refused[0].message == (f"The persona rules was not retrained: a training of rules is already in the queue "
                                  f"(job {queued[0].id}); see /finetune status")
    assert [e.id for e in await world.manager.queue.waiting()] == [queued[0].id]
    await world.fstore.finish_job(elsewhere, "failed", "done elsewhere")

async def test_a_persona_that_cannot_even_be_queued_is_not_kept(world):
    service = await world.open()
    r = await refusal(service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL, minutes=1000))
    assert r.message == "The persona was not created: minutes must be more than 0 and at most 60; got 1000"
    assert await service.names(GUILD) == [] and await world.store.contributions() == [] and not is_voice(KEY)


@pytest.mark.parametrize("name, style, words", [
    ("Tale", "story", "'tale' is taken by charbot itself"),
    ("house rules", "story", "A persona name must be 2 to 32 characters"),
    ("rules", "poem", "The style must be one of story, faq, prose; got `poem`."),
])
async def test_a_bad_name_or_style_is_refused_before_anything_is_stored(world, name, style, words):
    service = await world.open()
    assert words in (await refusal(service.create(GUILD, name, style, upload(), ADMIN, CHANNEL))).message
    assert await world.store.contributions() == []


async def test_a_name_is_used_once_per_server(world):
    service = await world.open()
    await world.trained()
    r = await refusal(service.create(GUILD, "RULES", "faq", upload(), ADMIN, CHANNEL))
    assert r.message.startswith("This server already has a persona called `rules`; choose another name")
    assert (await world.trained(guild=OTHER)) == "g42-rules"  # another server may use it


# ---- quotas ---------------------------------------------------------------------------------


async def test_a_server_may_have_so_many_personas_and_other_servers_are_not_counted(world):
    service = await world.open(PersonaSettings(max_per_server=2))
    await world.trained("rules")
    await world.trained("bard")
    r = await refusal(service.create(GUILD, "third", "story", upload(), ADMIN, CHANNEL))
    assert r.message == ("This server has 2 personas, the most it may have (2); delete one with /persona delete "
                         "first.")
    await world.trained("third", guild=OTHER)
    await service.delete(GUILD, "bard")
    await world.trained("third")


async def test_a_server_may_keep_so_much_on_disk(world):
    service = await world.open(PersonaSettings(max_disk_mb=1))
    await world.trained("rules")
    assert service.disk_bytes(GUILD) == world.base.stat().st_size + len(json.dumps([{"id": 1, "text": TEXT}]))
    filler = world.tmp / "state" / "versions" / KEY / "v0009.safetensors"  # an older version, say
    filler.write_bytes(b"\0" * 1_200_000)
    r = await refusal(service.create(GUILD, "bard", "story", upload(), ADMIN, CHANNEL))
    assert r.message.startswith("This server's personas use 1 MB of disk, the most they may (1 MB)")
    assert service.disk_bytes(OTHER) == 0
    await world.trained("bard", guild=OTHER)  # another server's quota is its own


# ---- servers are kept apart ------------------------------------------------------------------


async def test_another_server_cannot_see_use_or_delete_a_servers_persona(world):
    service = await world.open()
    key = await world.trained("rules")
    await service.create(OTHER, "bard", "story", upload(), ADMIN, CHANNEL)

    unknown = (await refusal(service.get(OTHER, "nosuch"))).message
    for call in (service.get(OTHER, "rules"), service.info_text(OTHER, "rules"), service.delete(OTHER, "rules"),
                 service.retrain(OTHER, "rules")):
        theirs = (await refusal(call)).message
        assert theirs == unknown.replace("nosuch", "rules")
        assert theirs == "This server has no persona called `rules` (its personas: bard)."
    assert await service.names(OTHER) == ["bard"] and "rules" not in await service.list_text(OTHER)
    assert await service.names(GUILD) == ["rules"]

    # /say with another server's key is refused in the words a name that does not exist gets.
    theirs = (await refusal(world.say(key, guild=OTHER))).message
    assert theirs == (await refusal(world.say("g42-rules", guild=OTHER))).message
    assert theirs == ("I don't know the corpus or persona `rules`; I know tale, faq, novel and this server's "
                      "personas (/persona list).")
    # A DM has no personas: the key is unknown there, and the persona commands say why.
    assert (await refusal(world.say(key, guild=None))).message == (
        "I don't know the corpus or persona `rules`; I know tale, faq, novel.")
    for call in (service.get(None, "rules"), service.list_text(None), service.delete(None, "rules"),
                 service.retrain(None, "rules"),
                 service.create(None, "rules", "story", upload(), ADMIN, CHANNEL)):
        r = await refusal(call)
        assert (r.message, r.kind) == (NOT_IN_DM, "not_allowed")
    assert await service.names(None) == []
    assert await service.get(GUILD, "rules") and await world.say(key)  # still there for its own server


def test_a_name_means_a_key_only_within_a_server():
    assert persona_key_of(GUILD, "Rules") == KEY and persona_key_of(OTHER, "rules") == "g42-rules"
    assert persona_key_of(None, "rules") is None and persona_key_of(GUILD, "tale") is None
    assert persona_key_of(GUILD, "no way") is None


# ---- deleting one, and /forget ----------------------------------------------------------------


async def test_deleting_a_persona_leaves_no_text_checkpoint_index_or_engine(world):
    service = await world.open()
    key = await world.trained("rules", "faq")
    await world.say(key, "When does the ferry leave?")
    versions = world.tmp / "state" / "versions" / key
    assert (versions / "v0001.learned.json").is_file() and key in world.models.engines
    assert key in world.models.passages

    answer = await service.delete(GUILD, "rules")
    assert answer == (f"Deleted the persona **rules**: its {CHARS} characters of text, its trained versions and its "
                      "passage index are gone.")
    assert not versions.exists() and service.disk_bytes(GUILD) == 0
    assert await world.store.contributions() == [] and await world.fstore.versions(key) == []
    assert await world.fstore.recent_jobs(key) == [] and await service.names(GUILD) == []
    assert key not in world.models.engines and key not in world.models.passages and not is_voice(key)
    assert (await refusal(world.say(key, "When?"))).message.startswith("I don't know the corpus or persona `rules`")
    assert (await refusal(service.delete(GUILD, "rules"))).message.startswith("This server has no persona called")
    await world.trained("rules")  # the name is free again, with nothing of the old one
    assert "Job" not in await service.info_text(GUILD, "rules")


async def test_deleting_a_persona_while_it_trains_here_cancels_its_job(world):
    service = await world.open()
    created = await service.create(GUILD, "rules", "story", upload(), ADMIN, CHANNEL)
    await eventually(lambda: fake_runs(world.gate), what="the job to start")
    await service.delete(GUILD, "rules")
    assert world.manager.running(KEY) is None and (await world.fstore.job(created.job.id)) is None
    assert not (world.tmp / "state" / "versions" / KEY).exists() and await world.store.contributions() == []


async def test_a_persona_training_in_another_process_is_not_deleted_under_it(world):
    service = await world.open()
    await world.store.write([(  # recorded by another process; only this one's row exists here
        "INSERT INTO personas (guild_id, name, style, created_by, created, chars, files) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", (GUILD, "rules", "story", ADMIN, "2026-01-01T00:00:00Z", 10, "[]"))])
    job = await world.fstore.create_job(KEY, "cli:op", {"minutes": 1}, GUILD, CHANNEL)
    r = await refusal(service.delete(GUILD, "rules"))
    assert r.message == (f"The persona rules is training in another process (job {job}); delete it once that job "
                         "has ended.")
    assert await service.names(GUILD) == ["rules"]


async def test_forget_and_scrub_take_the_creators_text_out_of_what_the_persona_quotes(world):
    service = await world.open()
    key = await world.trained("rules", "faq")
    version = await service.locate(key)
    assert learned_texts(version) == [TEXT]
    first = await world.say(key, "When does the ferry leave?")
    assert "north pier" in first  # quoted from its text

    answer = await answers.forget(world.store, GUILD, ADMIN, world.manager, world.models)  # as the bot's /forget
    assert answer.text.startswith("Deleted 1 contribution of yours from this server.")
    assert learned_texts(version) == []
    assert f"({0:,} still stored; the rest was deleted with /forget)" in await service.info_text(GUILD, "rules")
    again = await world.say(key, "When does the ferry leave?")  # the same engine, regrounded
    assert "north pier" not in again and "*From rules:*" not in again
