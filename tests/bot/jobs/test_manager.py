"""Jobs end to end with the real child process: install, refuse, kill, corrupt, cancel, roll back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot.core.engines import Models
from bot.jobs.manager import FinetuneManager, FinetuneRefused
from bot.jobs.settings import FinetuneSettings
from bot.store import Store, open_store
from bot.store.jobs import CANCELLED, DONE, FAILED, REFUSED, FinetuneStore, JobConflict
from model.sample import SampleSettings
from tests.helpers import contributed_texts, eventually

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

QUICK = {"max_epochs": 15, "lr": 1e-2, "corpus_eval_chars": 2000}  # enough to learn the new text
SHORT = {"max_epochs": 3, "lr": 1e-2, "corpus_eval_chars": 2000}  # enough to make a different version
ENDLESS = {"max_epochs": 100_000, "patience": 100_000, "lr": 1e-2, "corpus_eval_chars": 2000}
GUILD, CHANNEL, ADMIN = 10, 20, 30


class Env:
    """A database with contributions, a state folder, the bot's models and a manager wired to them."""

    def __init__(self, tmp: Path, base: str) -> None:
        self.tmp = tmp
        self.base = Path(base)
        self.served_calls: list[tuple[str, Path, int]] = []
        self.store: Store | None = None

    async def open(self, config: dict = QUICK, command: tuple[str, ...] | None = None, **settings) -> FinetuneManager:
        self.store = await open_store(self.tmp / "charbot.db")
        self.fstore = FinetuneStore(self.store)
        self.models = Models.load(["tale"], self.base.parent, device="cpu", max_batch=4, max_queue=8)

        async def serve(corpus: str, path: Path, version: int) -> None:
            self.served_calls.append((corpus, path, version))
            await asyncio.to_thread(self.models.swap, corpus, path)

        self.settings = FinetuneSettings(state_dir=self.tmp / "state", config=config, nice=1, command=command,
                                         **settings)
        self.manager = FinetuneManager(self.fstore, self.settings, lambda corpus: self.base, serve)
        return self.manager

    async def contribute(self, texts: list[str]) -> None:
        for t in texts:
            await self.store.add_contribution(GUILD, CHANNEL, ADMIN, "tale", t, "modal")

    def restart_models(self) -> None:
        self.models.close()
        self.models = Models.load(["tale"], self.base.parent, device="cpu", max_batch=4, max_queue=8)

    def sample(self, seed: int = 7) -> str:
        fut = self.models.engines["tale"].submit("The ", SampleSettings(temperature=1.0, max_chars=60, seed=seed))
        return fut.result(timeout=60).text

    async def close(self) -> None:
        await self.manager.close(grace_s=10)
        self.models.close(wait=False)
        await self.store.close()


@pytest.fixture
async def env(tmp_path, base_checkpoint):
    e = Env(tmp_path, base_checkpoint)
    yield e
    await e.close()


