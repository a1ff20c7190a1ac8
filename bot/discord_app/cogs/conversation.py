"""Talking with the bot: mentions, replies to its messages, the Continue and Another buttons, the
"Continue this" message menu, chiming in, and /channel (admins) to set a channel's persona.

The rules (who gets an answer, what a reply chain primes, what a button may do) are
:mod:`bot.core.conversation`'s; this cog turns Discord's events into its inputs and writes the
replies back as Discord replies, edited as they grow, never pinging anyone. A refusal to a
message (cooldown, busy) is a short reply that deletes itself; to a press, a private answer.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import answers
from bot.core import conversation as conv
from bot.core.conversation import ChimeClock, Link
from bot.core.heard import Heard
from bot.core.refusals import UNEXPECTED, Refusal
from bot.core.replies import ReplyStream
from bot.discord_app.choices import voice_choices
from bot.discord_app.interactions import NO_MENTIONS, defer, is_admin, send_answer
from bot.discord_app.streaming import keep_for_buttons, post_with_buttons, stream_into
from bot.store import StoreError
from bot.store.conversation import ChannelSettings, ConversationStore, PostedReply

log = logging.getLogger(__name__)

SETTINGS_TTL_S = 5.0  # how soon a /channel change made through another process is honoured here
REFUSAL_SHOWN_S = 15.0  # a refusal posted in a channel deletes itself after this
MENU_NAME = "Continue this"


class Conversation(commands.Cog):
    """Answers people who talk to the bot, and the buttons under its replies."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.chimes = ChimeClock()
        self._settings: dict[tuple[int | None, int], tuple[float, ChannelSettings]] = {}
        self.menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.continue_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    # ---- what the rules need to know ------------------------------------------------------

    async def settings(self, guild_id: int | None, channel_id: int) -> ChannelSettings:
        """The channel's settings, read at most every few seconds (every message in every channel asks)."""
        key, now = (guild_id, channel_id), time.monotonic()
        cached = self._settings.get(key)
        if cached is not None and now - cached[0] < SETTINGS_TTL_S:
            return cached[1]
        settings = await ConversationStore(self.bot.store).channel(guild_id, channel_id)
        if len(self._settings) > 10_000:
            self._settings.clear()
        self._settings[key] = (now, settings)
        return settings

    def served(self, guild_id: int | None) -> list[str]:
        """Who may speak in this server: the corpora, then its own personas (never another server's)."""
        return conv.speakers(guild_id, list(self.bot.models.engines))

    def persona(self, guild_id: int | None, settings: ChannelSettings, replying_to: PostedReply | None = None) -> str:
        return conv.persona_for(settings, self.served(guild_id), replying_to)

    async def replied_to(self, message: discord.Message) -> tuple[int | None, bool]:
        """The message ``message`` replies to in this channel, and whether that one is the bot's.

        A reference Discord could not resolve (deleted) still counts as the bot's when the store
        remembers posting it; a reference into another channel or to someone else is not the bot's.
        """
        ref = message.reference
        if ref is None or ref.message_id is None or (ref.channel_id and ref.channel_id != message.channel.id):
            return None, False
        resolved = ref.resolved
        if isinstance(resolved, discord.Message):
            return ref.message_id, resolved.author.id == self.bot.user.id
        return ref.message_id, await ConversationStore(self.bot.store).reply(ref.message_id) is not None

    async def link(self, channel: discord.abc.Messageable, message_id: int) -> Link | None:
        """One message of a reply chain as the rules read it; None when it cannot be fetched."""
        try:
            message = await channel.fetch_message(message_id)
        except (discord.NotFound, discord.Forbidden, discord.HTTPException):
            return None
        ref = message.reference
        parent = ref.message_id if ref is not None and (not ref.channel_id or ref.channel_id == channel.id) else None
        if message.author.id != self.bot.user.id:
            return Link(conv.words_of(message.content, self.bot.user.id), parent)
        return conv.bot_link(await ConversationStore(self.bot.store).reply(message.id), message.content, parent)

    async def user_default(self, guild_id: int | None, user_id: int) -> float | None:
        if guild_id is None:
            return None
        try:
            return await self.bot.store.get_temperature(guild_id, user_id)
        except StoreError:
            return None

    # ---- messages -------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or self.bot.replies is None or message.author.bot or message.webhook_id is not None:
            return  # never a bot, a webhook or itself: two bots cannot talk each other into a loop
        try:
            await self.answer(message)
        except Exception:
            log.exception("could not answer message %s", message.id)

    async def answer(self, message: discord.Message) -> None:
        me = self.bot.user
        guild_id = message.guild.id if message.guild else None
        parent, to_me = await self.replied_to(message)
        heard = Heard(guild_id, message.channel.id, message.author.id, message.content, message.author.bot,
                      message.webhook_id is not None, message.is_system(), me.id in message.raw_mentions, to_me)
        if not (heard.mentions_me or heard.replies_to_me or guild_id is None) and not self.bot.intents.message_content:
            return
        settings = await self.settings(guild_id, message.channel.id)
        now = time.monotonic()

        def chime() -> bool:
            return self.chimes.ready(message.channel.id, settings.chime_every_s, now) and \
                random.random() < settings.chime_chance

        trigger = conv.trigger_for(heard, me.id, settings, chime)
        if trigger is None:
            return
        if trigger == "chime":
            self.chimes.chimed(message.channel.id, now)
        corpus, context = self.persona(guild_id, settings), ""
        if trigger == "reply" and parent is not None:
            corpus = self.persona(guild_id, settings, await ConversationStore(self.bot.store).reply(parent))
            limits = self.bot.config.limits
            context = await conv.chain_context(parent, lambda i: self.link(message.channel, i),
                                               limits.chain_messages, limits.chain_chars)
        try:
            request = conv.message_request(trigger, heard, me.id, me.name, corpus, self.bot.config.limits, context,
                                           await self.user_default(guild_id, heard.author_id))
            await self.bot.replies.ready(request.corpus)  # a persona's engine loads on demand
            reply = self.bot.replies.start(request)
        except Refusal as refusal:
            if trigger != "chime":  # uninvited, the bot just stays quiet
                await self.refuse_in_channel(message, refusal)
            return
        await self.write_reply(message, guild_id, reply)

    async def refuse_in_channel(self, message: discord.Message, refusal: Refusal) -> None:
        try:
            await message.reply(refusal.message, mention_author=False, allowed_mentions=NO_MENTIONS,
                                delete_after=REFUSAL_SHOWN_S)
        except discord.HTTPException:
            log.info("could not tell %s why their message was not answered", message.author.id)

    async def write_reply(self, message: discord.Message, guild_id: int | None, reply: ReplyStream) -> None:
        """Post ``reply`` as a Discord reply to ``message``, edited as it grows, buttons at the end."""
        posted: list[discord.Message] = []

        async def edit(text: str, view: discord.ui.View | None) -> None:
            extra = {"view": view} if view is not None else {}
            if not posted:
                posted.append(await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS, **extra))
            else:
                posted[0] = await posted[0].edit(content=text, allowed_mentions=NO_MENTIONS, **extra)

        try:
            final = await stream_into(reply, edit, with_buttons=True)
            if final is not None and posted:
                await keep_for_buttons(self.bot, posted[0].id, guild_id, reply.request, final)
        except discord.HTTPException:
            log.exception("could not post the reply to message %s", message.id)
        finally:
            reply.close()

    # ---- buttons --------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component or self.bot.replies is None:
            return
        try:
            await self.press(interaction)
        except Exception:
            log.exception("a button press (interaction %s) failed", interaction.id)
            if not interaction.response.is_done():
                await interaction.response.send_message(UNEXPECTED, ephemeral=True)

    async def press(self, interaction: discord.Interaction) -> None:
        data = interaction.data if isinstance(interaction.data, dict) else {}
        presser = interaction.user.id
        try:
            action = conv.button_action(data.get("custom_id"))
            message = interaction.message
            row = await ConversationStore(self.bot.store).reply(message.id) if message is not None else None
            conv.check_press(row, action, presser, self.bot.config.limits)
            request = conv.press_request(row, action, presser, self.bot.config.limits, random.randrange(2**31),
                                         await self.user_default(interaction.guild_id, presser),
                                         guild=interaction.guild_id)
            await self.bot.replies.ready(request.corpus)
            reply = self.bot.replies.start(request)
        except Refusal as refusal:
            log.info("button press by %s refused: %s", presser, refusal.message)
            await interaction.response.send_message(refusal.message, ephemeral=True)
            return
        try:
            if action == "continue":  # the story goes on in a new message
                await interaction.response.defer(thinking=True)
                await post_with_buttons(self.bot, interaction, reply)
            else:  # the same words again, written over the reply in place
                await interaction.response.defer()
                await self.rewrite(interaction, reply)
        finally:
            reply.close()

    async def rewrite(self, interaction: discord.Interaction, reply: ReplyStream) -> None:
        async def edit(text: str, view: discord.ui.View | None) -> None:
            extra = {"view": view} if view is not None else {}
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **extra)

        final = await stream_into(reply, edit, with_buttons=True)
        if final is not None:
            await keep_for_buttons(self.bot, interaction.message.id, interaction.guild_id, reply.request, final)

    # ---- the message menu -----------------------------------------------------------------

    async def continue_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Carry on from any message, in the channel's persona (Apps > Continue this)."""
        settings = await self.settings(interaction.guild_id, interaction.channel_id)
        heard = Heard(interaction.guild_id, interaction.channel_id, interaction.user.id, message.content)
        request = conv.message_request("menu", heard, self.bot.user.id, self.bot.user.name,
                                       self.persona(interaction.guild_id, settings), self.bot.config.limits, "",
                                       await self.user_default(interaction.guild_id, interaction.user.id))
        await self.bot.replies.ready(request.corpus)
        reply = self.bot.replies.start(request)  # a Refusal goes privately to the person (the tree's on_error)
        try:
            await interaction.response.defer(thinking=True)
            own_words = message.author.id == interaction.user.id  # someone else's words are never kept
            await post_with_buttons(self.bot, interaction, reply, words_are_askers=own_words)
        finally:
            reply.close()

    async def describe_here(self, guild_id: int | None, channel_id: int) -> str:
        """What /help adds: who speaks in this channel and how to talk with it."""
        settings = await self.settings(guild_id, channel_id)
        return conv.describe_channel(settings, self.persona(guild_id, settings))

    # ---- /channel -------------------------------------------------------------------------

    @app_commands.command(name="channel", description="(Admins) This channel's persona, mentions and chiming in")
    @app_commands.describe(
        persona="who speaks here when mentioned or replied to: a corpus, or one of this server's personas",
        mentions="answer mentions and replies to my messages here",
        chime="chance in percent that I join in on an ordinary message (0 = never)",
        chime_every="the least minutes between two times I join in uninvited",
    )
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.check(is_admin)
    async def channel(
        self, interaction: discord.Interaction, persona: app_commands.Range[str, 1, 100] | None = None,
        mentions: bool | None = None, chime: app_commands.Range[float, 0, answers.MAX_CHIME_PERCENT] | None = None,
        chime_every: app_commands.Range[int, 1, answers.MAX_CHIME_EVERY_MIN] | None = None,
    ) -> None:
        await defer(interaction, ephemeral=False)  # the answer tells the channel how the bot behaves here
        personas = getattr(self.bot, "personas", None)
        if persona is not None and personas is not None and persona not in self.bot.models.engines:
            with contextlib.suppress(Refusal):  # made through another process: let it speak here too
                await personas.key_for(interaction.guild_id, persona)
        answer = await answers.channel(
            self.bot.store, interaction.guild_id, interaction.channel_id, interaction.user.id,
            self.served(interaction.guild_id), persona=persona, mentions=mentions,
            chime_percent=chime, chime_every_min=chime_every, can_chime=self.bot.intents.message_content,
        )
        self._settings.pop((interaction.guild_id, interaction.channel_id), None)
        await send_answer(interaction, answer)

    @channel.autocomplete("persona")
    async def channel_persona(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await voice_choices(self.bot, interaction.guild_id, current, self.served(None))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Conversation(bot))
