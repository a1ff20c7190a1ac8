"""The queue of fine-tuning jobs waiting for room: a table every process sharing the store can drain.

A job waits here when its machine already runs as many jobs as it may (one by default). Any bot
or CLI process with room claims the oldest waiting entry with one conditional UPDATE, which only
one claimant can win on SQLite and on PostgreSQL alike, starts it, and deletes the entry. A
process that dies holding a claim leaves the entry claimed; :meth:`JobQueue.release_dead` (run at
start) hands such entries back. A table in the store we already have beats a queue library here:
the libraries that fit (procrastinate, pgqueuer) run on PostgreSQL only, and charbot's default
store is SQLite.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bot.store.base import Store, StoreError, utc_now


@dataclass(frozen=True)
class QueuedJob:
    id: int
    corpus: str
    started_by: str
    guild_id: int | None
    channel_id: int | None
    minutes: float | None
    force: bool
    created: str
    claimed_by: str | None


PUT_ATTEMPTS = 3  # an entry that keeps leaving just as another takes its place is not waited on forever
_COLUMNS = "id, corpus, started_by, guild_id, channel_id, minutes, forced, created, claimed_by"


def _row(r: tuple) -> QueuedJob:
    return QueuedJob(int(r[0]), str(r[1]), str(r[2]), r[3], r[4], None if r[5] is None else float(r[5]), bool(r[6]),
                     str(r[7]), r[8])


def claimant() -> str:
    """Who holds a claim: this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class AlreadyQueued(Exception):
    """``corpus`` already has an entry in the queue (waiting, or being started): a second would train
    the same text again. ``entry`` is that one."""

    def __init__(self, entry: QueuedJob) -> None:
        super().__init__(f"{entry.corpus} already has a training in the queue (entry {entry.id})")
        self.entry = entry


class JobQueue:
    """Queries on the ``job_queue`` table of an open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, corpus: str, started_by: str, guild_id: int | None, channel_id: int | None,
                  minutes: float | None, force: bool) -> QueuedJob:
        """Queue a job; AlreadyQueued when ``corpus`` has an entry already (checked by the table's unique
        index, so of two processes queueing the same corpus at once, one does)."""
        for _ in range(PUT_ATTEMPTS):
            (cur,) = await self.store.write([(
                "INSERT INTO job_queue (corpus, started_by, guild_id, channel_id, minutes, forced, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (corpus, started_by, guild_id, channel_id, minutes, int(force), utc_now()),
            )])
            if cur.rowcount:
                break
            entry = await self.of_corpus(corpus)
            if entry is not None:
                raise AlreadyQueued(entry)
            # the entry in the way left the queue between the two statements: try again
        else:
            raise StoreError(f"could not queue a training of {corpus}: the queue kept changing under it")
        got = await self.get(int(cur.lastrowid))
        assert got is not None
        return got

    async def get(self, entry_id: int) -> QueuedJob | None:
        row = await self.store.fetchone(f"SELECT {_COLUMNS} FROM job_queue WHERE id = ?", (entry_id,))
        return None if row is None else _row(row)

    async def waiting(self) -> list[QueuedJob]:
        """Every entry not yet claimed, oldest first."""
        rows = await self.store.fetchall(f"SELECT {_COLUMNS} FROM job_queue WHERE claimed_by IS NULL ORDER BY id")
        return [_row(r) for r in rows]

    async def of_corpus(self, corpus: str) -> QueuedJob | None:
        row = await self.store.fetchone(f"SELECT {_COLUMNS} FROM job_queue WHERE corpus = ? ORDER BY id", (corpus,))
        return None if row is None else _row(row)

    async def claim(self, skip: frozenset[str] | set[str] = frozenset(), only: int | None = None) -> QueuedJob | None:
        """Take the oldest waiting entry whose corpus is not in ``skip`` (with ``only``, that entry
        alone); None when there is none.

        The UPDATE's ``claimed_by IS NULL`` makes the take atomic: of two processes claiming the
        same entry at once, one changes a row and the other changes none and tries the next."""
        for entry in await self.waiting():
            if entry.corpus in skip or (only is not None and entry.id != only):
                continue
            (cur,) = await self.store.write([(
                "UPDATE job_queue SET claimed_by = ? WHERE id = ? AND claimed_by IS NULL", (claimant(), entry.id),
            )])
            if cur.rowcount == 1:
                return await self.get(entry.id)
        return None

    async def release(self, entry_id: int) -> None:
        """Give a claimed entry back (its job could not start here)."""
        await self.store.write([("UPDATE job_queue SET claimed_by = NULL WHERE id = ?", (entry_id,))])

    async def done(self, entry_id: int) -> None:
        await self.store.write([("DELETE FROM job_queue WHERE id = ?", (entry_id,))])

    async def drop(self, corpus: str) -> int:
        """Delete every waiting entry for ``corpus`` (its persona was deleted); how many there were."""
        (cur,) = await self.store.write([("DELETE FROM job_queue WHERE corpus = ? AND claimed_by IS NULL",
                                          (corpus,))])
        return int(cur.rowcount)

    async def release_dead(self, alive: Callable[[int], bool]) -> int:
        """Hand back entries claimed by processes of this machine that are gone (``alive(pid)`` is False)."""
        host = socket.gethostname()
        rows = await self.store.fetchall("SELECT id, claimed_by FROM job_queue WHERE claimed_by IS NOT NULL")
        dead = []
        for entry_id, who in rows:
            h, _, pid = str(who).rpartition(":")
            if h == host and pid.isdigit() and (int(pid) == os.getpid() or not alive(int(pid))):
                dead.append(int(entry_id))
        for entry_id in dead:
            await self.release(entry_id)
        return len(dead)
