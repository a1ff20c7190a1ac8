"""Talking with the bot outside slash commands: when it answers, in which persona, and what it continues.

Discord-free, so the cogs and ``charbot chat`` decide alike: a message that mentions the bot,
a direct message, or a reply to one of its messages is answered (unless an admin turned
mentions off in that channel); in a chime-in channel an ordinary message is answered now and
then. Messages from bots, webhooks, the system or the bot itself never are, so two bots cannot
talk each other into a loop. A reply to one of its messages continues the conversation: the
chain of messages before it, walked back a bounded number of messages and characters, primes
the next reply. The Continue and Another buttons build their requests here too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from bot.config import Limits
from bot.core.heard import Heard
from bot.core.refusals import Refusal
from bot.core.replies import ReplyRequest, ReplyUpdate, Trigger, make_request
from bot.core.sanitise import clean_text
from bot.store import Store, utc_now
from bot.store.conversation import ChannelSettings, ConversationStore, PostedReply
from corpora.voices import BadName, display_name, parse_key, persona_key, personas_of

# Discord's markup for mentions of people, roles and channels, custom emoji and timestamps.
_MARKUP = re.compile(r"<(?:@[!&]?\d+|#\d+|a?:\w+:\d+|t:\d+(?::[a-zA-Z])?)>")
_SPACES = re.compile(r"[ \t]+")
_ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060\ufeff]")
_SOURCE_BLOCK = re.compile(r"\n\n> \*[^*\n]+:\* \u201c.*\Z", re.S)  # the quoted source under a grounded answer
_ESCAPED = re.compile(r"\\([\\*_~`|#>.-])")
_NOTES = re.compile(r"\n?\*\((?:cut short|no words came)[^)]*\)\*")


@dataclass
class ChimeClock:
    """When the bot last joined in uninvited, per channel, so it never chimes in twice within the interval."""

    last: dict[Hashable, float] = field(default_factory=dict)

    def ready(self, channel: Hashable, every_s: float, now: float) -> bool:
        last = self.last.get(channel)
        return last is None or now - last >= every_s

    def chimed(self, channel: Hashable, now: float) -> None:
        self.last[channel] = now


def trigger_for(heard: Heard, me: int, settings: ChannelSettings, chime: Callable[[], bool]) -> Trigger | None:
    """Why the bot answers ``heard``, or None to stay silent.

    ``chime`` is asked only for an ordinary message in a channel with a chance of chiming in;
    it rolls the dice and checks the interval.
    """
    if heard.author_id == me or heard.author_is_bot or heard.is_webhook or heard.is_system:
        return None
    if heard.replies_to_me:
        return "reply" if settings.mentions else None
    if heard.mentions_me or heard.guild_id is None:  # a direct message is addressed to the bot
        return "mention" if settings.mentions else None
    if settings.chime_chance > 0 and words_of(heard.content, me) and chime():
        return "chime"
    return None


def words_of(content: str, me: int, limit: int | None = None) -> str:
    """What a person said, without Discord's mention and emoji markup, cleaned and on one line per line.

    Over ``limit`` characters, the end is kept (a reply continues the last words), cut at a space.
    """
    text = _ZERO_WIDTH.sub("", _MARKUP.sub(" ", content))
    text = clean_text(text)[0]
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()
    return text if limit is None else tail_of(text, limit)


def plain(posted: str) -> str:
    """The words of a message the bot posted, without its markup: what a reply chain continues."""
    text = _SOURCE_BLOCK.sub("", posted)
    text = _NOTES.sub("", text)
    text = "\n".join(line[2:] if line.startswith("> ") else line for line in text.split("\n"))
    text = text.replace("**", "").replace("\u200b", "")
    text = _ESCAPED.sub(r"\1", text)
    return text.rstrip("\u2026 ").strip()


@dataclass(frozen=True)
class Link:
    """One message of a reply chain: its words, and the message it replies to (None: the chain starts here)."""

    text: str
    parent: int | None


def bot_link(row: PostedReply | None, posted: str, parent: int | None) -> Link:
    """One of the bot's own messages in a chain: the words it answered and the end of what it wrote
    when the store still has them, else the message's text without its markup."""
    if row is not None:
        return Link(" ".join(part for part in (row.prompt or "", row.tail) if part), parent)
    return Link(plain(posted), parent)


