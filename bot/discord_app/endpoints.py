"""Where discord.py connects: Discord itself, or a fake Discord on this machine for testing.

discord.py builds every REST URL from ``discord.http.Route.BASE`` and opens its first gateway
connection at ``DiscordWebSocket.DEFAULT_GATEWAY`` (reconnects use the ``resume_gateway_url``
the gateway sends), so these two class attributes are the whole redirect. The configuration
only accepts loopback addresses for them (see ``config.py``), so the token never leaves the
machine by mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import discord.gateway
import discord.http
import yarl

log = logging.getLogger(__name__)


@contextmanager
def discord_endpoints(api_base: str | None = None, gateway: str | None = None) -> Iterator[None]:
    """Within the block, talk to ``api_base`` (ending in /api/v10) and ``gateway`` if given."""
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if api_base:
        discord.http.Route.BASE = api_base
        log.warning("using the Discord API at %s (testing only)", api_base)
    if gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
        log.warning("using the Discord gateway at %s (testing only)", gateway)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
