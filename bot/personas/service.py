"""Creating, listing, describing and deleting a server's personas; where a persona speaks from.

Both front ends (the /persona cog and ``charbot persona``) call :class:`PersonaService`, so they
give the same answers. Every method takes the server asking, and a persona is looked up only
under that server's key (:func:`corpora.voices.persona_key`): another server's persona, or any
persona from a DM, is simply not found, with the same words as a name that does not exist.

Creating one checks the upload (:mod:`bot.personas.uploads`) and the server's quotas, records
the persona and its text in one transaction, and starts (or queues) a fine-tune of the general
base model on that text through the ordinary job machinery (:mod:`bot.jobs.manager`), so it
gets the same separate process, progress, cancel, time budget, guard, versions and rollback as
any fine-tune. If the job cannot even be queued, the persona and its text are deleted again.
A persona whose training was refused, cancelled, killed or ran out of time keeps its text, so
:meth:`PersonaService.retrain` trains it again from that text without a new upload.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.core.engines import Models
from bot.core.refusals import Refusal
from bot.core.sanitise import quote
from bot.jobs.manager import FinetuneManager, FinetuneRefused, Queued, RunningJob
from bot.personas.messages import retrain_command
from bot.personas.settings import PersonaSettings
from bot.personas.uploads import File, check_uploads
from bot.store.base import Store
from bot.store.personas import PersonaExists, PersonaRow, PersonaStore
from corpora.voices import (
    STYLE_HELP,
    STYLES,
    BadName,
    add_persona,
    check_name,
    drop_persona,
    is_voice,
    persona_corpus,
    persona_key,
)

log = logging.getLogger(__name__)

NOT_IN_DM = "Personas belong to a server: use this command in one of its channels."


@dataclass(frozen=True)
class Created:
    """A new persona and its training job (running, or waiting in the queue)."""

    persona: PersonaRow
    job: RunningJob | Queued

    def message(self) -> str:
        head = (f"Persona **{self.persona.name}** ({self.persona.style}) created from {len(self.persona.files)} "
                f"file(s), {self.persona.chars:,} characters.")
        if isinstance(self.job, Queued):
            return (f"{head} Its training is queued (job {self.job.id}, {self.job.ahead} ahead of it); "
                    "/persona info shows how it goes.")
        return (f"{head} Training from the general base started (job {self.job.id}, up to "
                f"{self.job.minutes:g} min); /persona info shows how it goes.")


@dataclass(frozen=True)
class Retrained:
    """A persona's new training job (running, or waiting in the queue)."""

    persona: PersonaRow
    job: RunningJob | Queued

    def message(self) -> str:
        if isinstance(self.job, Queued):
            return (f"Training of the persona **{self.persona.name}** is queued (job {self.job.id}, {self.job.ahead} "
                    "ahead of it); /persona info shows how it goes.")
        start = "the general base" if self.job.parent.version == 0 else f"its {self.job.parent.label}"
        return (f"Training the persona **{self.persona.name}** again from {start} (job {self.job.id}, up to "
                f"{self.job.minutes:g} min); /persona info shows how it goes.")