async def chain_context(
    first: int | None, fetch: Callable[[int], Awaitable[Link | None]], max_messages: int, max_chars: int
) -> str:
    """The conversation a reply continues: the chain from message ``first`` back, oldest first.

    At most ``max_messages`` messages and about ``max_chars`` characters (the newest kept); a
    message that was deleted or cannot be fetched ends the chain there.
    """
    texts: list[str] = []
    seen: set[int] = set()
    used = 0
    message = first
    while message is not None and message not in seen and len(texts) < max_messages and used < max_chars:
        seen.add(message)  # a forged reference could point back into the chain
        link = await fetch(message)
        if link is None:
            break
        if link.text:
            texts.append(link.text)
            used += len(link.text) + 2
        message = link.parent
    return tail_of("\n\n".join(reversed(texts)), max_chars)


def tail_of(text: str, max_chars: int) -> str:
    """The last ``max_chars`` of ``text``, starting at a word: what a reply carries on from."""
    if len(text) <= max_chars:
        return text
    end = text[-max_chars:]
    space = end.find(" ")
    return end[space + 1:] if 0 <= space < max_chars // 4 else end


# ---- requests: a message, a button press, the context menu ------------------------------------

BUTTON_PREFIX = "charbot:"
BUTTONS: dict[str, str] = {"continue": "Continue", "another": "Another"}  # action -> label
NOTHING_TO_CONTINUE = ("Mention me with some words and I'll carry on from them, for example "
                       "`@{me} Once upon a time there was a fox`.")
EXPIRED = ("These buttons have expired (they work for {hours:g} hours after a reply); mention me or use a "
           "slash command to start again.")
NOT_MINE = "That button isn't one of mine, or it is from an older version of me; mention me to start again."
ONLY_ASKER = "Only the person who asked can ask for another; press **Continue**, or ask me yourself."
NOT_KEPT = ("I don't keep the words this reply answered (they were opted out of storage, or forgotten), so I "
            "can't write another; ask me again.")


def custom_id(action: str) -> str:
    """The id a button carries; the state it needs is kept in the store under the message it sits on."""
    return BUTTON_PREFIX + action


def button_action(value: object) -> str:
    """The action of a pressed button, or a Refusal for an id that is not one of ours (tampered, or old)."""
    if isinstance(value, str) and value.startswith(BUTTON_PREFIX) and value[len(BUTTON_PREFIX):] in BUTTONS:
        return value[len(BUTTON_PREFIX):]
    raise Refusal(NOT_MINE, "invalid")


def message_request(
    trigger: Trigger, heard: Heard, me: int, me_name: str, corpus: str, limits: Limits,
    context: str = "", user_default: float | None = None, seed: int | None = None,
) -> ReplyRequest:
    """What to write for a message that mentions the bot, replies to it, or that it chimes in on."""
    words = words_of(heard.content, me, limits.max_prompt_chars)
    if not words and not context:
        raise Refusal(NOTHING_TO_CONTINUE.format(me=me_name), "invalid")
    return make_request(corpus, words, limits, user_default=user_default, user=heard.author_id,
                        channel=heard.channel_id, trigger=trigger, context=context, seed=seed, guild=heard.guild_id)


def check_press(
    row: PostedReply | None, action: str, presser: int, limits: Limits, age_s: float | None = None
) -> PostedReply:
    """The reply a button sits on, if the press may go ahead; else a Refusal the presser sees privately."""
    hours = limits.button_hours
    if row is None or (age_s if age_s is not None else row.age_s()) > hours * 3600:
        raise Refusal(EXPIRED.format(hours=hours), "invalid")
    if action == "another":
        if presser != row.asker_id:
            raise Refusal(ONLY_ASKER, "not_allowed")
        if row.prompt is None:
            raise Refusal(NOT_KEPT, "invalid")
    return row


