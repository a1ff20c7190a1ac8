"""What the non-generating commands do, as plain text answers (no Discord objects).

/temp, /contribute, /forget, /optout, /listen, /unlisten, /model and /help: the cogs send
these answers and ``charbot chat`` prints them, so both behave the same. Bad input raises
:class:`~bot.core.refusals.Refusal` with a message for the person (quoting what they typed only
through :func:`bot.core.sanitise.quote`), and never reaches the database.

:data:`COMMANDS` is the one list of these commands: each one's line in the help texts and
how ``charbot chat`` answers it, so a new command is added in one place for the help and
the terminal (and in a cog for Discord).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.config import Limits
from bot.core.conversation import describe_channel, persona_for, voice_named
from bot.core.engines import ModelInfo, Models
from bot.core.refusals import Refusal
from bot.core.sanitise import clean_text, quote
from bot.core.temperature import check_temperature
from bot.store import Store
from bot.store.conversation import ConversationStore
from corpora.registry import CORPORA
from corpora.voices import display_name, parse_key
from model.charset import normalize

if TYPE_CHECKING:
    from bot.jobs.manager import FinetuneManager

log = logging.getLogger(__name__)


MAX_CHIME_PERCENT = 50  # joining in on more than every other message would drown a channel
MAX_CHIME_EVERY_MIN = 1440  # the longest least time between two chime-ins: a day


@dataclass(frozen=True)
class Answer:
    """A reply to a command; ``ephemeral`` answers are shown only to the person who asked."""

    text: str
    ephemeral: bool = True


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


SERVERS_ONLY = "That works in servers only: use it in a server's channel, not in a direct message."


def check_corpus(corpus: str) -> str:
    if not isinstance(corpus, str) or corpus not in CORPORA:
        raise Refusal(f"There is no corpus called {quote(corpus)}; choose one of {', '.join(CORPORA)}.")
    return corpus


def in_server(guild_id: int | None) -> int:
    """The server the command came from; a direct message has none, and these answers belong to a server."""
    if guild_id is None:
        raise Refusal(SERVERS_ONLY, "not_allowed")
    return guild_id


def corpus_defaults() -> str:
    return ", ".join(f"{name} {c.default_temperature:g}" for name, c in CORPORA.items())


async def temp(
    store: Store, guild_id: int | None, user_id: int, value: object = None, reset: bool = False
) -> Answer:
    """Show, set or clear the caller's default temperature in this server."""
    guild_id = in_server(guild_id)
    if reset:
        await store.set_temperature(guild_id, user_id, None)
        return Answer(f"Your default temperature here is cleared; each corpus uses its own ({corpus_defaults()}).")
    if value is None:
        current = await store.get_temperature(guild_id, user_id)
        if current is None:
            return Answer(f"You have no default temperature in this server; each corpus uses its own "
                          f"({corpus_defaults()}). Set one with `/temp 0.5` (0 = predictable, 2 = wild).")
        return Answer(f"Your default temperature in this server is {current:g}. A command's own temperature "
                      "option still wins; `/temp reset` clears it.")
    t = check_temperature(value)
    await store.set_temperature(guild_id, user_id, t)
    return Answer(f"Your default temperature in this server is now {t:g}.")


async def contribute(
    store: Store, guild_id: int | None, channel_id: int, user_id: int, corpus: str, text: str, source: str,
    limits: Limits,
) -> Answer:
    """Store a text offered for a corpus; the answer is sent only once it is on disk.

    Characters no text needs and the database cannot hold (lone surrogates, NUL and other
    control characters, bidirectional overrides) are left out, and the answer says how many.
    """
    guild_id = in_server(guild_id)
    check_corpus(corpus)
    if not isinstance(text, str):
        raise Refusal("There was no text to save; write something, then send it.")
    text, dropped = clean_text(text)
    text = text.strip()
    if not text:
        raise Refusal("There was no text to save; write something, then send it.")
    if len(text) > limits.max_contribution_chars:
        raise Refusal(f"That text is {len(text):,} characters; the limit is {limits.max_contribution_chars:,}. "
                      "Send it in parts.")
    if not normalize(text).text.strip():
        raise Refusal("I can only learn from plain letters, digits and punctuation, and that text had none.")
    cid = await store.add_contribution(guild_id, channel_id, user_id, corpus, text, source)
    left_out = ""
    if dropped:
        left_out = (f" I left out {_plural(dropped, 'character')} that text cannot hold (control characters, "
                    "direction overrides or broken bytes).")
    return Answer(f"Thank you! Saved your text ({_plural(len(text), 'character')}) for **{corpus}** as "
                  f"contribution #{cid}.{left_out} `/forget` deletes everything you contributed in this server.")