def retrain_hint(name: str) -> str:
    """What an admin types to train persona ``name`` again, as /say's refusal and /persona info say it."""
    return (f"an admin can train it again with `{retrain_command(name)}` (with force:True it is served even if it is "
            "no better than the general base)")


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class PersonaService:
    """A server's personas over one store and one fine-tuning manager."""

    def __init__(self, store: Store, finetune: FinetuneManager, settings: PersonaSettings,
                 models: Models | None = None) -> None:
        self.store = store
        self.models = models  # this process's engines: a deleted persona's is unloaded
        self.rows = PersonaStore(store)
        self.finetune = finetune
        self.settings = settings

    # ---- finding one ----------------------------------------------------------------------

    @staticmethod
    def _guild(guild_id: int | None) -> int:
        if guild_id is None:
            raise Refusal(NOT_IN_DM, "not_allowed")
        return guild_id

    async def get(self, guild_id: int | None, name: str) -> PersonaRow:
        """This server's persona ``name``, or a Refusal (the same one for another server's persona)."""
        guild = self._guild(guild_id)
        try:
            clean = check_name(name)
        except BadName:
            clean = None
        row = await self.rows.get(guild, clean) if clean else None
        if row is None:
            have = ", ".join(r.name for r in await self.rows.of_guild(guild)) or "none yet"
            raise Refusal(f"This server has no persona called {quote(name)} (its personas: {have}).")
        return row

    async def key_for(self, guild_id: int | None, name: str) -> str:
        """The key this server's persona ``name`` speaks under, or :meth:`get`'s Refusal. The persona is
        registered in this process if it was not (made through another bot process, or ``charbot``)."""
        row = await self.get(guild_id, name)
        if not is_voice(row.key):
            add_persona(persona_corpus(row.guild_id, row.name, row.style))
        return row.key

    async def register_all(self) -> int:
        """At start: let every stored persona speak in this process (engines load on first use)."""
        rows = await self.rows.every()
        for row in rows:
            add_persona(persona_corpus(row.guild_id, row.name, row.style))
        return len(rows)

    async def names(self, guild_id: int | None) -> list[str]:
        """This server's persona names, for autocomplete (none in a DM)."""
        return [] if guild_id is None else [r.name for r in await self.rows.of_guild(guild_id)]

    # ---- creating -------------------------------------------------------------------------

    async def create(
        self, guild_id: int | None, name: str, style: str, files: list[File], created_by: int, channel_id: int,
        source: str = "modal", minutes: float | None = None, force: bool = False, started_by: str | None = None,
    ) -> Created:
        """Check everything, record the persona and its text, and start or queue its training.

        ``started_by`` is who the job names (default: ``created_by``'s id; the bot passes
        ``discord:<id>`` so the job's report mentions the admin)."""
        guild = self._guild(guild_id)
        try:
            clean = check_name(name)
        except BadName as exc:
            raise Refusal(str(exc)) from None
        if style not in STYLES:
            raise Refusal(f"The style must be one of {', '.join(STYLES)}; got {quote(style)}.")
        await self._check_count(guild, clean)
        self._check_disk(guild)
        uploads = check_uploads(files, self.settings, self.finetune.settings.min_chars)
        try:
            row = await self.rows.create(guild, clean, style, created_by, channel_id, uploads, source)  # type: ignore[arg-type]
        except PersonaExists:
            raise Refusal(f"This server already has a persona called {quote(clean)}; choose another name, or "
                          f"delete it first with /persona delete.") from None
        add_persona(persona_corpus(guild, clean, row.style))
        try:
            job = await self.finetune.submit(row.key, started_by or str(created_by), minutes, guild, channel_id, force)
        except FinetuneRefused as exc:
            await self._remove(row)
            raise Refusal(f"The persona was not created: {exc}") from None
        except Exception:
            await self._remove(row)
            raise
        log.info("persona %s created by %s in server %s: %d chars, job %s", row.key, created_by, guild, row.chars,
                 job.id)
        return Created(row, job)

    async def _check_count(self, guild: int, name: str) -> None:
        rows = await self.rows.of_guild(guild)
        if any(r.name == name for r in rows):
            raise Refusal(f"This server already has a persona called {quote(name)}; choose another name, or delete "
                          "it first with /persona delete.")
        if len(rows) >= self.settings.max_per_server:
            raise Refusal(f"This server has {len(rows)} personas, the most it may have "
                          f"({self.settings.max_per_server}); delete one with /persona delete first.")

    def _check_disk(self, guild: int) -> None:
        """Every new version adds a checkpoint: none is trained for a server at its disk bound."""
        used = self.disk_bytes(guild)
        if used >= self.settings.max_disk_mb * 1e6:
            raise Refusal(f"This server's personas use {used / 1e6:.0f} MB of disk, the most they may "
                          f"({self.settings.max_disk_mb:g} MB); delete one with /persona delete first.")

    # ---- training one again --------------------------------------------------------------

    async def retrain(
        self, guild_id: int | None, name: str, minutes: float | None = None, force: bool = False,
        started_by: str = "", channel_id: int | None = None,
    ) -> Retrained:
        """Start (or queue) a new training job for this server's persona ``name`` on the text it keeps.

        For a persona whose training was refused, cancelled, killed or ran out of time: its text is
        still stored, so nothing is uploaded again. The job is an ordinary fine-tune (:meth:`FinetuneManager.submit`),
        from what the persona serves now (the general base while it has no version), judged by the same
        guard; ``force`` serves the result even if the guard refuses it. Refused while the persona is
        training or queued: a second job would only wait behind the first and train on the same text.
        ``started_by`` is who the job names (the bot passes ``discord:<id>``); ``channel_id`` is where
        its progress and result are posted."""
        row = await self.get(guild_id, name)
        key = row.key
        running = self.finetune.running(key) or await self.finetune.store.running_job(key)
        if running is not None:
            raise Refusal(f"The persona {row.name} is training now (job {running.id}); /persona info {row.name} shows "
                          "how far it is. Retrain it once that job has ended.", "unavailable")
        queued = await self.finetune.queued(key)
        if queued is not None:
            raise Refusal(f"The persona {row.name} is already waiting for its training (job {queued.id}, "
                          f"{queued.ahead} ahead of it); it trains when the machine has room.", "unavailable")
        self._check_disk(row.guild_id)
        if not is_voice(key):
            add_persona(persona_corpus(row.guild_id, row.name, row.style))
        try:
            job = await self.finetune.submit(key, started_by, minutes, row.guild_id, channel_id, force)
        except FinetuneRefused as exc:  # its key names the server: people know a persona by its name
            raise Refusal(f"The persona {row.name} was not retrained: {str(exc).replace(key, row.name)}") from None
        log.info("persona %s retrained by %s: job %s", key, started_by, job.id)
        return Retrained(row, job)

    def disk_bytes(self, guild: int) -> int:
        """Bytes this server's personas keep on disk: their version checkpoints and what lies beside them."""
        root = self.finetune.settings.state_dir / "versions"
        if not root.is_dir():
            return 0
        return sum(_size(d) for d in root.glob(f"g{guild}-*"))

    # ---- talking to one -------------------------------------------------------------------

    async def locate(self, key: str) -> Path:
        """The checkpoint persona ``key`` speaks from, or a Refusal saying why it cannot speak yet."""
        served = await self.finetune.served(key)
        if served.version:
            self.finetune.serving[key] = served.version  # so a version served elsewhere later is followed
            return served.path
        name = key.split("-", 1)[1]
        queued = await self.finetune.queued(key)
        if self.finetune.running(key) is not None or await self.finetune.store.running_job(key) is not None:
            raise Refusal(f"The persona {name} is still training; /persona info {name} shows how far it is.",
                          "unavailable")
        if queued is not None:
            raise Refusal(f"The persona {name} is waiting for its training (job {queued.id}); try again later.",
                          "unavailable")
        raise Refusal(f"The persona {name} has no trained model: its training did not finish or was refused "
                      f"(see /persona info {name}); {retrain_hint(name)}.", "unavailable")

    # ---- describing -----------------------------------------------------------------------

    async def list_text(self, guild_id: int | None) -> str:
        guild = self._guild(guild_id)
        rows = await self.rows.of_guild(guild)
        if not rows:
            return ("This server has no personas yet. An admin can make one with `/persona create`, "
                    f"from .txt or .md files (styles: {', '.join(f'{s}: {h}' for s, h in STYLE_HELP.items())}).")
        lines = [f"This server's personas ({len(rows)} of at most {self.settings.max_per_server}):"]
        for r in rows:
            lines.append(f"- **{r.name}** ({r.style}, {r.chars:,} characters): {await self.state(r)}")
        lines.append("Talk to one with `/say persona: <name> prompt: ...`.")
        return "\n".join(lines)

    async def state(self, row: PersonaRow) -> str:
        """Where a persona stands, in a few words: ready (which version), training, queued or not trained."""
        served = await self.finetune.served(row.key)
        if served.version:
            return f"ready ({served.label})"
        job = self.finetune.running(row.key)
        if job is not None:
            return "training"
        queued = await self.finetune.queued(row.key)
        if queued is not None:
            return f"queued (job {queued.id})"
        if await self.finetune.store.running_job(row.key) is not None:
            return "training (in another process)"
        return "not trained (see /persona info)"

    async def info_text(self, guild_id: int | None, name: str) -> str:
        """Size, who created it and when, its held-out figures before and after, its versions and its job."""
        row = await self.get(guild_id, name)
        stored = await self.rows.text_chars(row.key)
        state = await self.state(row)
        lines = [
            f"**{row.name}**: a {row.style} persona ({STYLE_HELP[row.style]}).",
            f"Created {row.created} by <@{row.created_by}> from {', '.join(row.files)}: {row.chars:,} characters"
            + ("" if stored == row.chars else f" ({stored:,} still stored; the rest was deleted with /forget)") + ".",
            f"State: {state}; {self.disk_bytes(row.guild_id) / 1e6:.1f} MB of this server's "
            f"{self.settings.max_disk_mb:g} MB used.",
        ]
        job = self.finetune.running(row.key)
        if job is not None:
            lines.append(job.status())
        for v in await self.finetune.store.versions(row.key):
            before, after = v.losses.get("before") or {}, v.losses.get("after") or {}
            if before.get("contributed") is not None and after.get("contributed") is not None:
                b, a = before["contributed"], after["contributed"]
                figures = (f"held-out loss on its own text {b:.3f} -> {a:.3f} nats/char "
                           f"({b / math.log(2):.3f} -> {a / math.log(2):.3f} bits), on {v.heldout_chars:,} characters")
            else:
                figures = "no held-out figures"
            lines.append(f"v{v.version}{' (served)' if v.served else ''}, {v.created}: {figures}.")
        for j in await self.finetune.store.recent_jobs(row.key, limit=3):
            if j.state in ("failed", "cancelled") and j.error:
                lines.append(f"Job {j.id} {j.state}: {j.error[:300]}")
        if state.startswith("not trained"):
            lines.append(f"It cannot speak until it is trained: {retrain_hint(row.name)}.")
        return "\n".join(lines)

    # ---- deleting -------------------------------------------------------------------------

    async def delete(self, guild_id: int | None, name: str) -> str:
        """Delete the persona's text, checkpoints, index and records; cancels its training first."""
        row = await self.get(guild_id, name)
        if self.finetune.running(row.key) is not None:
            job = await self.finetune.cancel(row.key, "the persona was deleted")
            if job is not None:
                await self.finetune.wait(job)
        elif (elsewhere := await self.finetune.store.running_job(row.key)) is not None:
            # Only the process running it can stop it; deleted under it, its result would be installed
            # as a version of a persona that no longer exists.
            raise Refusal(f"The persona {row.name} is training in another process (job {elsewhere.id}); delete "
                          "it once that job has ended.", "unavailable")
        await self.finetune.unqueue(row.key)
        await self._remove(row)
        return (f"Deleted the persona **{row.name}**: its {row.chars:,} characters of text, its trained versions "
                "and its passage index are gone.")

    async def _remove(self, row: PersonaRow) -> None:
        await self.rows.delete(row.guild_id, row.name)
        drop_persona(row.key)
        self.finetune.drop(row.key)
        if self.models is not None:
            self.models.unload(row.key, wait=False)
        shutil.rmtree(self.finetune.versions_dir(row.key).root, ignore_errors=True)


def persona_key_of(guild_id: int | None, name: str) -> str | None:
    """The key a name means in this server, or None (a DM, or not a usable name)."""
    if guild_id is None:
        return None
    try:
        return persona_key(guild_id, name)
    except (BadName, ValueError):
        return None