def press_request(
    row: PostedReply, action: str, presser: int, limits: Limits, seed: int, user_default: float | None = None,
    guild: int | None = None,
) -> ReplyRequest:
    """Continue: the story goes on from the end of the reply. Another: the same words, a new seed.

    ``guild`` is the server the press came from (default: the reply's own); a persona answers only
    there, so a press sent from elsewhere on a persona's reply is refused like an unknown persona."""
    where = row.guild_id if guild is None else guild
    if action == "continue":
        return make_request(row.corpus, "", limits, user_default=user_default, user=presser, channel=row.channel_id,
                            trigger="button", context=row.tail, seed=seed, guild=where)
    return make_request(row.corpus, row.prompt or "", limits, user_default=user_default, user=presser,
                        channel=row.channel_id, trigger="button", context=row.context or "", seed=seed, guild=where)


def posted_reply(
    message_id: int, guild_id: int | None, request: ReplyRequest, update: ReplyUpdate, keep_words: bool,
    limits: Limits,
) -> PostedReply:
    """What the store keeps of a finished reply for its buttons: the asker's words only if ``keep_words``."""
    text = update.generation.text if update.generation is not None else ""
    return PostedReply(
        message_id=message_id, guild_id=guild_id, channel_id=int(request.channel or 0), asker_id=int(request.user or 0),
        corpus=request.corpus, made_by=request.trigger, prompt=request.prompt if keep_words else None,
        context=request.context if keep_words else None, tail=tail_of(text, limits.chain_chars) or request.context,
        seed=update.seed, created=utc_now(),
    )


async def remember(
    store: Store, limits: Limits, message_id: int, guild_id: int | None, request: ReplyRequest, update: ReplyUpdate,
    words_are_askers: bool = True,
) -> None:
    """Keep what the buttons under a posted reply need. The asker's words are kept only when they
    are the asker's own (not a message someone else wrote) and the asker has not opted out."""
    keep = words_are_askers and not (guild_id is not None and request.user is not None
                                     and await store.is_opted_out(guild_id, int(request.user)))
    record = posted_reply(message_id, guild_id, request, update, keep, limits)
    await ConversationStore(store).record_reply(record, keep_for_s=limits.button_hours * 3600)


def speakers(guild_id: int | None, corpora: Iterable[str]) -> list[str]:
    """Who may speak in a server: the built-in corpora among ``corpora`` (the engines loaded), then that
    server's own personas by key, loaded or not (they load on their first reply). Another server's
    personas are never among them, and a direct message has the corpora only."""
    return [c for c in corpora if parse_key(c) is None] + [c.name for c in personas_of(guild_id).values()]


def voice_named(name: str, guild_id: int | None, served: Sequence[str]) -> str | None:
    """The voice among ``served`` a person means by ``name``: a corpus by its name, this server's persona
    by its own name; None when it is none of them (another server's persona included)."""
    if name in served:
        return name
    if name.strip().lower() in served and parse_key(name.strip().lower()) is None:
        return name.strip().lower()  # a corpus, however it was typed
    try:
        key = persona_key(guild_id, name) if guild_id is not None else None
    except (BadName, ValueError):
        return None
    return key if key in served else None


def persona_for(settings: ChannelSettings, served: Sequence[str], replying_to: PostedReply | None = None) -> str:
    """Who speaks: the persona of the reply being answered, else the channel's, else the first served
    (a persona no longer served falls through to the next)."""
    for wanted in (replying_to.corpus if replying_to is not None else None, settings.persona):
        if wanted in served:
            return wanted
    return served[0]


def describe_channel(settings: ChannelSettings, persona: str, changed: bool = False) -> str:
    """What /channel (and /help) say about how the bot behaves in a channel."""
    said = [f"In this channel I speak as **{display_name(persona)}**"]
    if settings.mentions:
        said.append("and answer mentions and replies to my messages.")
    else:
        said.append("but don't answer mentions or replies here (slash commands still work).")
    if settings.chime_chance > 0:
        said.append(f"I join in uninvited on about {settings.chime_chance:.0%} of messages, at most once every "
                    f"{settings.chime_every_s / 60:g} minutes.")
    else:
        said.append("I never join in uninvited.")
    return ("Done. " if changed else "") + " ".join(said)