async def forget(
    store: Store, guild_id: int | None, user_id: int, finetune: FinetuneManager | None = None,
    models: Models | None = None,
) -> Answer:
    """/forget, for the cog and ``charbot chat`` alike: delete the caller's contributions here, take them
    out of every kept version's learned texts (:meth:`FinetuneManager.scrub`, when fine-tuning is set up)
    and rebuild the lexicon and passages ``models`` serve from those texts (:meth:`Models.reground`), so
    no grounded answer quotes them any more; then say which kept versions still learned from them."""
    guild_id = in_server(guild_id)
    ids = {c.id for c in await store.contributions(guild_id=guild_id, user_id=user_id)}
    n = await store.forget(guild_id, user_id)
    if ids and finetune is not None:
        await finetune.scrub(ids, models.reground if models is not None else _nothing_served)
    carriers = await store.learned_from(guild_id, user_id)
    if n == 0 and not carriers:
        return Answer("You have no contributions stored in this server; nothing to delete.")
    head = (f"Deleted {_plural(n, 'contribution')} of yours from this server." if n else
            "You have no contributions stored in this server any more.")
    if not carriers:
        return Answer(head)
    # Deleting the texts does not take them out of the weights: say which versions still carry them.
    named = "; ".join(f"the {display_name(c.corpus)} model, version {c.version}"
                      f"{' (served now)' if c.served else ''}, learned from {c.texts} of your texts" for c in carriers)
    log.warning("/forget: %d contributions deleted; kept versions still carry them: %s", n,
                ", ".join(f"{c.corpus} v{c.version}" for c in carriers))
    return Answer(f"{head} But {named}; deleting the texts does not remove what a model learned from them. "
                  "An admin has been told (`/finetune status`) and can retrain without them or roll back.")


def _nothing_served(corpus: str) -> None:
    """No engines in this process to reground: the next load reads the scrubbed texts."""


async def optout(store: Store, guild_id: int | None, user_id: int, undo: bool = False) -> Answer:
    """Stop (or with ``undo``, resume) storing the caller's messages in listening channels."""
    guild_id = in_server(guild_id)
    changed = await store.set_opt_out(guild_id, user_id, not undo)
    kept = await store.count_contributions(guild_id, user_id)
    if undo:
        head = "You're opted back in" if changed else "You were not opted out"
        return Answer(f"{head}: messages you write in listening channels here may be stored to train the models.")
    head = "Done" if changed else "You were already opted out"
    tail = ""
    if kept:
        tail = f" You have {_plural(kept, 'contribution')} stored here; `/forget` deletes what you contributed."
    return Answer(f"{head}: I won't store your messages in listening channels in this server. "
                  f"Texts you send yourself with `/contribute` are still kept.{tail}")


async def listen(store: Store, guild_id: int | None, channel_id: int, corpus: str) -> Answer:
    guild_id = in_server(guild_id)
    check_corpus(corpus)
    before = await store.listen(guild_id, channel_id, corpus)
    if before == corpus:
        return Answer(f"This channel is already collecting messages for **{corpus}**.")
    was = f" (instead of {before})" if before else ""
    return Answer(f"From now on, messages people write in this channel are stored for **{corpus}**{was}. "
                  "Bots, commands and people who used `/optout` are skipped; `/unlisten` stops it.", ephemeral=False)


NEEDS_CONTENT_INTENT = ("Chiming in needs the Message Content intent, which this bot runs without: turn it on in "
                        "the Developer Portal (Bot > Privileged Gateway Intents) and restart me.")


