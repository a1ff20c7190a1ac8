"""``charbot run``: the Discord bot, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os

from bot.cli.common import UserError, add_env_file_flag


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the Discord bot (settings from .env)",
                       description="Connect to Discord and serve the slash commands until SIGTERM or Ctrl-C. "
                       "Settings come from .env (see .env.example). With CHARBOT_DEV_GUILD set, the commands are "
                       "synced to that server at start; publish them everywhere with `charbot sync`.")
    add_env_file_flag(r)
    r.add_argument("--shard-count", metavar="N",
                   help="gateway shards in the whole bot: a number, or auto for Discord's recommendation "
                   "(default: CHARBOT_SHARD_COUNT; unset runs one unsharded connection)")
    r.add_argument("--shard-ids", metavar="IDS",
                   help="the shards this process runs, e.g. 0,1 (needs a numeric --shard-count, the same in every "
                   "process; default: CHARBOT_SHARD_IDS, else all of them)")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.config import load_config, setup_logging
    from bot.discord_app.serve import BotStartError, serve
    from bot.store import StoreError

    environ = dict(os.environ)  # the flags win over the environment, which wins over .env
    if args.shard_count is not None:
        environ["CHARBOT_SHARD_COUNT"] = args.shard_count
    if args.shard_ids is not None:
        environ["CHARBOT_SHARD_IDS"] = args.shard_ids
    config = load_config(args.env_file, environ)
    setup_logging(config)
    try:
        asyncio.run(serve(config))
    except (BotStartError, StoreError) as exc:
        raise UserError(str(exc)) from None
    return 0
