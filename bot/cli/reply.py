"""``charbot reply`` and ``charbot chat``: the bot's replies in a terminal, no Discord needed.

Both use the bot's own settings (.env), checkpoints, engines and reply logic, so what they
print is exactly what the bot would post.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from bot.cli.common import UserError

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.engines import Models


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
    _common(p)
    p.set_defaults(func=run_reply)

    c = sub.add_parser("chat", help="type the bot's slash commands in a terminal (reads stdin, pipes work)",
                       description="A local session with the bot: /tale ..., /faq ..., /temp 0.5, /contribute faq ..., "
                       "/model, /forget, /optout, /help. Settings and contributions go to the local database.")
    c.add_argument("--db", help="database file (default: CHARBOT_DB from .env, else charbot.db)")
    _common(c)
    c.set_defaults(func=run_chat)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", help="folder holding <corpus>.safetensors (default: CHARBOT_CHECKPOINT_DIR, "
                   "else the shipped checkpoints/ folder)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: CHARBOT_DEVICE, else auto)")
    p.add_argument("--env-file", default=".env", help="settings file (default: .env)")


def _setup(args: argparse.Namespace, corpora: list[str] | None) -> tuple[BotConfig, Models]:
    """Settings and models; ``corpora`` None means every corpus the bot serves."""
    from pathlib import Path

    from bot.config import load_config
    from bot.engines import Models

    config = load_config(args.env_file, require_token=False)
    checkpoints = Path(args.checkpoints) if args.checkpoints else config.checkpoint_dir
    models = Models.load(corpora or config.corpora, checkpoints, device=args.device or config.device,
                         precision=config.precision)
    return config, models


def run_reply(args: argparse.Namespace) -> int:
    from bot.errors import Refusal
    from bot.replies import ReplyService, make_request

    config, models = _setup(args, [args.corpus])

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


def run_chat(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bot.cli.chat import ChatSession, run_chat
    from bot.replies import ReplyService
    from bot.store import Store, StoreError

    config, models = _setup(args, None)
    limits = replace(config.limits, cooldown_s=0.0)  # one local person, one command at a time

    async def session() -> int:
        store = await Store.open(args.db or config.database)
        try:
            chat = ChatSession(store, ReplyService(models, limits), limits)
            return await run_chat(chat, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())
        finally:
            await store.close()

    try:
        return asyncio.run(session())
    except StoreError as exc:
        raise UserError(str(exc)) from None
    finally:
        models.close()
