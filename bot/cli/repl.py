"""``charbot chat``: type the bot's slash commands in a terminal, against a local database.

Each line is one command (``/tale Once upon a time --temperature 0.5``); the answer printed
is the text the bot would post, made by the same reply logic and answers. Lines come from
any text stream, so a pipe or a file works as well as a person at the keyboard. The local
person is guild 0, channel 0, user 0: no Discord ID is 0, so local rows never mix with a
server's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TextIO

from bot.config import Limits
from bot.core import answers
from bot.core.refusals import Refusal
from bot.core.replies import ReplyService, make_request
from bot.core.temperature import check_temperature
from bot.store import Store
from corpora.registry import CORPORA

LOCAL_GUILD = 0
LOCAL_CHANNEL = 0
LOCAL_USER = 0

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

    def __init__(self, store: Store, service: ReplyService, limits: Limits) -> None:
        self.store = store
        self.service = service
        self.limits = limits

    async def handle(self, line: str) -> str | None:
        """The answer to ``line`` ('' for nothing to print), or None to end the session."""
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        if not line.startswith("/"):
            return "Commands start with a slash; try /help."
        name, _, rest = line[1:].partition(" ")
        name, rest = name.lower(), rest.strip()
        try:
            return await self._dispatch(name, rest)
        except Refusal as exc:
            return exc.message

    async def _dispatch(self, name: str, rest: str) -> str | None:
        """A corpus's name generates; any other command is answered from :data:`answers.COMMANDS`."""
        if name in CORPORA:
            return await self._generate(name, rest)
        command = answers.COMMANDS_BY_NAME.get(name)
        if command is None or command.chat is None:
            return f"Unknown command /{name}; try /help."
        caller = answers.Caller(self.store, LOCAL_GUILD, LOCAL_CHANNEL, LOCAL_USER, self.limits,
                                self.service.models.info)
        return await command.chat(caller, rest)

    async def _generate(self, corpus: str, rest: str) -> str:
        opts = parse_generation(rest)
        request = make_request(
            corpus, opts.prompt, self.limits, temperature=opts.temperature,
            user_default=await self.store.get_temperature(LOCAL_GUILD, LOCAL_USER), length=opts.length,
            seed=opts.seed,
        )
        return (await self.service.reply(request)).text


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