async def test_jobs_serve_new_versions_without_restart_and_rollback_restores_outputs_exactly(env):
    manager = await env.open(keep_versions=2)
    await env.contribute(contributed_texts())
    base_text = env.sample()
    job = await manager.start("tale", "discord:30", minutes=2, guild_id=GUILD, channel_id=CHANNEL)
    assert "Fine-tuning tale (job 1, from base" in job.status()
    outcome = await manager.wait(job)
    assert outcome.state == DONE, outcome.error
    assert outcome.version == 1
    report = outcome.report
    assert report.after.contributed < report.before.contributed * 0.9
    assert report.before.corpus is not None and report.after.corpus is not None
    msg = outcome.message()
    assert "now serving v1" in msg and "New text (held-out contributions, " in msg and "Old style" in msg
    assert report.replay == 0.75 and "75% of each batch replayed from the tale training text" in msg

    v1 = env.tmp / "state" / "versions" / "tale" / "v0001.safetensors"
    assert env.served_calls == [("tale", v1, 1)]
    assert env.models.info["tale"].path == str(v1)
    v1_text = env.sample()
    assert v1_text != base_text  # the live engine was swapped
    served = await manager.served("tale")
    assert (served.version, served.path) == (1, v1)
    row = await env.fstore.version("tale", 1)
    assert row.served and row.parent_version is None and row.parent_path == str(env.base)
    assert row.started_by == "discord:30" and row.contributions == 8
    assert row.train_chars == report.train_chars and row.losses["after"]["contributed"] == report.after.contributed
    job_row = await env.fstore.job(job.id)
    assert job_row.state == DONE and job_row.version == 1 and job_row.report["steps"] == report.steps
    assert not (env.settings.jobs_dir / str(job.id)).exists()  # the staging folder is cleared

    # The next job starts from the served v1 and makes v2.
    manager.settings = replace(manager.settings, config=SHORT)
    await env.contribute(contributed_texts(seed=1))
    job2 = await manager.start("tale", "cli:op", minutes=2)
    assert job2.parent.version == 1
    assert (await manager.wait(job2)).version == 2
    assert (await env.fstore.version("tale", 2)).parent_version == 1
    assert [r.served for r in await env.fstore.versions("tale")] == [False, True]
    v2_text = env.sample()
    assert v2_text not in (base_text, v1_text)

    before, after = await manager.rollback("tale")  # default: the served version's parent
    assert (before.version, after.version) == (2, 1)
    assert env.sample() == v1_text
    await manager.rollback("tale", 0)
    assert env.sample() == base_text
    assert (await manager.served("tale")).version == 0
    await manager.rollback("tale", 2)
    assert env.sample() == v2_text
    with pytest.raises(FinetuneRefused, match="already serves v2"):
        await manager.rollback("tale", 2)
    with pytest.raises(FinetuneRefused, match="v9 does not exist; available: base"):
        await manager.rollback("tale", 9)

    # keep_versions=2: a third version deletes v1, which can then not be restored.
    assert (await manager.wait(await manager.start("tale", "discord:30", minutes=2))).version == 3
    assert VersionFiles(env).numbers() == ["v0002.safetensors", "v0003.safetensors"]
    assert VersionFiles(env).learned() == ["v0002.learned.json", "v0003.learned.json"]  # pruned with its version
    with pytest.raises(FinetuneRefused, match="v1 was deleted to keep disk use down"):
        await manager.rollback("tale", 1)
    v3_text = env.sample()

    # A damaged version is refused before anything changes.
    v2 = v1.with_name("v0002.safetensors")
    v2.write_bytes(v2.read_bytes()[:100])
    with pytest.raises(FinetuneRefused, match="v2 cannot be served"):
        await manager.rollback("tale", 2)
    assert (await manager.served("tale")).version == 3 and env.sample() == v3_text

    # A restarted bot loads the base checkpoints, then serves what the database records.
    env.restart_models()
    assert env.sample() == base_text
    notes = await manager.restore_served(["tale"])
    assert notes == [f"tale: serving v3 ({v1.with_name('v0003.safetensors')})"]
    assert env.sample() == v3_text
    # ...and if that version was damaged meanwhile, it says so and serves the base.
    v3 = v1.with_name("v0003.safetensors")
    v3.write_bytes(v3.read_bytes()[:-50])
    env.restart_models()
    notes = await manager.restore_served(["tale"])
    assert "tale v3 cannot be served" in notes[0]
    assert (await manager.served("tale")).version == 0 and env.sample() == base_text


