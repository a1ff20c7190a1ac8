"""``charbot reply``: one reply in a terminal, exactly as the bot would post it, no Discord needed.

It uses the bot's own settings (.env), checkpoint, engine and reply logic. ``--json`` gives
the posted message with what produced it: the generated part, why it ended, how many
candidates were drawn, the chosen one's score parts (:mod:`bot.core.score`) and, for a grounded
corpus, the passage it drew on and its BM25 score.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from bot.cli.common import UserError, add_json_flag, add_model_flags, emit, load_models

if TYPE_CHECKING:
    from bot.core.replies import ReplyUpdate


def register(sub: argparse._SubParsersAction) -> None:
    from corpora.registry import CORPORA

    p = sub.add_parser("reply", help="print one reply exactly as the bot would post it",
                       description="Generate one reply with the bot's checkpoint for CORPUS and print the message "
                       "the bot would post (markdown included).")
    p.add_argument("corpus", choices=list(CORPORA), help="which model answers")
    p.add_argument("prompt", help="the words to continue (the question, for faq)")
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


def run_reply(args: argparse.Namespace) -> int:
    from bot.core.refusals import Refusal
    from bot.core.replies import ReplyService, make_request

    config, models = load_models(args, [args.corpus])

    async def once() -> ReplyUpdate:
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
