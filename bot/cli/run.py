"""``charbot run`` (the Discord bot, until stopped) and ``charbot sync`` (publish its slash commands)."""

from __future__ import annotations

import asyncio

from bot.cli.common import UserError


def register(sub) -> None:  # noqa: ANN001
    r = sub.add_parser("run", help="run the Discord bot (settings from .env)",
                       description="Connect to Discord and serve the slash commands until SIGTERM or Ctrl-C. "
                       "Settings come from .env (see .env.example). With CHARBOT_DEV_GUILD set, the commands are "
                       "synced to that server at start; publish them everywhere with `charbot sync`.")
    r.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    r.set_defaults(func=run)
    s = sub.add_parser("sync", help="publish the bot's slash commands to Discord, then exit",
                       description="Register the slash commands globally (every server the bot is in; Discord may "
                       "take a while to show changes), or in one server with --guild (instant).")
    s.add_argument("--guild", type=int, help="sync to this server ID only")
    s.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    s.set_defaults(func=sync)


def run(args) -> int:  # noqa: ANN001
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


def sync(args) -> int:  # noqa: ANN001
    from bot.config import load_config, setup_logging
    from bot.serve import BotStartError, sync_commands

    config = load_config(args.env_file)
    setup_logging(config)
    try:
        names = asyncio.run(sync_commands(config, args.guild))
    except BotStartError as exc:
        raise UserError(str(exc)) from None
    where = f"server {args.guild}" if args.guild else "all servers (global)"
    print(f"synced {len(names)} commands to {where}: {', '.join('/' + n for n in sorted(names))}")
    return 0
