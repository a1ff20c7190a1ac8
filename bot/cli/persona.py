"""``charbot persona``: a server's personas from a terminal: create (and train), list, info, retrain, delete.

The same :class:`~bot.personas.service.PersonaService` the /persona cog calls, on the bot's own
database and versions, so a persona made here is the bot's: it speaks in that server once trained
(``charbot reply --persona`` shows what it would post). Personas belong to a server, so every
action names one with ``--server``. ``create`` and ``retrain`` train in this process, with progress
on stderr, when the machine has room; when a fine-tune already runs they leave the job in the shared
queue for a bot process to start, say so, and exit 0. This process never starts anyone else's queued job:
it would die when this command exits.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.common import UserError, add_database_flags, add_env_file_flag, add_json_flag, emit, job_settings

if TYPE_CHECKING:
    from bot.jobs.manager import JobOutcome, Queued, RunningJob
    from bot.personas.service import PersonaService
    from bot.personas.settings import PersonaSettings
    from bot.personas.uploads import File
    from bot.store.personas import PersonaRow

STATUS_EVERY_S = 5.0
LOCAL_CHANNEL = 0  # what a persona made here records as its channel: no Discord id is 0


def server_id(value: str) -> int:
    """A Discord server id: a positive whole number (argparse type)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"a server id is a positive whole number (Discord's); got {value!r}")
    return number


def register(sub: argparse._SubParsersAction) -> None:
    from bot.personas.settings import PersonaSettings
    from corpora.voices import NAME_RULE, STYLE_HELP, STYLES

    bounds = "; ".join(PersonaSettings().lines())
    p = sub.add_parser(
        "persona", help="a server's own personas: create (and train) one from text files, list, info, retrain, "
        "delete",
        description="A persona speaks as its server's text: it is fine-tuned from the general base model on the "
        "files given, in one of three styles (" + "; ".join(f"{s}: {h}" for s, h in STYLE_HELP.items())
        + "). Personas belong to a server: give its Discord id with --server. Bounds (defaults; the "
        f"CHARBOT_PERSONA_* settings change them): {bounds}.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=description)
        a.add_argument("--server", type=server_id, required=True, metavar="ID",
                       help="the Discord server the persona belongs to")
        add_database_flags(a)
        a.add_argument("--checkpoints", help="folder holding base.safetensors, the general base model personas "
                       "start from (tale.safetensors where there is none; default: CHARBOT_CHECKPOINT_DIR, else the "
                       "shipped checkpoints/ folder)")
        add_env_file_flag(a)
        add_json_flag(a)
        return a

    c = action("create", "create a persona from text files and train it",
               "Check the files (.txt or .md, UTF-8), record the persona and its text in the bot's database, and "
               "fine-tune the general base model on the text: here, with progress, if no other fine-tune runs on "
               "this machine; else the job waits in the queue for a bot process. The report gives the held-out "
               "loss on the persona's own text before and after, in nats and bits per character.")
    c.add_argument("name", help=f"the persona's name: {NAME_RULE}")
    c.add_argument("files", nargs="+", type=Path, metavar="FILE", help="the text it learns (.txt or .md, UTF-8)")
    c.add_argument("--style", choices=STYLES, required=True, help="how it answers")
    c.add_argument("--minutes", type=float, help="time budget (default: CHARBOT_FINETUNE_MINUTES, else 10)")
    c.add_argument("--force", action="store_true",
                   help="serve the result even if it is no better than the general base on the held-out text")
    c.add_argument("--by", type=int, default=0, metavar="USER_ID",
                   help="the Discord user recorded as its creator, so /forget by them deletes its text (default 0: "
                   "nobody's)")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=run)
    action("list", "this server's personas and whether each is ready",
           "List the server's personas: style, size, and whether each is ready, training or queued.").set_defaults(
        func=run)
    i = action("info", "one persona: who made it from what, its versions and their held-out figures",
               "Describe one persona: its files and size, who created it and when, its state, disk use, and each "
               "version's held-out loss on its own text before and after.")
    i.add_argument("name")
    i.set_defaults(func=run)
    r = action("retrain", "train a persona again on the text it keeps",
               "Train a persona again on its stored text, after its training was refused, cancelled, killed or ran "
               "out of time: here, with progress, if no other fine-tune runs on this machine; else the job waits in "
               "the queue for a bot process. It starts from the version the persona serves (the general base while "
               "it has none), and the result is judged as create's is.")
    r.add_argument("name")
    r.add_argument("--minutes", type=float, help="time budget (default: CHARBOT_FINETUNE_MINUTES, else 10)")
    r.add_argument("--force", action="store_true",
                   help="serve the result even if it is no better than the general base on the held-out text")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=run)
    d = action("delete", "delete a persona: its text, trained versions and records",
               "Delete a persona: its text, its trained versions and their passage index, and its records. A "
               "persona training in another process is refused until that job ends.")
    d.add_argument("name")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    """One action on the bot's own database and versions; a refusal is one line (UserError)."""
    from bot.core.engines import base_checkpoint
    from bot.core.refusals import Refusal
    from bot.jobs.manager import FinetuneManager, FinetuneRefused
    from bot.personas.service import PersonaService
    from bot.personas.settings import load_persona_settings
    from bot.store import StoreError, open_store
    from bot.store.jobs import FinetuneStore

    db, settings, checkpoints = job_settings(args, writes_versions=args.action in ("create", "retrain", "delete"))
    if args.action in ("create", "retrain"):  # an operator may give a longer budget than the bot's users may ask for
        settings = replace(settings, max_minutes=max(settings.max_minutes, args.minutes or 0))
    persona_settings = load_persona_settings(args.env_file)
    try:
        store = await open_store(db)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    manager = FinetuneManager(FinetuneStore(store), settings, lambda corpus: base_checkpoint(corpus, checkpoints),
                              serves_queue=False)
    service = PersonaService(store, manager, persona_settings)
    try:
        await manager.recover()
        if args.action == "create":
            return await _create(args, service, persona_settings)
        if args.action == "retrain":
            return await _retrain(args, service)
        if args.action == "list":
            rows = await service.rows.of_guild(args.server)
            personas = [{"name": r.name, "style": r.style, "chars": r.chars, "files": r.files,
                         "created": r.created, "created_by": r.created_by, "state": await service.state(r)}
                        for r in rows]
            text = await service.list_text(args.server)
            emit(args, {"server": args.server, "personas": personas, "text": text}, text)
        elif args.action == "info":
            row = await service.get(args.server, args.name)
            versions = [{"version": v.version, "served": v.served, "created": v.created, "path": v.path,
                         "heldout_chars": v.heldout_chars, "losses": v.losses}
                        for v in await manager.store.versions(row.key)]
            text = await service.info_text(args.server, args.name)
            emit(args, {"server": args.server, "name": row.name, "key": row.key, "style": row.style,
                        "chars": row.chars, "files": row.files, "created": row.created,
                        "created_by": row.created_by, "state": await service.state(row), "versions": versions,
                        "text": text}, text)
        else:
            text = await service.delete(args.server, args.name)
            emit(args, {"server": args.server, "deleted": args.name, "text": text}, text)
        return 0
    except Refusal as exc:
        raise UserError(exc.message) from None
    except (FinetuneRefused, StoreError) as exc:
        raise UserError(str(exc)) from None
    finally:
        await manager.close()
        await store.close()


