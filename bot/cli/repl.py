"""``charbot chat``: type the bot's slash commands in a terminal, against a local database.

Each line is one command (``/tale Once upon a time --temperature 0.5``); the answer printed
is the text the bot would post, made by the same reply logic and answers. Lines come from
any text stream, so a pipe or a file works as well as a person at the keyboard. The local
person is guild 0, channel 0, user 0: no Discord ID is 0, so local rows never mix with a
server's.

With ``--server ID`` the session is that server (its personas, settings and contributions in the
local database) and ``/say NAME words`` answers as its persona NAME, as /say does on Discord.

The conversation works as in a channel (:mod:`bot.core.conversation`): ``@bot words`` is a
mention, ``> words`` a reply to the bot's last message, ``/continue`` and ``/another`` press
the buttons under it. The session numbers its messages as Discord would and keeps what the
buttons need in the same table the bot does.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from bot.config import Limits
from bot.core import answers
from bot.core import conversation as conv
from bot.core.conversation import Link
from bot.core.heard import Heard
from bot.core.refusals import Refusal
from bot.core.replies import ReplyRequest, ReplyService, make_request
from bot.core.temperature import check_temperature
from bot.store import Store
from bot.store.conversation import ConversationStore
from corpora.registry import CORPORA

if TYPE_CHECKING:
    from bot.jobs.manager import FinetuneManager
    from bot.personas.service import PersonaService

LOCAL_GUILD = 0
LOCAL_CHANNEL = 0
LOCAL_USER = 0
LOCAL_BOT = -1  # the bot's own id in the session: never a person's

_OPTION = re.compile(r"(?:^|\s)--(temperature|length|seed)(?:=|\s+)(\S+)")


@dataclass
class GenerationOptions:
    prompt: str
    temperature: float | None = None
    length: int | None = None
    seed: int | None = None


def parse_generation(rest: str) -> GenerationOptions:
    """Split ``--temperature/--length/--seed`` options off a prompt; the rest is the prompt."""
    found: dict[str, str] = {}

    def take(m: re.Match[str]) -> str:
        found[m.group(1)] = m.group(2)
        return " "

    prompt = _OPTION.sub(take, rest).strip()
    opts = GenerationOptions(prompt)
    if "temperature" in found:
        opts.temperature = check_temperature(found["temperature"])
    for name in ("length", "seed"):
        if name in found:
            try:
                setattr(opts, name, int(found[name]))
            except ValueError:
                raise Refusal(f"--{name} must be a whole number, got {found[name]!r}.") from None
    return opts


class ChatSession:
    """Turns one typed line into the bot's answer."""

    def __init__(self, store: Store, service: ReplyService, limits: Limits, guild: int = LOCAL_GUILD,
                 personas: PersonaService | None = None, finetune: FinetuneManager | None = None) -> None:
        self.store = store
        self.service = service
        self.limits = limits
        self.guild = guild  # the server the session stands for (LOCAL_GUILD: none)
        self.personas = personas  # that server's personas, for /say (None: not set up)
        # The bot's versions, whose learned texts /forget scrubs as the bot's /forget does (None: not set up).
        self.finetune = finetune if finetune is not None or personas is None else personas.finetune
        self.messages: dict[int, tuple[str, int | None, bool]] = {}  # id -> (text, replied-to id, the bot's?)
        self.last_reply: int | None = None  # the bot's last message, which > and the buttons act on
        self._ids = itertools.count(1)

    async def handle(self, line: str) -> str | None:
        """The answer to ``line`` ('' for nothing to print), or None to end the session."""
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        try:
            if line.startswith("@"):
                return await self._mention(line.partition(" ")[2])
            if line.startswith(">"):
                return await self._reply(line[1:].strip())
            if not line.startswith("/"):
                return "Commands start with a slash (or talk to me: @bot words); try /help."
            name, _, rest = line[1:].partition(" ")
            name, rest = name.lower(), rest.strip()
            if name in conv.BUTTONS:
                return await self._press(name, rest)
            return await self._dispatch(name, rest)
        except Refusal as exc:
            return exc.message

    async def _dispatch(self, name: str, rest: str) -> str | None:
        """A corpus's name generates; any other command is answered from :data:`answers.COMMANDS`."""
        if name in CORPORA:
            return await self._generate(name, rest)
        if name == "say":
            return await self._say(rest)
        command = answers.COMMANDS_BY_NAME.get(name)
        if command is None or command.chat is None:
            return f"Unknown command /{name}; try /help."
        caller = answers.Caller(self.store, self.guild, LOCAL_CHANNEL, LOCAL_USER, self.limits,
                                self.service.models.info, self.service.models, self.finetune)
        return await command.chat(caller, rest)

    async def _generate(self, corpus: str, rest: str) -> str:
        opts = parse_generation(rest)
        request = make_request(
            corpus, opts.prompt, self.limits, temperature=opts.temperature,
            user_default=await self.store.get_temperature(self.guild, LOCAL_USER), length=opts.length,
            seed=opts.seed,
        )
        return (await self.service.reply(request)).text

    async def _say(self, rest: str) -> str:
        """``/say NAME words``: the server's persona NAME answers, as /say does on Discord."""
        if self.personas is None:
            return "Personas belong to a server: start the chat with `charbot chat --server ID` to talk to one."
        name, _, words = rest.partition(" ")
        if not name:
            have = ", ".join(await self.personas.names(self.guild)) or "none yet"
            return f"Say which persona: /say NAME words (this server's personas: {have})."
        row = await self.personas.get(self.guild, name)
        opts = parse_generation(words)
        request = make_request(
            row.key, opts.prompt, self.limits, temperature=opts.temperature,
            user_default=await self.store.get_temperature(self.guild, LOCAL_USER), length=opts.length,
            seed=opts.seed, guild=self.guild,
        )
        return (await self.service.reply(request)).text

    # ---- the conversation, as in a channel --------------------------------------------------

    async def _mention(self, rest: str) -> str:
        opts = parse_generation(rest)
        heard = Heard(self.guild, LOCAL_CHANNEL, LOCAL_USER, opts.prompt, mentions_me=True)
        return await self._answer(heard, opts, None)

    async def _reply(self, rest: str) -> str:
        if self.last_reply is None:
            return "There is no reply of mine to answer yet; mention me first: @bot Once upon a time"
        opts = parse_generation(rest)
        heard = Heard(self.guild, LOCAL_CHANNEL, LOCAL_USER, opts.prompt, replies_to_me=True)
        return await self._answer(heard, opts, self.last_reply)

    async def _answer(self, heard: Heard, opts: GenerationOptions, parent: int | None) -> str:
        """What the conversation cog posts for ``heard`` (empty when the bot stays silent)."""
        conversation = ConversationStore(self.store)
        settings = await conversation.channel(self.guild, LOCAL_CHANNEL)
        trigger = conv.trigger_for(heard, LOCAL_BOT, settings, lambda: False)
        said = self._log(heard.content, parent, False)
        if trigger is None:
            return ""
        served = list(self.service.models.engines)
        corpus, context = conv.persona_for(settings, served), ""
        if parent is not None:
            corpus = conv.persona_for(settings, served, await conversation.reply(parent))
            context = await conv.chain_context(parent, self._link, self.limits.chain_messages, self.limits.chain_chars)
        request = conv.message_request(trigger, heard, LOCAL_BOT, "bot", corpus, self.limits, context,
                                       await self.store.get_temperature(self.guild, LOCAL_USER), seed=opts.seed)
        return await self._post(request, said)

    async def _press(self, action: str, rest: str) -> str:
        opts = parse_generation(rest)
        row = await ConversationStore(self.store).reply(self.last_reply) if self.last_reply is not None else None
        conv.check_press(row, action, LOCAL_USER, self.limits)
        seed = opts.seed if opts.seed is not None else random.randrange(2**31)
        request = conv.press_request(row, action, LOCAL_USER, self.limits, seed,
                                     await self.store.get_temperature(self.guild, LOCAL_USER))
        if action == "continue":
            return await self._post(request, self.last_reply)
        return await self._post(request, self.messages[self.last_reply][1], rewrite=self.last_reply)

    async def _post(self, request: ReplyRequest, parent: int | None, rewrite: int | None = None) -> str:
        """Write the reply, number it (or write over ``rewrite``), and keep what its buttons need."""
        update = await self.service.reply(request)
        message = rewrite if rewrite is not None else next(self._ids)
        self.messages[message] = (update.text, parent, True)
        self.last_reply = message
        await conv.remember(self.store, self.limits, message, self.guild, request, update)
        return update.text

    def _log(self, text: str, parent: int | None, from_bot: bool) -> int:
        message = next(self._ids)
        self.messages[message] = (text, parent, from_bot)
        return message

    async def _link(self, message: int) -> Link | None:
        if message not in self.messages:
            return None
        text, parent, from_bot = self.messages[message]
        if not from_bot:
            return Link(conv.words_of(text, LOCAL_BOT), parent)
        return conv.bot_link(await ConversationStore(self.store).reply(message), text, parent)


async def run_chat(session: ChatSession, lines: TextIO, out: TextIO, interactive: bool) -> int:
    """Answer every line of ``lines`` until end of input or /quit."""
    if interactive:
        out.write("charbot chat: type /help for commands, /quit or Ctrl-D to leave.\n")
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line:
            if interactive:
                out.write("\n")
            return 0
        answer = await session.handle(line)
        if answer is None:
            return 0
        if answer:
            out.write(answer + "\n")
            out.flush()
