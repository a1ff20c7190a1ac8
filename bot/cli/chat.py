"""``charbot chat``: type the bot's slash commands in a terminal, against a local database.

The session itself (parsing a line, answering it) is :mod:`bot.cli.repl`; this module only
adds the sub-command and opens the database and the models for it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.cli.common import UserError, add_model_flags, load_models, local_manager, persona_replies
from bot.cli.persona import server_id


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("chat", help="type the bot's slash commands in a terminal (reads stdin, pipes work)",
                       description="A local session with the bot: /tale ..., /faq ..., /temp 0.5, /contribute faq ..., "
                       "/model, /forget, /optout, /help. Settings and contributions go to the local database.")
    c.add_argument("--db", help="database file (default: CHARBOT_DB from .env, else charbot.db)")
    c.add_argument("--server", type=server_id, metavar="ID",
                   help="be that Discord server: its personas answer /say NAME words, as on Discord")
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
            if args.server is None:  # the bot's versions too: /forget scrubs their learned texts as the bot's does
                chat = ChatSession(store, ReplyService(models, limits), limits,
                                   finetune=local_manager(args, config, store, args.db or config.database))
            else:
                service, personas = await persona_replies(args, config, store, models, limits,
                                                          args.db or config.database)
                chat = ChatSession(store, service, limits, guild=args.server, personas=personas)
            return await run_chat(chat, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())
        finally:
            await store.close()

    try:
        return asyncio.run(session())
    except StoreError as exc:
        raise UserError(str(exc)) from None
    finally:
        models.close()

