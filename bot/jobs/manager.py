"""Fine-tuning jobs from start to served version; one code path for the bot and ``charbot finetune``.

The order of the steps is what makes a crash at any moment harmless: the job is recorded as
running, the training runs in a child process on a copy of the contributions, the result is
judged (:mod:`bot.jobs.guard`: better on the new text, corpus kept; a refused result is
never copied in unless the job was forced), copied in under a new version number, checked
on that very file, and only then recorded as served in one transaction, after which the live
engine is swapped. Until that transaction the database still names the old checkpoint, so a
killed job or bot changes nothing that is served; :meth:`FinetuneManager.recover` marks such a
job failed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot.jobs.guard import Verdict, judge
from bot.jobs.job import STAGED, TEXTS, JobProcess, JobSpec, describe_exit
from bot.jobs.settings import FinetuneSettings
from bot.jobs.versions import VersionDir, versions_to_prune
from bot.store import utc_now
from bot.store.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    REFUSED,
    FinetuneStore,
    JobConflict,
    JobRow,
    Source,
    VersionRow,
    _pid_alive,
)
from bot.store.queue import AlreadyQueued, JobQueue, QueuedJob
from corpora.voices import display_name, parse_key
from model.checkpoint import CheckpointError, atomic_write_bytes, sibling
from model.finetune import FinetuneConfig, FinetuneReport, TooLittleText, check_enough, contributed_data
from model.verify import verify_checkpoint

log = logging.getLogger(__name__)

PROGRESS_SAVE_S = 10.0
CANCEL_GRACE_S = 30.0
SYNC_EVERY_S = 2.0  # how soon a version changed elsewhere (another bot process, `charbot finetune`) is served

# Called with (corpus, checkpoint path, version number; 0 = base) when a new checkpoint must be served.
ServeCallback = Callable[[str, Path, int], Awaitable[None]]


class FinetuneRefused(Exception):
    """A request the manager turns down; the message says why and what to do."""


class NotServed(Exception):
    """A new version was recorded but the live engine could not load it; its parent is served again."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


@dataclass(frozen=True)
class Served:
    """The checkpoint serving a corpus: ``version`` 0 is the configured base checkpoint."""

    corpus: str
    version: int
    path: Path

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version else "base"


@dataclass(frozen=True)
class Queued:
    """A job waiting in the queue (:mod:`bot.store.queue`) for a machine with room."""

    id: int
    corpus: str
    ahead: int  # entries before it in the queue, jobs running now not counted


@dataclass
class JobOutcome:
    """How a job ended, with what an admin should be told."""

    job_id: int
    corpus: str
    state: str
    version: int | None = None
    report: FinetuneReport | None = None
    error: str | None = None
    verdict: Verdict | None = None  # the guard's, for a job that got that far
    forced: bool = False

    def message(self) -> str:
        name = display_name(self.corpus)  # a persona by its own name, never its server's id
        if self.state == DONE and self.report is not None:
            text = f"Fine-tune of {name} finished: now serving v{self.version}.\n{self.report.summary()}"
            if self.verdict is not None and not self.verdict.ok:
                text += f"\nInstalled because it was forced, although {self.verdict.text()}."
            elif self.verdict is not None and parse_key(self.corpus) is not None:
                text += "\nChecks passed: better than the general base on its own held-out text."
            elif self.verdict is not None:
                text += (f"\nChecks passed: better on the new text, and the {name} held-out loss rose by at "
                         f"most {self.verdict.max_corpus_rise:g} nats.")
            return text
        if self.state == REFUSED and self.report is not None:
            again = (f"`/finetune start {name} force:True`, or `charbot finetune {name} --force`"
                     if parse_key(self.corpus) is None else
                     f"`/persona retrain {name} force:True`")
            return (f"Fine-tune of {name} (job {self.job_id}) was refused, so the served model is unchanged: "
                    f"{self.error}.\n{self.report.summary()}\nTo serve such a result anyway, run it again with "
                    f"force ({again}).")
        if self.state == CANCELLED:  # no advice: a persona's job is also cancelled when the persona is deleted
            return f"Fine-tune of {name} (job {self.job_id}) was cancelled; nothing changed. {self.error or ''}"
        again = f"\n`/persona retrain {name}` trains it again." if parse_key(self.corpus) is not None else ""
        text = f"Fine-tune of {name} (job {self.job_id}) failed; the served model is unchanged: {self.error}"
        return text + (f"\n{self.report.summary()}" if self.report is not None else "") + again


