"""``charbot sync``: publish the bot's slash commands to Discord, then exit."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import UserError, add_env_file_flag


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sync", help="publish the bot's slash commands to Discord, then exit",
                       description="Register the slash commands globally (every server the bot is in; Discord may "
                       "take a while to show changes), or in one server with --guild (instant).")
    s.add_argument("--guild", type=int, help="sync to this server ID only")
    add_env_file_flag(s)
    s.set_defaults(func=sync)


def sync(args: argparse.Namespace) -> int:
    from bot.config import load_config, setup_logging
    from bot.discord_app.serve import BotStartError, sync_commands

    config = load_config(args.env_file)
    setup_logging(config)
    try:
        names = asyncio.run(sync_commands(config, args.guild))
    except BotStartError as exc:
        raise UserError(str(exc)) from None
    where = f"server {args.guild}" if args.guild else "all servers (global)"
    print(f"synced {len(names)} commands to {where}: {', '.join('/' + n for n in sorted(names))}")
    return 0