async def channel(
    store: Store, guild_id: int | None, channel_id: int, user_id: int, served: Sequence[str],
    persona: str | None = None, mentions: bool | None = None, chime_percent: float | None = None,
    chime_every_min: float | None = None, can_chime: bool = True,
) -> Answer:
    """Show or change how the bot behaves in this channel: its persona, mentions, chiming in.

    ``served`` is who may speak in this server (:func:`bot.core.conversation.speakers`); ``persona``
    names one of them: a corpus, or one of this server's personas by its name. The persona's key is
    stored."""
    guild_id = in_server(guild_id)
    if persona is not None:
        wanted_voice = voice_named(persona, guild_id, served)
        if wanted_voice is None:
            raise Refusal(f"I don't serve {quote(persona)} here; I serve {voices_text(served)}.")
        persona = wanted_voice
    if chime_percent is not None and not (math.isfinite(chime_percent) and 0 <= chime_percent <= MAX_CHIME_PERCENT):
        raise Refusal(f"Chiming in takes a chance from 0 to {MAX_CHIME_PERCENT}%.")
    if chime_every_min is not None and not (
            math.isfinite(chime_every_min) and 1 <= chime_every_min <= MAX_CHIME_EVERY_MIN):
        raise Refusal(f"The least time between two chime-ins is from 1 to {MAX_CHIME_EVERY_MIN} minutes.")
    conversation = ConversationStore(store)
    current = await conversation.channel(guild_id, channel_id)
    wanted = replace(
        current,
        persona=current.persona if persona is None else persona,
        mentions=current.mentions if mentions is None else mentions,
        chime_chance=current.chime_chance if chime_percent is None else chime_percent / 100,
        chime_every_s=current.chime_every_s if chime_every_min is None else chime_every_min * 60,
    )
    if wanted.chime_chance > 0 and not can_chime:
        raise Refusal(NEEDS_CONTENT_INTENT, "unavailable")
    if wanted != current:
        await conversation.set_channel(guild_id, channel_id, wanted, by=user_id)
    return Answer(describe_channel(wanted, persona_for(wanted, served), changed=wanted != current), ephemeral=False)


def voices_text(served: Sequence[str]) -> str:
    """Who may speak, for a person: the corpora, then this server's personas by their names."""
    corpora = [s for s in served if parse_key(s) is None]
    own = [display_name(s) for s in served if parse_key(s) is not None]
    return ", ".join(corpora) + (f" and this server's personas {', '.join(own)}" if own else "")


async def unlisten(store: Store, guild_id: int | None, channel_id: int) -> Answer:
    guild_id = in_server(guild_id)
    before = await store.unlisten(guild_id, channel_id)
    if before is None:
        return Answer("This channel was not collecting messages.")
    return Answer(f"Stopped collecting messages in this channel (it collected for **{before}**).", ephemeral=False)


def model_text(info: dict[str, ModelInfo]) -> str:
    """One line per corpus: which checkpoint, how good on held-out text, how big, on what device."""
    lines = []
    for name, corpus in CORPORA.items():
        m = info.get(name)
        if m is None:
            lines.append(f"**{name}**: not loaded on this bot")
            continue
        bpc = "not measured" if m.val_bpc is None else f"{m.val_bpc:.3f} bits/char on held-out text"
        tuned = " (fine-tuned)" if m.parent else ""
        lines.append(f"**{name}** ({corpus.description}): version `{m.version}`{tuned}, {bpc}, "
                     f"{m.n_params:,} parameters, on {m.device} in {m.precision}")
    return "\n".join(lines)


# Talking without a command (bot.core.conversation), after the commands in each help text.
TALK = ("Or just talk to me: mention me, or reply to one of my messages, and I carry on in this channel's "
        "persona; under a reply, **Continue** goes on and **Another** (yours only) writes it again.")
TALK_CHAT = ("Or talk: @bot words (a mention), > words (a reply to my last message), /continue and /another "
             "(the buttons under it).")


def help_text(chat: bool = False, persona_bounds: Sequence[str] = ()) -> str:
    """The commands, as the person can type them (in Discord, or in ``charbot chat`` with ``chat``):
    the corpora's, then each of :data:`COMMANDS` listed there. ``persona_bounds``
    (:meth:`bot.personas.settings.PersonaSettings.lines`) is shown to admins, who make personas."""
    options = "--temperature T --length N --seed S" if chat else "[temperature] [length]"
    lines = [
        f"/{name} {corpus.style.prompt_label} {options}: {corpus.description}"
        for name, corpus in CORPORA.items()
    ]
    lines += [line for command in COMMANDS if (line := command.chat_help if chat else command.help)]
    if persona_bounds:
        lines.append("Personas on this bot (admins): " + "; ".join(persona_bounds) + ".")
    return "\n".join([*lines, TALK_CHAT if chat else TALK])


@dataclass(frozen=True)
class Caller:
    """Who typed a command and where, with what the answers need; built afresh for each command."""

    store: Store
    guild_id: int | None
    channel_id: int
    user_id: int
    limits: Limits
    models: dict[str, ModelInfo]
    engines: Models | None = None  # what this process serves, regrounded after /forget
    finetune: FinetuneManager | None = None  # the bot's versions, whose learned texts /forget scrubs