@dataclass
class RunningJob:
    """A job this process supervises: what the status message shows."""

    id: int
    corpus: str
    started_by: str
    parent: Served
    contributions: int
    chars: int
    minutes: float
    channel_id: int | None = None
    force: bool = False  # install even if the guard refuses the result
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    progress: dict | None = None
    process: JobProcess | None = None
    task: asyncio.Task | None = None
    cancel_reason: str | None = None
    sources: list[Source] = field(default_factory=list)  # the contributions it trains on: the version's provenance
    without_forgotten: bool = False  # from the newest version that never saw a forgotten text; drops the others

    def status(self) -> str:
        """One line: phase, step, losses, speed and time left."""
        elapsed = time.monotonic() - self.started
        head = (f"Fine-tuning {display_name(self.corpus)} (job {self.id}, from {self.parent.label}, "
                f"{self.chars:,} characters from {self.contributions} contributions, up to {self.minutes:g} min): "
                f"{self.phase}")
        p = self.progress
        if self.phase != "training" or not p:
            return f"{head}, {elapsed:.0f} s so far."
        parts = [f"step {p['step']}", f"loss {p['train_loss']:.3f}"]
        if p.get("best_val_loss") is not None:
            parts.append(f"held-out {p['best_val_loss']:.3f}")
        parts.append(f"{p['chars_per_s']:,} chars/s")
        parts.append(f"{100 * p['fraction']:.0f}%")
        if p.get("eta_s") is not None:
            parts.append(f"about {p['eta_s'] / 60:.1f} min left (early stopping may end it sooner)")
        return f"{head}: " + ", ".join(parts) + "."


