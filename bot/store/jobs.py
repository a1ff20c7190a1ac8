"""The fine-tuning tables: jobs and the checkpoint versions they made, and which one is served.

Kept apart from the store's everyday queries (:mod:`bot.store.base`) so the two can change
independently; it uses only :class:`~bot.store.base.Store`'s primitives (``fetchall``,
``fetchone``, ``write``), so it works on either backend.
The database is the one record of which version is served: a version file on disk without
a row here is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bot.store.base import Store, utc_now

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
# How a job that the guard turned down ends (bot.jobs.guard). The jobs table records it as
# failed, with an error that starts "refused:" and the report, so no migration is needed.
REFUSED = "refused"


class JobConflict(Exception):
    """A job for this corpus is already running."""


@dataclass(frozen=True)
class JobRow:
    id: int
    corpus: str
    state: str
    started_by: str
    guild_id: int | None
    channel_id: int | None
    owner_pid: int | None
    owner_host: str | None
    params: dict
    created: str
    finished: str | None
    progress: dict | None
    report: dict | None
    version: int | None
    error: str | None


@dataclass(frozen=True)
class VersionRow:
    corpus: str
    version: int
    path: str
    parent_version: int | None
    parent_path: str
    job_id: int | None
    started_by: str
    contributions: int
    train_chars: int
    heldout_chars: int
    losses: dict
    created: str
    served: bool
    pruned: bool


@dataclass(frozen=True)
class Source:
    """One contribution a version learned from, as its provenance keeps it: ids and a digest."""

    contribution_id: int
    guild_id: int
    user_id: int
    digest: str


def digest(text: str) -> str:
    """SHA-256 of a contribution's text: says which text a version saw without keeping it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Forgotten:
    """A kept version still carrying what it learned from texts that /forget has deleted since."""

    corpus: str
    version: int
    served: bool
    texts: int
    members: int


_JOB_COLUMNS = ("id, corpus, state, started_by, guild_id, channel_id, owner_pid, owner_host, params, created, "
                "finished, progress, report, version, error")
_VERSION_COLUMNS = ("corpus, version, path, parent_version, parent_path, job_id, started_by, contributions, "
                    "train_chars, heldout_chars, losses, created, served, pruned")


def _json(raw: str | None) -> dict | None:
    return None if raw is None else json.loads(raw)


def _job(row: tuple) -> JobRow:
    r = list(row)
    r[8], r[11], r[12] = json.loads(r[8]), _json(r[11]), _json(r[12])
    return JobRow(*r)


def _version(row: tuple) -> VersionRow:
    r = list(row)
    r[10] = json.loads(r[10])
    r[12], r[13] = bool(r[12]), bool(r[13])
    return VersionRow(*r)


OVERDUE_GRACE_S = 15 * 60  # beyond a job's minutes: the time to check and install its result, generously


