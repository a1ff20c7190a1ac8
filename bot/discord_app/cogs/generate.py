"""One slash command per corpus (/tale, /faq, /novel), and /say for a server's own personas: defer, stream
the reply into the message, finish.

The commands are built at load time from the registry and the configured limits, so a new
corpus gets its command without code here. /say names one of this server's personas
(:mod:`bot.personas`): it is looked up under this server only, loaded on demand, then written
exactly as a corpus's reply is. (No ``from __future__ import annotations`` in this file:
discord.py reads the option types, including the configured ranges, from the callback's
annotations.)
"""

import asyncio
import contextlib
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import Limits
from bot.core.refusals import UNEXPECTED, Refusal
from bot.core.replies import ReplyStream, make_request
from bot.discord_app.choices import voice_choices
from bot.discord_app.interactions import NO_MENTIONS, defer
from bot.discord_app.streaming import post_with_buttons
from bot.store import StoreError
from corpora.registry import CORPORA

log = logging.getLogger(__name__)

READ_WAIT_S = 1.0  # the most a reply waits for the person's /temp; then it uses the corpus's default


class Generate(commands.Cog):
    """The storytelling commands."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.added: list[app_commands.Command] = []

    async def cog_load(self) -> None:
        limits = self.bot.config.limits
        for command in [*(build_command(self, corpus, limits) for corpus in self.bot.config.corpora),
                        build_say(self, limits)]:
            self.bot.tree.add_command(command)
            self.added.append(command)

    async def cog_unload(self) -> None:
        for command in self.added:
            self.bot.tree.remove_command(command.name)
        self.added.clear()

    async def generate(
        self, interaction: discord.Interaction, corpus: str, prompt: str, length: int | None, temperature: float | None
    ) -> None:
        """Check the request (refusals go privately to the person), then answer publicly as text arrives."""
        bot = self.bot
        user_default = await self.user_temperature(interaction) if temperature is None else None
        request = make_request(corpus, prompt, bot.config.limits, temperature=temperature,
                               user_default=user_default, length=length, user=interaction.user.id,
                               channel=interaction.channel_id)
        await self.post(interaction, bot.replies.start(request))

    async def say(
        self, interaction: discord.Interaction, persona: str, prompt: str, length: int | None,
        temperature: float | None,
    ) -> None:
        """/say: this server's persona answers. Deferred first (publicly, as the reply will be): finding the
        persona reads the database and loading its model takes a second; a refusal replaces the deferral
        with a private answer (:func:`bot.discord_app.interactions.send`)."""
        bot = self.bot
        personas = getattr(bot, "personas", None)
        if personas is None:
            raise Refusal(f"Sorry, {getattr(bot, 'personas_off', 'personas are not set up on this bot')}.",
                          "unavailable")
        await defer(interaction, ephemeral=False)
        key = await personas.key_for(interaction.guild_id, persona)  # another server's: "no persona called ..."
        user_default = await self.user_temperature(interaction) if temperature is None else None
        request = make_request(key, prompt, bot.config.limits, temperature=temperature, user_default=user_default,
                               length=length, user=interaction.user.id, channel=interaction.channel_id,
                               guild=interaction.guild_id)
        await bot.replies.ready(key)
        await self.post(interaction, bot.replies.start(request))

    async def post(self, interaction: discord.Interaction, reply: ReplyStream) -> None:
        """Answer publicly as the text arrives (deferring first if nothing was sent yet), buttons at the end."""
        corpus = reply.request.corpus
        try:
            if not interaction.response.is_done():
                await interaction.response.defer(thinking=True)
            await post_with_buttons(self.bot, interaction, reply)
        except discord.HTTPException:
            log.exception("could not post the %s reply for interaction %s", corpus, interaction.id)
        except Exception:
            log.exception("the %s reply for interaction %s failed", corpus, interaction.id)
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(content=UNEXPECTED, allowed_mentions=NO_MENTIONS)
        finally:
            reply.close()

    async def user_temperature(self, interaction: discord.Interaction) -> float | None:
        """The person's /temp default; a reply never waits long for it (reads do not queue behind writes)."""
        try:
            return await asyncio.wait_for(
                self.bot.store.get_temperature(interaction.guild_id, interaction.user.id), READ_WAIT_S
            )
        except (asyncio.TimeoutError, StoreError) as exc:
            log.warning("using the corpus's default temperature, the user's could not be read: %s",
                        str(exc) or "timed out")
            return None


def build_command(cog: Generate, corpus: str, limits: Limits) -> app_commands.Command:
    """The slash command for ``corpus``: a prompt (called question for faq), a length and a temperature."""
    style = CORPORA[corpus].style
    default_t = CORPORA[corpus].default_temperature

    async def callback(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, limits.max_prompt_chars],
        length: app_commands.Range[int, 1, limits.max_length] = None,
        temperature: float | None = None,
    ) -> None:
        await cog.generate(interaction, corpus, prompt, length, temperature)

    callback = app_commands.describe(
        prompt=f"the {style.prompt_label} to answer" if style.layout == "question" else "the words to continue",
        length=f"about how many characters: it ends at a sentence near this (1-{limits.max_length}, "
               f"default {limits.default_length})",
        temperature=f"0 = predictable ... 2 = wild (default: yours from /temp, else {default_t:g})",
    )(callback)
    if style.prompt_label != "prompt":
        callback = app_commands.rename(prompt=style.prompt_label)(callback)
    command = app_commands.Command(name=corpus, description=CORPORA[corpus].description[:100], callback=callback)
    return app_commands.guild_only(command)


def build_say(cog: Generate, limits: Limits) -> app_commands.Command:
    """/say persona prompt [length] [temperature]: one of this server's personas answers."""

    async def callback(
        interaction: discord.Interaction,
        persona: app_commands.Range[str, 1, 100],
        prompt: app_commands.Range[str, 1, limits.max_prompt_chars],
        length: app_commands.Range[int, 1, limits.max_length] = None,
        temperature: float | None = None,
    ) -> None:
        await cog.say(interaction, persona, prompt, length, temperature)

    callback = app_commands.describe(
        persona="which of this server's personas (/persona list)",
        prompt="the words to continue, or for a faq persona the question",
        length=f"about how many characters: it ends at a sentence near this (1-{limits.max_length}, "
               f"default {limits.default_length})",
        temperature="0 = predictable ... 2 = wild (default: yours from /temp, else the persona's style's)",
    )(callback)
    command = app_commands.Command(name="say", description="Talk to one of this server's own personas",
                                   callback=callback)

    @command.autocomplete("persona")
    async def persona_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await voice_choices(cog.bot, interaction.guild_id, current)

    return app_commands.guild_only(command)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Generate(bot))