def read_files(paths: list[Path], settings: PersonaSettings) -> list[File]:
    """The files' bytes, each size checked before it is read (a huge file is never loaded)."""
    from bot.personas.uploads import File, check_count, check_declared

    check_count(len(paths), settings)
    files = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        check_declared(path.name, path.stat().st_size, settings)
        files.append(File(path.name, path.read_bytes()))
    return files


async def _create(args: argparse.Namespace, service: PersonaService, settings: PersonaSettings) -> int:
    files = read_files(args.files, settings)
    created = await service.create(args.server, args.name, args.style, files, args.by, LOCAL_CHANNEL,
                                   source="cli", minutes=args.minutes, force=args.force)
    row = created.persona
    head = (f"Persona {row.name} ({row.style}) created in server {args.server} from {len(row.files)} file(s), "
            f"{row.chars:,} characters.")
    return await _train(args, service, row, created.job, head)


async def _retrain(args: argparse.Namespace, service: PersonaService) -> int:
    """Train it again here, or queue it; no Discord channel is recorded, so a bot that starts it posts nothing."""
    retrained = await service.retrain(args.server, args.name, minutes=args.minutes, force=args.force,
                                      started_by=f"cli:{getpass.getuser()}")
    row = retrained.persona
    return await _train(args, service, row, retrained.job, f"Persona {row.name} in server {args.server}: training "
                        "it again on the text it keeps.")


async def _train(args: argparse.Namespace, service: PersonaService, row: PersonaRow, job: RunningJob | Queued,
                 head: str) -> int:
    """Say the job is queued and exit 0, or follow it here and say how it ended (exit 0 when it is served)."""
    from bot.jobs.manager import Queued
    from bot.personas.messages import training_ended
    from bot.store.jobs import CANCELLED, DONE

    payload: dict = {"server": args.server, "name": row.name, "key": row.key, "style": row.style,
                     "chars": row.chars, "files": row.files}
    if isinstance(job, Queued):
        emit(args, payload | {"state": "queued", "queue_entry": job.id, "ahead": job.ahead},
             f"{head} A fine-tune is already running on this machine, so its training waits in the queue "
             f"(entry {job.id}, {job.ahead} ahead of it) for a bot process sharing this database to start it. "
             f"`charbot persona info {row.name} --server {args.server}` shows how it goes.")
        return 0
    show = not (args.quiet or args.json)
    if show:
        print(f"{head} Training from {job.parent.path} (job {job.id}, up to {job.minutes:g} min).", file=sys.stderr)
    outcome = await _wait(service, job, show)
    path = service.finetune.versions_dir(row.key).path(outcome.version) if outcome.state == DONE else None
    report = outcome.report
    emit(args, payload | {"state": outcome.state, "job": outcome.job_id, "version": outcome.version,
                          "path": str(path) if path else None, "error": outcome.error,
                          "losses": report.figures()["contributed"] if report else None,
                          "report": report.to_dict() if report else None},
         training_ended(row.name, outcome, args.server) + (f"\nCheckpoint: {path}" if path else ""))
    return 0 if outcome.state == DONE else (130 if outcome.state == CANCELLED else 1)


async def _wait(service: PersonaService, job: RunningJob, show: bool) -> JobOutcome:
    """Wait for the job, a status line every few seconds; Ctrl-C cancels it (nothing is served)."""
    manager = service.finetune
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(manager.cancel(job.corpus, "interrupted")))
    try:
        while job.task is not None and not job.task.done():
            await asyncio.wait({job.task}, timeout=STATUS_EVERY_S)
            if show and not job.task.done():
                print(job.status(), file=sys.stderr)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return await manager.wait(job)
