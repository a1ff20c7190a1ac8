"""``charbot run``: the Discord bot, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import UserError, add_env_file_flag


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the Discord bot (settings from .env)",
                       description="Connect to Discord and serve the slash commands until SIGTERM or Ctrl-C. "
                       "Settings come from .env (see .env.example). With CHARBOT_DEV_GUILD set, the commands are "
                       "synced to that server at start; publish them everywhere with `charbot sync`.")
    add_env_file_flag(r)
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.config import load_config, setup_logging
    from bot.serve import BotStartError, serve
    from bot.store import StoreError

    config = load_config(args.env_file)
    setup_logging(config)
    try:
        asyncio.run(serve(config))
    except (BotStartError, StoreError) as exc:
        raise UserError(str(exc)) from None
    return 0
