"""The conversation tables: each channel's persona and chime-in setting, and the replies whose
Continue and Another buttons still work.

Like :mod:`bot.store.jobs`, a companion of :class:`bot.store.base.Store` that uses only its
query primitives, so it works on every backend. Every process sharing the store reads the same
settings, so a persona set through one bot process is honoured by all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from bot.store.base import Store, parse_utc, utc_now


@dataclass(frozen=True)
class ChannelSettings:
    """How the bot behaves in one channel; the defaults are a channel no admin has set."""

    persona: str | None = None  # None: the bot's default persona
    mentions: bool = True  # answer mentions and replies to its messages here
    chime_chance: float = 0.0  # chance per ordinary message that the bot joins in uninvited
    chime_every_s: float = 600.0  # the least time between two chime-ins in the channel


@dataclass(frozen=True)
class PostedReply:
    """What the buttons under one of the bot's replies need."""

    message_id: int
    guild_id: int | None
    channel_id: int
    asker_id: int
    corpus: str
    made_by: str  # the trigger: slash, mention, reply, button, menu, chime
    prompt: str | None  # the asker's words; None when not kept (opted out, or someone else's words)
    context: str | None  # the conversation before them, under the same rule
    tail: str  # the end of the bot's text, which Continue carries on from
    seed: int | None
    created: str

    def age_s(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (now - parse_utc(self.created)).total_seconds()


_REPLY_COLUMNS = "message_id, guild_id, channel_id, asker_id, corpus, made_by, prompt, context, tail, seed, created"


class ConversationStore:
    """Channel settings and posted replies, over any :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def channel(self, guild_id: int | None, channel_id: int) -> ChannelSettings:
        if guild_id is None:
            return ChannelSettings()
        row = await self.store.fetchone(
            "SELECT persona, mentions, chime_chance, chime_every_s FROM channel_settings "
            "WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id))
        if row is None:
            return ChannelSettings()
        persona, mentions, chance, every = row
        return ChannelSettings(None if persona is None else str(persona), bool(mentions), float(chance), float(every))

    async def channels(self, guild_id: int) -> dict[int, ChannelSettings]:
        rows = await self.store.fetchall(
            "SELECT channel_id, persona, mentions, chime_chance, chime_every_s FROM channel_settings "
            "WHERE guild_id = ? ORDER BY channel_id", (guild_id,))
        return {int(c): ChannelSettings(None if p is None else str(p), bool(m), float(ch), float(e))
                for c, p, m, ch, e in rows}

    async def set_channel(self, guild_id: int, channel_id: int, settings: ChannelSettings, by: int) -> None:
        await self.store.write([(
            "INSERT INTO channel_settings (guild_id, channel_id, persona, mentions, chime_chance, chime_every_s, "
            "updated_by, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, channel_id) DO UPDATE SET "
            "persona = excluded.persona, mentions = excluded.mentions, chime_chance = excluded.chime_chance, "
            "chime_every_s = excluded.chime_every_s, updated_by = excluded.updated_by, updated = excluded.updated",
            (guild_id, channel_id, settings.persona, int(settings.mentions), settings.chime_chance,
             settings.chime_every_s, by, utc_now()),
        )])

    async def record_reply(self, reply: PostedReply, keep_for_s: float) -> None:
        """Keep what the buttons under ``reply`` need; forget replies whose buttons expired."""
        cutoff = utc_now(keep_for_s)
        await self.store.write([
            (f"INSERT INTO posted_replies ({_REPLY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
             "ON CONFLICT (message_id) DO UPDATE SET prompt = excluded.prompt, context = excluded.context, "
             "tail = excluded.tail, seed = excluded.seed, created = excluded.created",
             (reply.message_id, reply.guild_id, reply.channel_id, reply.asker_id, reply.corpus, reply.made_by,
              reply.prompt, reply.context, reply.tail, reply.seed, reply.created)),
            ("DELETE FROM posted_replies WHERE created < ?", (cutoff,)),
        ])

    async def reply(self, message_id: int) -> PostedReply | None:
        row = await self.store.fetchone(f"SELECT {_REPLY_COLUMNS} FROM posted_replies WHERE message_id = ?",
                                        (message_id,))
        if row is None:
            return None
        m, g, c, a, corpus, made_by, prompt, context, tail, seed, created = row
        return PostedReply(int(m), None if g is None else int(g), int(c), int(a), str(corpus), str(made_by),
                           None if prompt is None else str(prompt), None if context is None else str(context),
                           str(tail), None if seed is None else int(seed), str(created))
