"""``charbot reply``: one reply in a terminal, exactly as the bot would post it, no Discord needed.

It uses the bot's own settings (.env), checkpoint, engine and reply logic.
"""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import UserError, add_model_flags, load_models


def register(sub: argparse._SubParsersAction) -> None:
    from corpora.registry import CORPORA

    p = sub.add_parser("reply", help="print one reply exactly as the bot would post it",
                       description="Generate one reply with the bot's checkpoint for CORPUS and print the message "
                       "the bot would post (markdown included).")
    p.add_argument("corpus", choices=list(CORPORA), help="which model answers")
    p.add_argument("prompt", help="the words to continue (the question, for faq)")
    p.add_argument("--temperature", type=float, help="0 to 2 (default: the corpus's)")
    p.add_argument("--length", type=int, help="maximum characters to generate")
    p.add_argument("--seed", type=int, help="same seed, same reply")
    add_model_flags(p)
    p.set_defaults(func=run_reply)


def run_reply(args: argparse.Namespace) -> int:
    from bot.errors import Refusal
    from bot.replies import ReplyService, make_request

    config, models = load_models(args, [args.corpus])

    async def once() -> str:
        service = ReplyService(models, config.limits)
        request = make_request(args.corpus, args.prompt, config.limits, temperature=args.temperature,
                               length=args.length, seed=args.seed)
        return (await service.reply(request)).text

    try:
        print(asyncio.run(once()))
    except Refusal as exc:
        raise UserError(exc.message) from None
    finally:
        models.close()
    return 0
