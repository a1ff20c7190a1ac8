"""``charbot finetune``: fine-tune a corpus's served checkpoint on its contributions, from a terminal.

The same job the bot's /finetune runs (same process, same checks, same versions and database
records), so an operator can run it on a bigger machine against a copy of the database and
ship the result with ``--out``; ``--install`` adds such a file as the next version. A running
bot using the same database notices a version changed here and serves it within a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.common import UserError, add_env_file_flag, add_json_flag, emit, job_settings

if TYPE_CHECKING:
    from bot.jobs.manager import FinetuneManager
    from bot.jobs.settings import FinetuneSettings

STATUS_EVERY_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    from corpora.registry import CORPORA

    p = sub.add_parser(
        "finetune", help="fine-tune a corpus's served model on the text people contributed",
        description="Fine-tune the checkpoint served for CORPUS on its contributions in the bot's database. "
        "The newest contributions are held out (a tenth, at least 1,000 characters where the text allows); the "
        "loss on them and on the corpus's own held-out text is reported before and after, in nats and bits. "
        "Each batch mixes in the corpus's own training text so the model keeps its style. The result becomes "
        "the next numbered version and is served only if it is better on the new text and the corpus loss rose "
        "by at most CHARBOT_FINETUNE_MAX_CORPUS_RISE (0.05 nats); otherwise it is refused (see --force).",
    )
    p.add_argument("corpus", choices=list(CORPORA), help="which model learns")
    p.add_argument("--db", help="database file or postgresql:// URL (default: CHARBOT_DB from .env, else charbot.db)")
    p.add_argument("--minutes", type=float, help="time budget (default: CHARBOT_FINETUNE_MINUTES, else 10)")
    p.add_argument("--force", action="store_true",
                   help="serve the result even if the guard refuses it (no better on the new text, or the corpus's "
                   "held-out loss rose more than CHARBOT_FINETUNE_MAX_CORPUS_RISE)")
    p.add_argument("--without-forgotten", action="store_true",
                   help="take out what the model learned from texts deleted with /forget: fine-tune the contributions "
                   "that remain from the newest version that never saw them (same checks), or roll back to it when "
                   "too little text remains; the other versions that saw them are deleted")
    p.add_argument("--out", help="also copy the new checkpoint here, e.g. to ship it to the bot's machine")
    p.add_argument("--install", metavar="CHECKPOINT",
                   help="no training: check CHECKPOINT (made with --out elsewhere) and serve it as the next version")
    p.add_argument("--rollback", type=int, metavar="VERSION", help="no training: serve VERSION again (0 = base)")
    p.add_argument("--list", action="store_true", help="no training: list the versions and recent jobs")
    p.add_argument("--state-dir", help="where versions live (default: CHARBOT_STATE_DIR, else charbot-state/ "
                   "beside the database)")
    p.add_argument("--checkpoints", help="folder holding the base <corpus>.safetensors (default: "
                   "CHARBOT_CHECKPOINT_DIR, else the shipped checkpoints/ folder)")
    t = p.add_argument_group("training (defaults suit fine-tuning: low learning rate, early stopping)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    t.add_argument("--max-epochs", type=float, help="at most this many passes over the text (default 40)")
    t.add_argument("--patience", type=int, help="stop after N validations without improvement (default 3)")
    t.add_argument("--replay", type=float, help="share of each batch taken from the corpus's own training text, "
                   "so the model keeps its old style (default 0.75; 0 = off)")
    t.add_argument("--anchor", type=float, help="L2-SP strength pulling the weights towards the served ones "
                   "(default 0 = off)")
    t.add_argument("--min-chars", type=int, help="refuse less contributed text than this (default 2000)")
    t.add_argument("--device", help="auto (CUDA if present), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int, help="CPU threads (default: the free cores)")
    t.add_argument("--nice", type=int, default=0, help="lower the job's priority by N (default 0)")
    add_env_file_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _settings(args: argparse.Namespace) -> tuple[Path | str, FinetuneSettings, Path]:
    from dataclasses import replace

    db, settings, checkpoints = job_settings(args)
    overrides = {k: v for k, v in (("lr", args.lr), ("max_epochs", args.max_epochs), ("patience", args.patience),
                                   ("replay", args.replay), ("anchor", args.anchor), ("device", args.device))
                 if v is not None}
    settings = replace(
        settings, config={**settings.config, **overrides}, threads=args.threads, nice=args.nice,
        min_chars=args.min_chars if args.min_chars is not None else settings.min_chars,
        max_minutes=max(settings.max_minutes, args.minutes or 0),
    )
    return db, settings, checkpoints


async def _run(args: argparse.Namespace) -> int:
    from bot.core.engines import base_checkpoint
    from bot.jobs.manager import FinetuneManager, FinetuneRefused, Served
    from bot.store import open_store
    from bot.store.jobs import DONE, FinetuneStore

    db, settings, checkpoints = _settings(args)
    store = await open_store(db)
    manager = FinetuneManager(FinetuneStore(store), settings, lambda corpus: base_checkpoint(corpus, checkpoints),
                              serves_queue=False)  # it exits when its own job ends
    who = f"cli:{getpass.getuser()}"
    try:
        await manager.recover()
        if args.list:
            return await _list(args, manager)
        if args.install or args.rollback is not None:
            if args.install:
                served = await manager.import_checkpoint(args.corpus, Path(args.install), who)
            else:
                _, served = await manager.rollback(args.corpus, args.rollback)
            emit(args, {"corpus": args.corpus, "version": served.version, "path": str(served.path)},
                 f"{args.corpus}: now serving {served.label} ({served.path})")
            return 0
        if args.without_forgotten:
            started = await manager.retrain_without_forgotten(args.corpus, who, args.minutes, force=args.force)
            if isinstance(started, Served):
                emit(args, {"corpus": args.corpus, "version": started.version, "path": str(started.path)},
                     f"{args.corpus}: too little text remains to fine-tune without the forgotten texts; now serving "
                     f"{started.label} ({started.path}), the newest version that never saw them")
                return 0
            job = started
        else:
            job = await manager.start(args.corpus, who, args.minutes, force=args.force)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(manager.cancel(args.corpus, "interrupted")))
        show = not (args.quiet or args.json)
        while job.task is not None and not job.task.done():
            await asyncio.wait({job.task}, timeout=STATUS_EVERY_S)
            if show and not job.task.done():
                print(job.status(), file=sys.stderr)
        loop.remove_signal_handler(signal.SIGINT)
        outcome = await manager.wait(job)
    except FinetuneRefused as exc:
        raise UserError(str(exc)) from None
    finally:
        await manager.close()
        await store.close()
    path = None
    if outcome.state == DONE:
        path = manager.versions_dir(args.corpus).path(outcome.version)
        if args.out:
            Path(args.out).expanduser().parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(args.out).expanduser())
    verdict = outcome.verdict
    payload = {"job": outcome.job_id, "corpus": outcome.corpus, "state": outcome.state, "version": outcome.version,
               "path": str(path) if path else None, "out": args.out if path else None, "error": outcome.error,
               "losses": outcome.report.figures() if outcome.report else None,
               "guard": None if verdict is None else {"passed": verdict.ok, "reasons": list(verdict.reasons),
                                                      "forced": outcome.forced,
                                                      "max_corpus_rise": manager.settings.max_corpus_rise},
               "report": outcome.report.to_dict() if outcome.report else None}
    human = outcome.message()
    if path is not None:
        human += f"\nCheckpoint: {path}" + (f" (copied to {args.out})" if args.out else "")
    emit(args, payload, human)
    return 0 if outcome.state == DONE else (130 if outcome.state == "cancelled" else 1)


async def _list(args: argparse.Namespace, manager: FinetuneManager) -> int:
    from model.evaluate import bits

    served = await manager.served(args.corpus)
    rows = await manager.store.versions(args.corpus)
    jobs = await manager.store.recent_jobs(args.corpus)
    lines = [f"{args.corpus}: serving {served.label} ({served.path})"]
    for r in rows:
        after = r.losses.get("after", {}).get("contributed")
        parent = f"v{r.parent_version}" if r.parent_version else "base"
        lines.append(f"  v{r.version}{' (served)' if r.served else ''}: from {parent}, {r.train_chars:,} chars, "
                     f"by {r.started_by}, {r.created}" + (f", held-out {bits(after):.3f} bits/char" if after else ""))
    for j in jobs:
        lines.append(f"  job {j.id}: {j.state}, by {j.started_by}, {j.created}" + (f": {j.error}" if j.error else ""))
    emit(args, {"corpus": args.corpus, "served": served.version,
                "versions": [r.__dict__ for r in rows], "jobs": [j.__dict__ for j in jobs]}, "\n".join(lines))
    return 0