class VersionFiles:
    def __init__(self, env: Env) -> None:
        self.root = env.tmp / "state" / "versions" / "tale"

    def numbers(self) -> list[str]:
        """The checkpoint files (each may have the texts it learned beside it, <version>.learned.json)."""
        return sorted(p.name for p in self.root.glob("*.safetensors")) if self.root.exists() else []

    def learned(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.learned.json")) if self.root.exists() else []


async def test_too_little_text_is_refused_with_the_amount_needed_and_nothing_recorded(env):
    manager = await env.open()
    await env.contribute(["A short fable about a crow and a jug of water, told briefly."])
    with pytest.raises(FinetuneRefused, match=r"so 1,9\d\d more"):
        await manager.start("tale", "discord:30")
    assert await env.fstore.recent_jobs() == []


async def test_collected_messages_of_people_who_opted_out_do_not_count(env):
    manager = await env.open()
    for text in contributed_texts():
        await env.store.add_contribution(GUILD, CHANNEL, ADMIN, "tale", text, "listen")
    await env.store.set_opt_out(GUILD, ADMIN, True)
    with pytest.raises(FinetuneRefused, match="8 messages collected from people who opted out are left out"):
        await manager.start("tale", "discord:30")
    await env.contribute(contributed_texts(seed=5))  # what they sent themselves still counts
    texts, left_out = await env.fstore.training_texts("tale")
    assert len(texts) == 8 and left_out == 8


async def test_one_job_per_corpus_even_across_processes(env):
    manager = await env.open(ENDLESS)
    await env.contribute(contributed_texts())
    job = await manager.start("tale", "discord:30", minutes=5)
    with pytest.raises(FinetuneRefused, match="already running"):
        await manager.start("tale", "discord:31")
    # Another process (the CLI beside the bot) is stopped by the database itself.
    with pytest.raises(JobConflict, match="already running"):
        await env.fstore.create_job("tale", "cli:op", {})
    await manager.cancel("tale")
    outcome = await manager.wait(job)
    assert outcome.state == CANCELLED and "cancelled by an admin" in outcome.error
    assert (await env.fstore.job(job.id)).state == CANCELLED
    assert (await manager.served("tale")).version == 0 and env.served_calls == []


async def test_a_killed_job_leaves_the_served_model_and_the_next_job_works(env):
    manager = await env.open(ENDLESS)
    texts = contributed_texts()
    await env.contribute(texts)
    before_text = env.sample()
    job = await manager.start("tale", "discord:30", minutes=5)
    await eventually(lambda: job.progress is not None, timeout=120, interval=0.05, what="training to start")
    assert "step" in job.status() and "chars/s" in job.status()
    pid = job.process.pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 1  # niced
    os.kill(pid, signal.SIGKILL)
    outcome = await manager.wait(job)
    assert outcome.state == FAILED and "killed (SIGKILL)" in outcome.error
    assert (await env.fstore.job(job.id)).state == FAILED
    assert (await manager.served("tale")).version == 0 and env.served_calls == []
    assert env.sample() == before_text
    assert not (env.tmp / "state" / "versions" / "tale").exists() or not list(
        (env.tmp / "state" / "versions" / "tale").iterdir())
    assert [c.text for c in await env.store.contributions(corpus="tale")] == texts

    manager.settings = replace(manager.settings, config=SHORT)
    outcome = await manager.wait(await manager.start("tale", "discord:30", minutes=2))
    assert outcome.state == DONE and outcome.version == 1


# A child that runs the real pipeline, then damages the checkpoint it made, as a bad disk would.
CORRUPTING_CHILD = """
import sys
from dataclasses import replace
from pathlib import Path
from bot.jobs import job as runner
code = runner.main(sys.argv[1:])
staged = Path(sys.argv[1]) / runner.STAGED
data = bytearray(staged.read_bytes())
data[-7] ^= 0xFF
staged.write_bytes(bytes(data))
sys.exit(code)
"""


async def test_a_corrupt_new_checkpoint_is_refused_and_the_old_one_stays(env):
    manager = await env.open(SHORT, command=(sys.executable, "-c", CORRUPTING_CHILD))
    await env.contribute(contributed_texts())
    before_text = env.sample()
    outcome = await manager.wait(await manager.start("tale", "discord:30", minutes=2))
    assert outcome.state == FAILED
    assert "failed its check and was not served" in outcome.error and "checksum" in outcome.error
    assert outcome.report is not None  # the figures are still reported
    assert (await manager.served("tale")).version == 0 and env.served_calls == []
    assert env.sample() == before_text
    assert await env.fstore.versions("tale") == []
    assert VersionFiles(env).numbers() == []


async def test_a_version_the_engine_cannot_load_stays_on_record_and_the_parent_stays_served(env):
    """A finished job and an imported file go the same way from file to served version, failures included."""
    from bot.jobs.manager import NotServed

    manager = await env.open()

    async def cannot_load(corpus: str, path: Path, version: int) -> None:
        raise RuntimeError("out of memory")

    manager.on_serve = cannot_load
    with pytest.raises(NotServed, match=r"^v1 was saved but could not be loaded for serving \(out of memory\); "
                                        r"still serving base$"):
        await manager.import_checkpoint("tale", env.base, "cli:op")

    job_id, outcome = await install_finished_job(env, manager, after=1.5, corpus=(1.0, 1.0))
    assert (outcome.state, outcome.version) == (FAILED, 2)
    assert outcome.error == "v2 was saved but could not be loaded for serving (out of memory); still serving base"

    assert (await manager.served("tale")).version == 0
    assert [(r.version, r.served, r.job_id) for r in await env.fstore.versions("tale")] == [
        (1, False, None), (2, False, job_id)]
    assert VersionFiles(env).numbers() == ["v0001.safetensors", "v0002.safetensors"]


async def test_a_result_no_better_on_the_new_text_is_refused_and_not_made_a_version(env):

    manager = await env.open()
    job_id, outcome = await install_finished_job(env, manager, after=2.01, corpus=(1.0, 1.0))
    assert outcome.state == REFUSED and "did not get better at the new text" in outcome.error
    assert "2.000 -> 2.010 nats/char" in outcome.message() and "2.885 -> 2.900 bits/char" in outcome.message()
    assert (await env.fstore.job(job_id)).state == FAILED
    assert (await env.fstore.job(job_id)).error.startswith("refused: it did not get better")
    assert await env.fstore.versions("tale") == [] and VersionFiles(env).numbers() == []


async def test_a_result_that_forgets_the_corpus_is_refused_with_both_figures_and_nothing_changes(env):
    from bot.jobs.messages import status_text

    manager = await env.open()
    texts = contributed_texts()
    await env.contribute(texts)
    before_text = env.sample()
    job_id, outcome = await install_finished_job(env, manager, after=0.4, corpus=(0.99, 2.24))
    assert outcome.state == REFUSED and not outcome.verdict.ok
    msg = outcome.message()
    assert f"Fine-tune of tale (job {job_id}) was refused, so the served model is unchanged" in msg
    assert "its held-out loss rose 0.990 -> 2.240 nats/char (+1.250, more than the 0.05 allowed)" in msg
    assert "New text (held-out contributions, 230 chars): 2.000 -> 0.400 nats/char" in msg  # both figures,
    assert "Old style (tale held-out, 5,000 chars): 0.990 -> 2.240 nats/char" in msg  # nats and bits
    assert "1.428 -> 3.232 bits/char" in msg
    assert "rests on only 230 held-out characters" in msg  # and which one is too thin to trust
    assert "`/finetune start tale force:True`" in msg and "`charbot finetune tale --force`" in msg
    job = await env.fstore.job(job_id)
    assert job.state == FAILED and job.report["after"]["corpus"] == 2.24
    assert "refused: it forgot too much of the tale style" in await status_text(manager, "tale")
    assert (await manager.served("tale")).version == 0 and env.served_calls == [] and env.sample() == before_text
    assert await env.fstore.versions("tale") == [] and VersionFiles(env).numbers() == []
    assert [c.text for c in await env.store.contributions(corpus="tale")] == texts


async def test_forcing_installs_a_refused_result_and_says_so(env):
    from bot.jobs.messages import versions_text

    manager = await env.open()
    _job, outcome = await install_finished_job(env, manager, after=0.4, corpus=(0.99, 2.24), force=True)
    assert (outcome.state, outcome.version, outcome.forced) == (DONE, 1, True)
    assert "now serving v1" in outcome.message()
    assert "Installed because it was forced, although it forgot too much of the tale style" in outcome.message()
    assert (await manager.served("tale")).version == 1
    row = await env.fstore.version("tale", 1)
    assert row.losses["guard"] == {"max_corpus_rise": 0.05, "passed": False, "forced": True,
                                   "reasons": list(outcome.verdict.reasons), "min_heldout_chars": 1000}
    shown = await versions_text(manager, ["tale"])
    assert "new text (230 held-out chars, too little text to trust) 2.000 -> 0.400 nats (2.89 -> 0.58 bits/char)" \
        in shown
    assert "tale text (5,000 chars) 0.990 -> 2.240 nats (1.43 -> 3.23 bits/char)" in shown
    assert "installed by force against the checks" in shown


async def test_a_result_within_the_bound_is_served_without_force(env):
    manager = await env.open(max_corpus_rise=0.1)
    _, outcome = await install_finished_job(env, manager, after=0.4, corpus=(0.99, 1.08))
    assert (outcome.state, outcome.version, outcome.forced) == (DONE, 1, False)
    assert "forced" not in outcome.message()
    assert "Checks passed: better on the new text, and the tale held-out loss rose by at most 0.1 nats." in \
        outcome.message()
    assert (await env.fstore.version("tale", 1)).losses["guard"]["passed"]


async def install_finished_job(env, manager, after: float, corpus: tuple[float, float] | None = None,
                               force: bool = False) -> tuple[int, object]:
    """A job whose child process left the base weights as its result, held-out loss 2.0 -> ``after`` (and
    ``corpus`` before and after on 5,000 corpus characters); installed unless the guard refuses (or ``force``)."""
    from bot.jobs.manager import RunningJob, Served
    from model.finetune import FinetuneReport, Losses

    job_id = await env.fstore.create_job("tale", "discord:30", {})
    jobdir = env.tmp / "job"
    jobdir.mkdir()
    (jobdir / "new.safetensors").write_bytes(env.base.read_bytes())
    (jobdir / "texts.json").write_text("[]")  # what it trained on: the job's spec writes it (bot.jobs.job.JobSpec)
    job = RunningJob(job_id, "tale", "discord:30", Served("tale", 0, env.base), 8, 2300, 2.0, force=force)
    corpus = corpus or (None, None)
    report = FinetuneReport("tale", str(env.base), "new.safetensors", 2300, 2070, 230,
                            5000 if corpus[0] is not None else 0, None if corpus[0] is not None else "skipped",
                            Losses(2.0, corpus[0]), Losses(after, corpus[1]), 12, "early-stop", 3.0)
    return job_id, await manager._install(job, jobdir, report)
