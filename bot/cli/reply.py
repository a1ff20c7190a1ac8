"""``charbot reply``: one reply in a terminal, exactly as the bot would post it, no Discord needed.

It uses the bot's own settings (.env), checkpoint, engine and reply logic. ``--json`` gives
the posted message with what produced it: the generated part, why it ended, how many
candidates were drawn, the chosen one's score parts (:mod:`bot.core.score`) and, for a grounded
corpus, the passage it drew on and its BM25 score.

``--persona NAME --server ID`` answers as that server's persona instead of a corpus, as /say
does: from the bot's database, the persona's served version is found and loaded the way the bot
loads it (:meth:`bot.core.replies.ReplyService.ready`), with the verbatim-copy guard the bot
keeps over its contributions, so the text printed is the text the bot would post.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from bot.cli.common import (
    UserError,
    add_database_flags,
    add_json_flag,
    add_model_flags,
    emit,
    job_settings,
    load_models,
    persona_replies,
)
from bot.cli.persona import server_id

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.core.engines import Models
    from bot.core.replies import ReplyUpdate


def register(sub: argparse._SubParsersAction) -> None:
    from corpora.registry import CORPORA

    p = sub.add_parser("reply", help="print one reply exactly as the bot would post it",
                       description="Generate one reply with the bot's checkpoint for CORPUS and print the message "
                       "the bot would post (markdown included).")
    p.add_argument("corpus", nargs="?", metavar="CORPUS", help=f"which model answers: {', '.join(CORPORA)} "
                   "(left out with --persona)")
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="the words to continue (the question, for faq)")
    p.add_argument("--persona", metavar="NAME", help="answer as this server's persona (with --server), as /say does")
    p.add_argument("--server", type=server_id, metavar="ID", help="the Discord server the persona belongs to")
    add_database_flags(p, state=False)
    p.intermixed = True  # CORPUS and PROMPT are both optional (--persona leaves CORPUS out): see common.Parser
    p.add_argument("--temperature", type=float, help="0 to 2 (default: the corpus's)")
    p.add_argument("--length", type=int,
                   help="target length in characters: the reply ends at the first sentence end after it")
    p.add_argument("--seed", type=int, help="same seed, same reply (for the same --best-of)")
    p.add_argument("--best-of", type=int, metavar="N",
                   help="candidates to draw and choose from (default: the bot's, fewer when it is busy)")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run_reply)


def reply_json(update: ReplyUpdate) -> dict:
    """What ``--json`` prints: the message and how it came to be."""
    gen = update.generation
    out: dict = {
        "message": update.text,
        "generated": gen.text if gen else "",
        "finish": str(gen.finish) if gen else None,
        "seed": update.seed,
        "n": update.candidates,
        "chosen": update.chosen,
        "score": update.score.to_dict() if update.score else None,
        "source": None,
    }
    if update.source is not None:
        out["source"] = {"passage": update.source.passage.text, "index": update.source.passage.index,
                         "score": update.source.score}
    return out


def check_voice_args(args: argparse.Namespace) -> None:
    """CORPUS PROMPT, or --persona NAME --server ID PROMPT: one voice, named one way."""
    from corpora.registry import CORPORA

    if args.persona is not None:
        if args.prompt is not None:
            raise UserError(f"give either a corpus or --persona, not both (got {args.corpus!r} and --persona)")
        if args.server is None:
            raise UserError("a persona belongs to a server: give its id with --server")
        args.corpus, args.prompt = None, args.corpus or ""
        return
    if args.server is not None:
        raise UserError("--server goes with --persona NAME")
    if args.corpus not in CORPORA:
        raise UserError(f"argument CORPUS: invalid choice: {args.corpus!r} (choose from {', '.join(CORPORA)}; "
                        "or answer as a server's persona with --persona NAME --server ID)")
    if args.prompt is None:
        raise UserError("give the prompt after the corpus")


def run_reply(args: argparse.Namespace) -> int:
    from bot.core.refusals import Refusal
    from bot.core.replies import ReplyService, make_request

    check_voice_args(args)
    config, models = load_models(args, [] if args.persona is not None else [args.corpus])

    async def once() -> ReplyUpdate:
        if args.persona is not None:
            return await persona_reply(args, config, models)
        service = ReplyService(models, config.limits)
        request = make_request(args.corpus, args.prompt, config.limits, temperature=args.temperature,
                               length=args.length, seed=args.seed, n=args.best_of)
        return await service.reply(request)

    try:
        update = asyncio.run(once())
        emit(args, reply_json(update), update.text)
    except Refusal as exc:
        raise UserError(exc.message) from None
    finally:
        models.close()
    return 0


async def persona_reply(args: argparse.Namespace, config: BotConfig, models: Models) -> ReplyUpdate:
    """The reply /say would post for ``--persona`` in ``--server``, from the bot's database."""
    from bot.core.replies import make_request
    from bot.store import StoreError, open_store

    db, _, _ = job_settings(args, writes_versions=False)  # the bot's database, which must exist
    try:
        store = await open_store(db)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        service, personas = await persona_replies(args, config, store, models, config.limits, db)
        row = await personas.get(args.server, args.persona)
        request = make_request(row.key, args.prompt, config.limits, temperature=args.temperature,
                               length=args.length, seed=args.seed, n=args.best_of, guild=args.server)
        return await service.reply(request)
    finally:
        await store.close()
