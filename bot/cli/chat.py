"""``charbot chat``: type the bot's slash commands in a terminal, against a local database.

The session itself (parsing a line, answering it) is :mod:`bot.cli.repl`; this module only
adds the sub-command and opens the database and the models for it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.cli.common import UserError, add_model_flags, load_models


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("chat", help="type the bot's slash commands in a terminal (reads stdin, pipes work)",
                       description="A local session with the bot: /tale ..., /faq ..., /temp 0.5, /contribute faq ..., "
                       "/model, /forget, /optout, /help. Settings and contributions go to the local database.")
    c.add_argument("--db", help="database file (default: CHARBOT_DB from .env, else charbot.db)")
    add_model_flags(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bot.cli.repl import ChatSession, run_chat
    from bot.core.replies import ReplyService
    from bot.store import StoreError, open_store

    config, models = load_models(args, None)
    limits = replace(config.limits, cooldown_s=0.0)  # one local person, one command at a time

    async def session() -> int:
        store = await open_store(args.db or config.database)
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