def _overdue(job: JobRow, now: datetime | None = None) -> bool:
    """Whether a job is past its time budget (``params["minutes"]``) plus the grace: its holder is gone."""
    try:
        started = datetime.strptime(job.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        budget_s = float(job.params.get("minutes") or 0) * 60
    except (TypeError, ValueError):
        return False
    return (now or datetime.now(timezone.utc)) > started + timedelta(seconds=budget_s + OVERDUE_GRACE_S)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FinetuneStore:
    """Queries on the ``jobs`` and ``checkpoint_versions`` tables of an open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- jobs -------------------------------------------------------------------------

    async def create_job(
        self, corpus: str, started_by: str, params: dict, guild_id: int | None = None, channel_id: int | None = None
    ) -> int:
        """Record a running job; JobConflict if one already runs for ``corpus`` (in any process).

        The running row is the lock: the partial unique index lets one exist per corpus, whichever
        process or machine shares the database. A lock whose holder died (a process on this
        machine that is gone: killed, crashed) is released here, by marking its job failed, so a
        dead bot never blocks the next job until someone restarts it.
        """
        try:
            return await self._insert_job(corpus, started_by, params, guild_id, channel_id)
        except JobConflict:
            running = await self.running_job(corpus)
            if running is None or not await self._release_if_dead(running):
                raise
        return await self._insert_job(corpus, started_by, params, guild_id, channel_id)

    async def _insert_job(
        self, corpus: str, started_by: str, params: dict, guild_id: int | None, channel_id: int | None
    ) -> int:
        (cur,) = await self.store.write([(
            # The partial unique index one_running_job_per_corpus turns a second running job into "nothing
            # inserted", on SQLite and on PostgreSQL alike (where a concurrent one waits for the first to end).
            "INSERT INTO jobs (corpus, state, started_by, guild_id, channel_id, owner_pid, owner_host, params, "
            "created) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (corpus, started_by, guild_id, channel_id, os.getpid(), socket.gethostname(), json.dumps(params),
             utc_now()),
        )])
        if cur.rowcount == 0:
            running = await self.running_job(corpus)
            who = f" (job {running.id}, started by {running.started_by})" if running else ""
            raise JobConflict(f"a fine-tuning job for {corpus} is already running{who}")
        return int(cur.lastrowid)

    async def job(self, job_id: int) -> JobRow | None:
        row = await self.store.fetchone(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    async def running_job(self, corpus: str) -> JobRow | None:
        row = await self.store.fetchone(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE corpus = ? AND state = 'running'", (corpus,)
        )
        return None if row is None else _job(row)

    async def running_jobs(self) -> list[JobRow]:
        rows = await self.store.fetchall(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id")
        return [_job(r) for r in rows]

    async def recent_jobs(self, corpus: str | None = None, limit: int = 5) -> list[JobRow]:
        where, params = ("WHERE corpus = ?", (corpus,)) if corpus else ("", ())
        rows = await self.store.fetchall(
            f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [_job(r) for r in rows]

    async def set_progress(self, job_id: int, progress: dict) -> None:
        await self.store.write([("UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                                  (json.dumps(progress), job_id))])

    async def finish_job(self, job_id: int, state: str, error: str | None = None, report: dict | None = None) -> None:
        """End a running job as failed or cancelled (success goes through :meth:`record_version`)."""
        if state not in (FAILED, CANCELLED):
            raise ValueError("finish_job records failures and cancellations only")
        await self.store.write([(
            "UPDATE jobs SET state = ?, finished = ?, error = ?, report = COALESCE(?, report) "
            "WHERE id = ? AND state = 'running'",
            (state, utc_now(), error, None if report is None else json.dumps(report), job_id),
        )])

    async def fail_interrupted(self) -> list[JobRow]:
        """Mark failed the running jobs whose owning process is gone (a crash or a kill); a job a
        live process on this machine still owns (``charbot finetune`` or another bot process
        sharing the database) is left alone."""
        return [job for job in await self.running_jobs() if await self._release_if_dead(job, at_start=True)]

    async def _release_if_dead(self, job: JobRow, at_start: bool = False) -> bool:
        """Mark ``job`` failed if its owner is a process of this machine that no longer runs.

        At start (``at_start``) a job recorded under this very process id is a previous life's
        (the id was reused); later it is this process's own, running job. A job owned by another
        machine (sharing a PostgreSQL database) cannot be checked from here, its pid means nothing
        on this one; it is released only once overdue: past its own time budget plus
        :data:`OVERDUE_GRACE_S`, which no live job reaches (every job has a budget).
        """
        same_host = job.owner_host == socket.gethostname()
        if not same_host and job.owner_host and not _overdue(job):
            return False
        mine = job.owner_pid == os.getpid()
        if same_host and job.owner_pid is not None and (_pid_alive(job.owner_pid) and not (mine and at_start)):
            return False
        where = f"process {job.owner_pid}" if job.owner_pid else "its process"
        (cur,) = await self.store.write([(
            "UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ? AND state = 'running'",
            (utc_now(), f"interrupted: {where} stopped while the job ran (crash, kill or restart); "
                        "the served checkpoint was not changed", job.id),
        )])
        return cur.rowcount > 0

    # ---- versions ---------------------------------------------------------------------

    async def record_version(
        self, job_id: int | None, row: VersionRow, report: dict | None = None, sources: list[Source] | None = None
    ) -> None:
        """Add a version and serve it, and mark its job done, in one transaction.

        Its provenance is its parent's (what the parent learned stays in the weights) plus
        ``sources``, the contributions this job trained on."""
        statements = [
            ("UPDATE checkpoint_versions SET served = 0 WHERE corpus = ? AND served = 1", (row.corpus,)),
            (f"INSERT INTO checkpoint_versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 14)})",
             (row.corpus, row.version, row.path, row.parent_version, row.parent_path, row.job_id, row.started_by,
              row.contributions, row.train_chars, row.heldout_chars, json.dumps(row.losses), row.created,
              int(row.served), int(row.pruned))),
        ]
        if row.parent_version:
            statements.append((
                "INSERT INTO version_provenance (corpus, version, contribution_id, guild_id, user_id, digest) "
                "SELECT corpus, ?, contribution_id, guild_id, user_id, digest FROM version_provenance "
                "WHERE corpus = ? AND version = ?",
                (row.version, row.corpus, row.parent_version),
            ))
        statements += [(
            "INSERT OR IGNORE INTO version_provenance (corpus, version, contribution_id, guild_id, user_id, digest) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row.corpus, row.version, s.contribution_id, s.guild_id, s.user_id, s.digest),
        ) for s in sources or ()]
        if job_id is not None:
            statements.append((
                "UPDATE jobs SET state = 'done', finished = ?, version = ?, report = ? WHERE id = ?",
                (utc_now(), row.version, None if report is None else json.dumps(report), job_id),
            ))
        await self.store.write(statements)

    async def provenance(self, corpus: str, version: int) -> list[Source]:
        """The contributions version ``version`` learned from, its ancestors' included."""
        rows = await self.store.fetchall(
            "SELECT contribution_id, guild_id, user_id, digest FROM version_provenance "
            "WHERE corpus = ? AND version = ? ORDER BY contribution_id", (corpus, version),
        )
        return [Source(int(c), int(g), int(u), str(d)) for c, g, u, d in rows]

    async def forgotten(self, corpus: str | None = None) -> list[Forgotten]:
        """Kept versions that learned from contributions deleted since (by /forget): what an
        admin should retrain without, or roll back past."""
        extra, params = ("", ()) if corpus is None else (" AND v.corpus = ?", (corpus,))
        rows = await self.store.fetchall(
            "SELECT v.corpus, v.version, v.served, COUNT(*), COUNT(DISTINCT p.user_id) "
            "FROM version_provenance p JOIN checkpoint_versions v ON v.corpus = p.corpus AND v.version = p.version "
            "WHERE v.pruned = 0 AND NOT EXISTS (SELECT 1 FROM contributions c WHERE c.id = p.contribution_id)"
            f"{extra} GROUP BY v.corpus, v.version, v.served ORDER BY v.corpus, v.version", params,
        )
        return [Forgotten(str(c), int(v), bool(s), int(n), int(m)) for c, v, s, n, m in rows]

    async def last_clean(self, corpus: str) -> int:
        """The newest kept version that never learned from a deleted contribution (0: the base
        checkpoint), the one to roll back to after a /forget."""
        row = await self.store.fetchone(
            "SELECT MAX(v.version) FROM checkpoint_versions v WHERE v.corpus = ? AND v.pruned = 0 AND NOT EXISTS ("
            "SELECT 1 FROM version_provenance p WHERE p.corpus = v.corpus AND p.version = v.version "
            "AND NOT EXISTS (SELECT 1 FROM contributions c WHERE c.id = p.contribution_id))", (corpus,),
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def versions(self, corpus: str, include_pruned: bool = False) -> list[VersionRow]:
        extra = "" if include_pruned else " AND pruned = 0"
        rows = await self.store.fetchall(
            f"SELECT {_VERSION_COLUMNS} FROM checkpoint_versions WHERE corpus = ?{extra} ORDER BY version", (corpus,)
        )
        return [_version(r) for r in rows]

    async def version(self, corpus: str, number: int) -> VersionRow | None:
        row = await self.store.fetchone(
            f"SELECT {_VERSION_COLUMNS} FROM checkpoint_versions WHERE corpus = ? AND version = ?", (corpus, number)
        )
        return None if row is None else _version(row)

    async def served(self, corpus: str) -> VersionRow | None:
        """The version served for ``corpus``; None means the base checkpoint."""
        row = await self.store.fetchone(
            f"SELECT {_VERSION_COLUMNS} FROM checkpoint_versions WHERE corpus = ? AND served = 1", (corpus,)
        )
        return None if row is None else _version(row)

    async def max_version(self, corpus: str) -> int:
        row = await self.store.fetchone("SELECT MAX(version) FROM checkpoint_versions WHERE corpus = ?", (corpus,))
        return int(row[0]) if row and row[0] is not None else 0

    async def set_served(self, corpus: str, number: int) -> None:
        """Serve version ``number`` (0: the base checkpoint) from now on."""
        statements = [("UPDATE checkpoint_versions SET served = 0 WHERE corpus = ? AND served = 1", (corpus,))]
        if number:
            statements.append(("UPDATE checkpoint_versions SET served = 1 WHERE corpus = ? AND version = ?",
                               (corpus, number)))
        await self.store.write(statements)

    async def mark_pruned(self, corpus: str, numbers: list[int]) -> None:
        await self.store.write([
            ("UPDATE checkpoint_versions SET pruned = 1 WHERE corpus = ? AND version = ? AND served = 0", (corpus, n))
            for n in numbers
        ])

    # ---- contributions ----------------------------------------------------------------

    async def training_texts(self, corpus: str) -> tuple[list[str], int]:
        """The contributions to learn from, oldest first, and how many were left out: messages a
        listening channel collected from people who have opted out since (what they sent
        themselves with /contribute stays in, as /optout tells them)."""
        texts, _sources, left_out = await self.training_contributions(corpus)
        return texts, left_out

    async def training_contributions(self, corpus: str) -> tuple[list[str], list[Source], int]:
        """As :meth:`training_texts`, with the provenance of each text (same order)."""
        rows = await self.store.fetchall(
            "SELECT c.text, c.source = 'listen' AND EXISTS (SELECT 1 FROM opt_outs o "
            "WHERE o.guild_id = c.guild_id AND o.user_id = c.user_id), c.id, c.guild_id, c.user_id "
            "FROM contributions c WHERE c.corpus = ? ORDER BY c.id",
            (corpus,),
        )
        kept = [(str(t), Source(int(i), int(g), int(u), digest(str(t)))) for t, out, i, g, u in rows if not out]
        return [t for t, _ in kept], [s for _, s in kept], sum(1 for r in rows if r[1])