class FinetuneManager:
    """Starts, supervises, cancels and installs fine-tuning jobs; rolls versions back."""

    def __init__(
        self,
        store: FinetuneStore,
        settings: FinetuneSettings,
        base_checkpoint: Callable[[str], Path],
        on_serve: ServeCallback | None = None,
        serves_queue: bool = True,
    ) -> None:
        self.store = store
        # A bot takes any queued job when it has room. A CLI process, which exits once its own job
        # ends, takes only what it submitted itself: a job it started for someone else would die with it.
        self.serves_queue = serves_queue
        self.settings = settings
        self.base_checkpoint = base_checkpoint
        self.on_serve = on_serve
        self.jobs: dict[str, RunningJob] = {}
        self.serving: dict[str, int] = {}  # what this process serves, by corpus (0: the base checkpoint)
        self._lock = asyncio.Lock()
        self._following: asyncio.Task | None = None
        self._unservable: set[tuple[str, int]] = set()  # versions recorded elsewhere that failed their check here
        self.queue = JobQueue(store.store)
        self.on_start: Callable[[RunningJob], Awaitable[None]] | None = None  # told of jobs the queue starts
        self._closing = False
        self._drains: set[asyncio.Task] = set()  # queue drains a finished job started; close() waits for them

    # ---- what is served -----------------------------------------------------------------

    def versions_dir(self, corpus: str) -> VersionDir:
        return VersionDir.of(self.settings.state_dir, corpus)

    async def served(self, corpus: str) -> Served:
        """The checkpoint the database says is served for ``corpus``."""
        row = await self.store.served(corpus)
        if row is None:
            return Served(corpus, 0, Path(self.base_checkpoint(corpus)))
        return Served(corpus, row.version, Path(row.path))

    async def recover(self) -> list[JobRow]:
        """At start: fail jobs a crash interrupted, and clear what they left on disk."""
        stale = await self.store.fail_interrupted()
        for job in stale:
            log.warning("fine-tuning job %d (%s) was interrupted; marked failed", job.id, job.corpus)
        if released := await self.queue.release_dead(_pid_alive):
            log.warning("%d queued fine-tunes claimed by a process that stopped were put back in the queue", released)
        running = {j.id for j in await self.store.running_jobs()}
        jobs_dir = self.settings.jobs_dir
        if jobs_dir.is_dir():
            for d in jobs_dir.iterdir():
                if d.is_dir() and d.name.isdigit() and int(d.name) not in running:
                    shutil.rmtree(d, ignore_errors=True)
        versions_root = self.settings.state_dir / "versions"
        if versions_root.is_dir():
            for d in versions_root.iterdir():
                if d.is_dir():
                    VersionDir(d).remove_temporaries()
        return stale

    async def restore_served(self, corpora: list[str] | tuple[str, ...]) -> list[str]:
        """At start: serve each corpus's recorded version (the engines load the base ones first).
        A recorded version that no longer passes its check is reported, and the base is served
        and recorded as served, so what /model shows is what answers."""
        notes = []
        for corpus in corpora:
            served = await self.served(corpus)
            self.serving[corpus] = 0
            if served.version == 0:
                continue
            try:
                await asyncio.to_thread(verify_checkpoint, served.path)
            except CheckpointError as exc:
                await self.store.set_served(corpus, 0)
                notes.append(f"{corpus} {served.label} cannot be served ({exc.problem}); serving the base checkpoint")
                log.error("%s", notes[-1])
                continue
            await self._serve(corpus, served.path, served.version)
            notes.append(f"{corpus}: serving {served.label} ({served.path})")
            log.info("%s", notes[-1])
        return notes

    async def sync_served(self) -> list[str]:
        """Serve what the database says is served, where another process (the CLI, another bot)
        changed it; returns the corpora that changed here."""
        changed = []
        for corpus, version in list(self.serving.items()):
            served = await self.served(corpus)
            if served.version == version or corpus in self.jobs or (corpus, served.version) in self._unservable:
                continue
            try:
                await asyncio.to_thread(verify_checkpoint, served.path)
            except CheckpointError as exc:
                self._unservable.add((corpus, served.version))
                log.error("%s %s was recorded as served elsewhere but cannot be served: %s", corpus, served.label, exc)
                continue
            await self._serve(corpus, served.path, served.version)
            log.info("%s: now serving %s (changed by another process)", corpus, served.label)
            changed.append(corpus)
        return changed

    def follow_served(self, every_s: float = SYNC_EVERY_S) -> None:
        """Keep serving what the database records, checking every ``every_s`` until :meth:`close`."""

        async def follow() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.sync_served()
                except Exception:
                    log.exception("could not check which checkpoint versions are served")
                try:
                    await self.drain()
                except Exception:
                    log.exception("could not take a fine-tune from the queue")

        self._following = asyncio.create_task(follow(), name="finetune-follow-served")

    # ---- starting a job -----------------------------------------------------------------

    async def start(
        self,
        corpus: str,
        started_by: str,
        minutes: float | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        force: bool = False,
        without_forgotten: bool = False,
    ) -> RunningJob:
        """Check the request, record the job and start its process; FinetuneRefused says why not.
        With ``force`` the result is served even if the guard (:mod:`bot.jobs.guard`) refuses it.
        ``without_forgotten`` starts from the newest version that never learned from a forgotten
        text instead of the served one (see :meth:`retrain_without_forgotten`)."""
        s = self.settings
        minutes = self._check_minutes(minutes)
        async with self._lock:
            if corpus in self.jobs:
                raise FinetuneRefused(f"a fine-tune of {corpus} is already running (job {self.jobs[corpus].id}); "
                                      "see /finetune status, or /finetune cancel it")
            here = await self._running_here()
            if len(here) >= s.max_running:
                others = ", ".join(f"{j.corpus} (job {j.id})" for j in here)
                raise FinetuneRefused(f"only {s.max_running} fine-tune may run at a time on this machine so replies "
                                      f"stay quick; running now: {others}")
            texts, sources, opted_out = await self.store.training_contributions(corpus)
            data = contributed_data(texts, corpus)
            try:
                check_enough(data, s.min_chars)
            except TooLittleText as exc:
                left_out = ""
                if opted_out:
                    left_out = f" ({opted_out} messages collected from people who opted out are left out)"
                raise FinetuneRefused(f"not enough text for {corpus}: {exc}{left_out}. "
                                      "Contribute more with /contribute, then try again.") from None
            parent = await self._clean_parent(corpus) if without_forgotten else await self.served(corpus)
            if not parent.path.is_file():
                raise FinetuneRefused(f"the served checkpoint of {corpus} ({parent.path}) is missing")
            config = {"replay": s.replay, **s.config, "minutes": minutes, "min_chars": s.min_chars}
            FinetuneConfig(**config)  # a bad override fails here, before anything is recorded
            params = {"minutes": minutes, "parent_version": parent.version, "parent_path": str(parent.path),
                      "contributions": len(texts), "chars": len(data.text), "config": config, "force": force,
                      "max_corpus_rise": s.max_corpus_rise, "without_forgotten": without_forgotten}
            try:
                job_id = await self.store.create_job(corpus, started_by, params, guild_id, channel_id)
            except JobConflict as exc:
                raise FinetuneRefused(f"{exc}; see /finetune status") from None
            job = RunningJob(job_id, corpus, started_by, parent, len(texts), len(data.text), minutes, channel_id,
                             force, sources=sources, without_forgotten=without_forgotten)
            jobdir = s.jobs_dir / str(job_id)
            try:
                jobdir.mkdir(parents=True, exist_ok=True)
                JobSpec(corpus, str(parent.path), config, s.nice, s.threads).write(jobdir, texts)
                job.process = await JobProcess.start(jobdir, s.threads, list(s.command) if s.command else None)
            except Exception as exc:
                await self.store.finish_job(job_id, FAILED, f"could not start the training process: {exc}")
                shutil.rmtree(jobdir, ignore_errors=True)
                raise FinetuneRefused(f"could not start the training process: {exc}") from None
            self.jobs[corpus] = job
            job.task = asyncio.create_task(self._supervise(job, jobdir), name=f"finetune-{corpus}-{job_id}")
            log.info("fine-tuning job %d started for %s by %s (pid %d)", job_id, corpus, started_by,
                     job.process.pid)
            return job

    # ---- the queue (bot.store.queue) ----------------------------------------------------

    async def submit(
        self,
        corpus: str,
        started_by: str,
        minutes: float | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        force: bool = False,
    ) -> RunningJob | Queued:
        """Start a fine-tune when this machine has room, else queue it for the first process that
        has; FinetuneRefused for what no waiting would mend (minutes out of range, too little text, a
        training of ``corpus`` already queued by anyone, in any process).
        Older queued jobs go first: the new one joins the queue, then the queue is drained."""
        minutes = self._check_minutes(minutes)
        texts, _, _ = await self.store.training_contributions(corpus)
        try:
            check_enough(contributed_data(texts, corpus), self.settings.min_chars)
        except TooLittleText as exc:
            raise FinetuneRefused(f"not enough text for {corpus}: {exc}") from None
        try:
            entry = await self.queue.put(corpus, started_by, guild_id, channel_id, minutes, force)
        except AlreadyQueued as exc:
            raise FinetuneRefused(f"a training of {corpus} is already in the queue (job {exc.entry.id}); "
                                  "see /finetune status") from None
        await self.drain(None if self.serves_queue else entry.id)
        if corpus in self.jobs and await self.queue.get(entry.id) is None:
            return self.jobs[corpus]
        waiting = await self.queue.waiting()
        return Queued(entry.id, corpus, sum(1 for w in waiting if w.id < entry.id))

    async def drain(self, only: int | None = None) -> list[RunningJob]:
        """Start queued jobs, oldest first, while this machine has room; returns those started here.
        ``only``: take that queue entry alone, if it is still waiting (what a CLI process submitted)."""
        started: list[RunningJob] = []
        while not self._closing and len(await self._running_here()) < self.settings.max_running:
            entry = await self.queue.claim(skip=set(self.jobs), only=only)
            if entry is None:
                break
            try:
                job = await self.start(entry.corpus, entry.started_by, entry.minutes, entry.guild_id,
                                       entry.channel_id, entry.force)
            except FinetuneRefused as exc:
                if await self.store.running_job(entry.corpus) is not None or "at a time" in str(exc):
                    await self.queue.release(entry.id)  # its corpus (or this machine) is busy: it waits on
                    break
                await self.queue.done(entry.id)
                await self._record_unstartable(entry, str(exc))
                continue
            except Exception:
                await self.queue.release(entry.id)  # not left claimed by a process that lives on
                raise
            await self.queue.done(entry.id)
            started.append(job)
            if self.on_start is not None:
                await self.on_start(job)
        return started

    async def _drain_logged(self) -> None:
        try:
            await self.drain()
        except Exception:
            log.exception("could not take a fine-tune from the queue")

    async def _record_unstartable(self, entry: QueuedJob, why: str) -> None:
        """A queued job that could not start: recorded as a failed job, so /persona info shows why."""
        log.warning("queued fine-tune of %s (queue entry %d) could not start: %s", entry.corpus, entry.id, why)
        with contextlib.suppress(JobConflict):
            job_id = await self.store.create_job(entry.corpus, entry.started_by, {"minutes": entry.minutes or 0},
                                                 entry.guild_id, entry.channel_id)
            await self.store.finish_job(job_id, FAILED, f"could not start: {why}")

    async def _running_here(self) -> list[JobRow]:
        """Jobs running on this machine, in any process sharing the store (the bound is per machine)."""
        host = socket.gethostname()
        return [j for j in await self.store.running_jobs() if j.owner_host in (host, None)]

    async def queued(self, corpus: str) -> Queued | None:
        """The queue entry waiting for ``corpus``, if any."""
        waiting = await self.queue.waiting()
        mine = [w for w in waiting if w.corpus == corpus]
        if not mine:
            return None
        return Queued(mine[0].id, corpus, sum(1 for w in waiting if w.id < mine[0].id))

    async def unqueue(self, corpus: str) -> int:
        return await self.queue.drop(corpus)

    def drop(self, corpus: str) -> None:
        """Forget what this process served for ``corpus`` (a deleted persona)."""
        self.serving.pop(corpus, None)
        self._unservable = {u for u in self._unservable if u[0] != corpus}

    def scrub_learned(self, contribution_ids: set[int]) -> list[Path]:
        """Take deleted contributions out of every kept version's learned texts (``.learned.json``),
        so grounding stops quoting them; returns the files changed. Blocking."""
        changed = []
        for path in sorted((self.settings.state_dir / "versions").glob("*/*.learned.json")):
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            kept = [e for e in entries if not (isinstance(e, dict) and e.get("id") in contribution_ids)]
            if len(kept) != len(entries):
                atomic_write_bytes(path, json.dumps(kept).encode())
                changed.append(path)
        return changed

    async def scrub(self, contribution_ids: set[int], reground: Callable[[str], None]) -> list[str]:
        """:meth:`scrub_learned`, then ``reground`` (blocking, e.g. ``Models.reground``) each corpus whose
        kept texts changed, so what is served stops quoting them at once; returns those corpora."""
        changed = await asyncio.to_thread(self.scrub_learned, contribution_ids)
        corpora = sorted({p.parent.name for p in changed})
        for corpus in corpora:
            await asyncio.to_thread(reground, corpus)
        return corpora

    def _check_minutes(self, minutes: float | None) -> float:
        s = self.settings
        minutes = s.default_minutes if minutes is None else float(minutes)
        if not 0 < minutes <= s.max_minutes:
            raise FinetuneRefused(f"minutes must be more than 0 and at most {s.max_minutes:g}; got {minutes:g}")
        return minutes

    # ---- while it runs ------------------------------------------------------------------

    def running(self, corpus: str) -> RunningJob | None:
        return self.jobs.get(corpus)

    async def cancel(self, corpus: str, reason: str = "cancelled by an admin") -> RunningJob | None:
        """Ask the job for ``corpus`` to stop; it ends as cancelled and changes nothing."""
        job = self.jobs.get(corpus)
        if job is None or job.process is None:
            return None
        job.cancel_reason = job.cancel_reason or reason
        job.phase = "cancelling"
        await job.process.cancel()
        return job

    async def wait(self, job: RunningJob) -> JobOutcome:
        assert job.task is not None
        return await asyncio.shield(job.task)

    async def close(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """At shutdown: stop following the database, cancel every job and wait a little for each to stop,
        then kill it."""
        self._closing = True
        if self._following is not None:
            self._following.cancel()
            self._following = None
        if self._drains:  # a drain under way stops at its next entry; a job it started is cancelled below
            await asyncio.wait(set(self._drains), timeout=grace_s)
        jobs = list(self.jobs.values())
        for job in jobs:
            await self.cancel(job.corpus, "the bot shut down")
        for job in jobs:
            if job.task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(job.task), grace_s)
            except (asyncio.TimeoutError, Exception):
                if job.process is not None:
                    job.process.kill()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(job.task, 5)

    async def _supervise(self, job: RunningJob, jobdir: Path) -> JobOutcome:
        proc = job.process
        assert proc is not None
        final: dict | None = None
        last_saved = 0.0
        try:
            async for event in proc.events():
                kind = event["event"]
                if kind == "started":
                    with contextlib.suppress(Exception):
                        await self.store.set_progress(job.id, {"pid": event["pid"]})
                elif kind == "phase":
                    job.phase = "cancelling" if job.cancel_reason else event["phase"]
                elif kind == "progress":
                    job.progress = {k: v for k, v in event.items() if k != "event"} | {"pid": proc.pid}
                    if time.monotonic() - last_saved > PROGRESS_SAVE_S:
                        last_saved = time.monotonic()
                        with contextlib.suppress(Exception):
                            await self.store.set_progress(job.id, job.progress)
                elif kind in ("done", "cancelled", "refused", "error"):
                    final = event
            code = await proc.wait()
            if final is not None and final["event"] == "done" and code == 0:
                job.phase = "checking the new checkpoint"
                outcome = await self._install(job, jobdir, FinetuneReport.from_dict(final["report"]))
            elif (final is not None and final["event"] == "cancelled") or (job.cancel_reason and code >= 0):
                outcome = JobOutcome(job.id, job.corpus, CANCELLED, error=job.cancel_reason)
                await self.store.finish_job(job.id, CANCELLED, job.cancel_reason)
            else:
                if final is not None and final["event"] in ("refused", "error"):
                    why = final["message"]
                else:
                    why = describe_exit(code)
                    tail = proc.stderr_tail()
                    if tail and code > 0:
                        why += f": {tail.splitlines()[-1]}"
                outcome = JobOutcome(job.id, job.corpus, FAILED, error=why)
                await self.store.finish_job(job.id, FAILED, why)
        except asyncio.CancelledError:
            proc.kill()
            with contextlib.suppress(Exception):
                await self.store.finish_job(job.id, FAILED, "the bot stopped while the job ran")
            raise
        except Exception as exc:
            log.exception("fine-tuning job %d failed", job.id)
            proc.kill()
            outcome = JobOutcome(job.id, job.corpus, FAILED, error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.store.finish_job(job.id, FAILED, outcome.error)
        finally:
            self.jobs.pop(job.corpus, None)
            shutil.rmtree(jobdir, ignore_errors=True)
            if not self._closing and self.serves_queue:
                drain = asyncio.get_running_loop().create_task(self._drain_logged(), name="finetune-drain")
                self._drains.add(drain)
                drain.add_done_callback(self._drains.discard)
        log.info("fine-tuning job %d for %s ended: %s %s", job.id, job.corpus, outcome.state, outcome.error or "")
        return outcome

    # ---- installing the result ----------------------------------------------------------

    async def _install(self, job: RunningJob, jobdir: Path, report: FinetuneReport) -> JobOutcome:
        """The guard, then: new version number, atomic copy, check on that file, record as served,
        swap engines. A result the guard refuses is not made a version unless the job was forced."""
        verdict = judge(report, self.settings.max_corpus_rise, keeps_corpus=parse_key(job.corpus) is None)
        if not verdict.ok and not job.force:
            await self.store.finish_job(job.id, FAILED, f"{REFUSED}: {verdict.text()}", report.to_dict())
            return JobOutcome(job.id, job.corpus, REFUSED, report=report, error=verdict.text(), verdict=verdict)
        guard = {"max_corpus_rise": self.settings.max_corpus_rise, "passed": verdict.ok, "forced": job.force,
                 "reasons": list(verdict.reasons), "min_heldout_chars": report.min_heldout_chars}

        def row(number: int, path: Path) -> VersionRow:
            return VersionRow(
                corpus=job.corpus, version=number, path=str(path), parent_version=job.parent.version or None,
                parent_path=str(job.parent.path), job_id=job.id, started_by=job.started_by,
                contributions=job.contributions, train_chars=report.train_chars, heldout_chars=report.heldout_chars,
                losses={"before": asdict(report.before), "after": asdict(report.after),
                        "corpus_heldout_chars": report.corpus_heldout_chars, "corpus_note": report.corpus_note,
                        "guard": guard},
                created=utc_now(), served=True, pruned=False,
            )

        try:
            learned = [{"id": src.contribution_id, "text": text}
                       for src, text in zip(job.sources, json.loads((jobdir / TEXTS).read_text()), strict=False)]
            served = await self._add_version(job.corpus, jobdir / STAGED, job.parent, row, job.id, report.to_dict(),
                                             job.sources, learned)
        except CheckpointError as exc:
            why = f"the new checkpoint failed its check and was not served: {exc.problem}"
            await self.store.finish_job(job.id, FAILED, why, report.to_dict())
            return JobOutcome(job.id, job.corpus, FAILED, report=report, error=why, verdict=verdict)
        except NotServed as exc:
            return JobOutcome(job.id, job.corpus, FAILED, version=exc.version, report=report, error=str(exc),
                              verdict=verdict)
        if job.without_forgotten:
            await self._drop_forgotten(job.corpus)
        return JobOutcome(job.id, job.corpus, DONE, version=served.version, report=report, verdict=verdict,
                          forced=job.force and not verdict.ok)

    async def _add_version(
        self,
        corpus: str,
        source: Path,
        parent: Served,
        row: Callable[[int, Path], VersionRow],
        job_id: int | None = None,
        report: dict | None = None,
        sources: list[Source] | None = None,
        learned: list[dict] | None = None,
    ) -> Served:
        """Make ``source`` the next version and serve it: the one path from a checkpoint file to a
        served version, for a finished job and an imported file alike.

        The file is copied in under a new number and checked on that very copy (a bad copy is
        deleted and its CheckpointError raised), then recorded as served, with its job marked done,
        in one transaction; only then is the live engine swapped. If the engine cannot load it,
        the parent is recorded as served again and NotServed is raised: the version stays on
        record (the database says what happened) but nothing serves it.
        """
        vdir = self.versions_dir(corpus)
        number = max([await self.store.max_version(corpus), *vdir.on_disk(), 0]) + 1
        path = await asyncio.to_thread(vdir.install, source, number)
        try:
            await asyncio.to_thread(verify_checkpoint, path)
            if learned:  # before it is served: grounding and the lexicon read it at load (bot.core.engines)
                atomic_write_bytes(sibling(path, ".learned.json"), json.dumps(learned).encode())
        except CheckpointError:
            vdir.remove(number)
            raise
        try:
            await self.store.record_version(job_id, row(number, path), report, sources)
        except BaseException:
            vdir.remove(number)  # never recorded, so never served: do not leave it lying around
            raise
        served = Served(corpus, number, path)
        try:
            await self._serve(corpus, path, number)
        except Exception as exc:
            log.exception("could not serve %s %s", corpus, served.label)
            await self.store.set_served(corpus, parent.version)
            raise NotServed(f"{served.label} was saved but could not be loaded for serving ({exc}); still serving "
                            f"{parent.label}", number) from exc
        await self._prune(corpus)
        return served

    async def _serve(self, corpus: str, path: Path, version: int) -> None:
        if self.on_serve is not None:
            await self.on_serve(corpus, path, version)
        self.serving[corpus] = version

    async def _prune(self, corpus: str) -> list[int]:
        """Delete version files beyond the newest ``keep_versions`` (never the served one)."""
        rows = await self.store.versions(corpus)
        served = {r.version for r in rows if r.served}
        doomed = versions_to_prune([r.version for r in rows], self.settings.keep_versions, served)
        if doomed:
            await self.store.mark_pruned(corpus, doomed)
            vdir = self.versions_dir(corpus)
            for n in doomed:
                vdir.remove(n)
        return doomed

    async def import_checkpoint(self, corpus: str, source: Path, started_by: str) -> Served:
        """Add a checkpoint made elsewhere (``charbot finetune --out`` on a bigger machine) as the
        next version and serve it; it passes the same check as one made here."""
        if corpus in self.jobs:
            raise FinetuneRefused(f"a fine-tune of {corpus} is running; cancel it first")
        try:
            ck, _ = await asyncio.to_thread(verify_checkpoint, source)
        except CheckpointError as exc:
            raise FinetuneRefused(f"{source} cannot be served: {exc.problem}") from None
        parent = await self.served(corpus)
        made = ck.info.get("finetune") or {}

        def row(number: int, path: Path) -> VersionRow:
            return VersionRow(
                corpus=corpus, version=number, path=str(path), parent_version=parent.version or None,
                parent_path=str(parent.path), job_id=None, started_by=started_by, contributions=0,
                train_chars=int(made.get("train_chars") or 0), heldout_chars=int(made.get("heldout_chars") or 0),
                losses={k: made[k] for k in ("before", "after", "corpus_heldout_chars", "corpus_note") if k in made}
                | {"imported_from": str(source)},
                created=utc_now(), served=True, pruned=False,
            )

        try:
            return await self._add_version(corpus, source, parent, row)
        except CheckpointError as exc:
            raise FinetuneRefused(f"the copy of {source} failed its check: {exc.problem}") from None

    # ---- forgotten texts (issue 17) ------------------------------------------------------

    async def _clean_parent(self, corpus: str) -> Served:
        """The newest kept version whose provenance has no forgotten text (0: the base checkpoint)."""
        clean = await self.store.last_clean(corpus)
        if clean == 0:
            return Served(corpus, 0, Path(self.base_checkpoint(corpus)))
        row = await self.store.version(corpus, clean)
        assert row is not None
        return Served(corpus, clean, Path(row.path))

    async def retrain_without_forgotten(
        self,
        corpus: str,
        started_by: str,
        minutes: float | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        force: bool = False,
    ) -> RunningJob | Served:
        """Take the texts /forget deleted out of the served model: a fine-tune on the
        contributions that remain, starting from the newest version that never saw the deleted
        ones, through the same job, checks and guard as any fine-tune (:meth:`start`); or, when
        too little text remains to fine-tune, a rollback to that version. Either way the other
        kept versions that learned from deleted texts are then deleted, so no rollback brings
        them back. Returns the job, or what is served after the rollback."""
        if not await self.store.forgotten(corpus):
            raise FinetuneRefused(f"no kept version of {corpus} learned from texts deleted with /forget; "
                                  "nothing to retrain")
        texts, _, _ = await self.store.training_contributions(corpus)
        try:
            check_enough(contributed_data(texts, corpus), self.settings.min_chars)
        except TooLittleText:
            if corpus in self.jobs:
                raise FinetuneRefused(f"a fine-tune of {corpus} is running; cancel it first") from None
            clean = await self._clean_parent(corpus)
            if (await self.served(corpus)).version != clean.version:
                await self.rollback(corpus, clean.version)
            await self._drop_forgotten(corpus)
            return clean
        return await self.start(corpus, started_by, minutes, guild_id, channel_id, force, without_forgotten=True)

    async def _drop_forgotten(self, corpus: str) -> list[int]:
        """Delete the kept versions, other than the served one, that learned from forgotten texts."""
        doomed = [f.version for f in await self.store.forgotten(corpus) if not f.served]
        if doomed:
            await self.store.mark_pruned(corpus, doomed)
            vdir = self.versions_dir(corpus)
            for n in doomed:
                vdir.remove(n)
            log.info("%s: deleted versions %s, which learned from forgotten texts", corpus, doomed)
        return doomed

    # ---- rollback -----------------------------------------------------------------------

    async def rollback(self, corpus: str, version: int | None = None) -> tuple[Served, Served]:
        """Serve an earlier version (default: the served one's parent; 0 = the base checkpoint).
        Returns (before, after). The target is checked before anything changes."""
        if corpus in self.jobs:
            raise FinetuneRefused(f"a fine-tune of {corpus} is running; cancel it first with /finetune cancel")
        current = await self.served(corpus)
        if version is None:
            if current.version == 0:
                raise FinetuneRefused(f"{corpus} already serves its base checkpoint; there is nothing to roll back")
            row = await self.store.version(corpus, current.version)
            version = (row.parent_version or 0) if row else 0
        if version < 0:
            raise FinetuneRefused("version numbers are 0 (the base checkpoint) or more")
        if version == current.version:
            raise FinetuneRefused(f"{corpus} already serves {current.label}")
        if version == 0:
            target = Served(corpus, 0, Path(self.base_checkpoint(corpus)))
        else:
            row = await self.store.version(corpus, version)
            if row is None or row.pruned:
                have = ", ".join(f"v{r.version}" for r in await self.store.versions(corpus)) or "none"
                why = "was deleted to keep disk use down" if row else "does not exist"
                raise FinetuneRefused(f"{corpus} v{version} {why}; available: base (0), {have}")
            target = Served(corpus, version, Path(row.path))
        try:
            await asyncio.to_thread(verify_checkpoint, target.path)
        except CheckpointError as exc:
            raise FinetuneRefused(f"{corpus} {target.label} cannot be served: {exc}") from None
        await self.store.set_served(corpus, version)
        try:
            await self._serve(corpus, target.path, version)
        except Exception:
            await self.store.set_served(corpus, current.version)
            raise
        log.info("%s rolled back from %s to %s", corpus, current.label, target.label)
        return current, target
