"""Which messages in a listening channel become contributions.

Only what people write on purpose, in a channel an admin set to listen, by someone who has not
opted out: never other bots, webhooks, system notices, commands for any bot, or empty
messages (attachments alone).
"""

from __future__ import annotations

from bot.config import Limits
from bot.core.heard import Heard
from bot.core.sanitise import storable_text
from bot.store import Store

COMMAND_PREFIXES = ("/", "!", "?", "$", "%", "&", ";;")  # common prefixes of text commands for bots


def usable_text(message: Heard, limits: Limits) -> str | None:
    """The text to keep from ``message``, or None when it is not a person's own prose."""
    if message.guild_id is None or message.author_is_bot or message.is_webhook or message.is_system:
        return None
    text = storable_text(message.content).strip()
    if not text or text.startswith(COMMAND_PREFIXES):
        return None
    return text[: limits.max_contribution_chars]


async def collect(store: Store, message: Heard, limits: Limits) -> int | None:
    """Store ``message`` for its channel's corpus if the rules allow; return the contribution id."""
    text = usable_text(message, limits)
    if text is None:
        return None
    corpus = await store.listening_corpus(message.guild_id, message.channel_id)
    if corpus is None or await store.is_opted_out(message.guild_id, message.author_id):
        return None
    return await store.add_contribution(message.guild_id, message.channel_id, message.author_id, corpus, text, "listen")