# How ``charbot chat`` answers a command from the rest of the typed line: the text to print,
# or None to end the session.
ChatAnswer = Callable[[Caller, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Command:
    """A command that answers without generating: its line in each help text (None: not
    listed there) and how ``charbot chat`` answers it (None: Discord only, unknown there)."""

    name: str
    help: str | None
    chat_help: str | None
    chat: ChatAnswer | None

    @classmethod
    def alike(cls, name: str, line: str, chat: ChatAnswer) -> Command:
        """A command both help texts list with the same line."""
        return cls(name, line, line, chat)


async def _chat_temp(caller: Caller, rest: str) -> str:
    g, u = caller.guild_id, caller.user_id
    if rest.lower() == "reset":
        return (await temp(caller.store, g, u, reset=True)).text
    if not rest:
        return (await temp(caller.store, g, u)).text
    return (await temp(caller.store, g, u, rest)).text  # check_temperature reads and words it


async def _chat_contribute(caller: Caller, rest: str) -> str:
    corpus, _, text = rest.partition(" ")
    if not corpus:
        raise Refusal(f"Say which corpus and the text: /contribute {next(iter(CORPORA))} your text here")
    return (await contribute(caller.store, caller.guild_id, caller.channel_id, caller.user_id, corpus, text, "cli",
                             caller.limits)).text


async def _chat_forget(caller: Caller, rest: str) -> str:
    return (await forget(caller.store, caller.guild_id, caller.user_id, caller.finetune, caller.engines)).text


async def _chat_optout(caller: Caller, rest: str) -> str:
    return (await optout(caller.store, caller.guild_id, caller.user_id, undo=rest.lower() == "undo")).text


async def _chat_model(caller: Caller, rest: str) -> str:
    return model_text(caller.models)


async def _chat_channel(caller: Caller, rest: str) -> str:
    answer = await channel(caller.store, caller.guild_id, caller.channel_id, caller.user_id, list(caller.models),
                           persona=rest.split()[0].lower() if rest.split() else None)
    return answer.text


async def _chat_help(caller: Caller, rest: str) -> str:
    return help_text(chat=True)


async def _chat_quit(caller: Caller, rest: str) -> None:
    return None


def _in_channels_only(name: str) -> ChatAnswer:
    """The answer for a command that needs a Discord channel (a terminal has none)."""
    async def answer(caller: Caller, rest: str) -> str:
        return f"/{name} works in Discord channels only."
    return answer


# The non-generating commands, in the order the help texts list them.
COMMANDS: tuple[Command, ...] = (
    Command.alike("temp", "/temp [value]: show or set your default temperature here (0 = predictable, 2 = wild); "
                  "/temp reset clears it", _chat_temp),
    Command.alike("model", "/model: which model each corpus runs and how good it is", _chat_model),
    Command("contribute", "/contribute corpus: offer a text to teach a corpus",
            "/contribute corpus text: offer a text to teach a corpus", _chat_contribute),
    Command.alike("forget", "/forget: delete everything you contributed here", _chat_forget),
    Command.alike("optout", "/optout: stop your messages in listening channels from being stored "
                  "(/optout undo to resume)", _chat_optout),
    Command.alike("channel", "/channel [persona] [mentions] [chime] [chime_every]: (admins) who speaks in this "
                  "channel, whether I answer mentions, how often I join in uninvited", _chat_channel),
    Command("say", "/say persona prompt: talk to one of this server's own personas", None, None),
    Command("persona", "/persona list, /persona info name: this server's own personas, made by its admins from "
            "their text; /persona create name style file..., /persona retrain name and /persona delete name: (admins) "
            "make one, train it again or remove it",
            None, None),
    Command("help", None, "/help: this list", _chat_help),
    Command("quit", None, "/quit: leave (or Ctrl-D)", _chat_quit),
    Command("exit", None, None, _chat_quit),
    Command("listen", "/listen corpus, /unlisten: (admins) collect this channel's messages for a corpus", None,
            _in_channels_only("listen")),
    Command("unlisten", None, None, _in_channels_only("unlisten")),
    Command("finetune",
            "/finetune start corpus [minutes] [force], /finetune status, /finetune cancel corpus: "
            "(admins) teach a corpus its contributions, while the bot keeps talking; a result that forgets "
            "the corpus is refused unless forced",
            None, None),
    Command("rollback", "/rollback corpus [version]: (admins) serve an earlier version of a corpus's model", None,
            None),
)
COMMANDS_BY_NAME: dict[str, Command] = {command.name: command for command in COMMANDS}


def may_administer(user_id: int, has_manage_guild: bool, admin_ids: frozenset[int]) -> bool:
    """Admins are the configured user IDs and anyone with Manage Server in this server.

    ``has_manage_guild`` must count Administrator, which implies every permission
    (:func:`bot.discord_app.interactions.is_admin` does).
    """
    return user_id in admin_ids or has_manage_guild
