"""/contribute (a modal for up to 4000 characters), /forget and /optout.

Each answer is deferred before the database is touched (see :func:`bot.discord_app.interactions.defer`).
A contribution the database could not take in time is handed back to its writer as a file,
and a form submitted after the bot forgot it (a restart, the 15-minute timeout) is still
saved, from the corpus its id names: a busy database or a restart never loses what someone typed.
"""

import asyncio
import io
import logging
import secrets

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import answers
from bot.core.refusals import DATABASE_BUSY, Refusal
from bot.discord_app.interactions import NO_MENTIONS, defer, send, send_answer, send_unexpected
from bot.discord_limits import TEXT_INPUT_CHARS
from bot.store import DatabaseLocked
from corpora.registry import CORPORA

log = logging.getLogger(__name__)

CORPUS_CHOICES = [app_commands.Choice(name=name, value=name) for name in CORPORA]
FORM_PREFIX = "charbot-contribute:"  # then the corpus, ":" and a nonce
FORGET_FORM_AFTER_S = 60.0  # a submitted form stays known this long, so only one handler answers it


async def save_contribution(bot: commands.Bot, interaction: discord.Interaction, corpus: str, text: object) -> None:
    """Store a submitted text and answer: thanks, a refusal, or "busy" with the text handed back."""
    try:
        answers.in_server(interaction.guild_id)
        await defer(interaction)
        try:
            answer = await answers.contribute(
                bot.store, interaction.guild_id, interaction.channel_id, interaction.user.id, corpus, text, "modal",
                bot.config.limits,
            )
        except DatabaseLocked as exc:
            log.warning("a contribution could not be saved: %s", exc)
            await _hand_back(interaction, text)
            return
        await send_answer(interaction, answer)
    except Refusal as refusal:
        log.info("a contribution was refused: %s", refusal.message)
        await _answer_safely(interaction, refusal.message)
    except Exception:
        log.exception("saving a contribution failed")
        await send_unexpected(interaction)


async def _answer_safely(interaction: discord.Interaction, text: str) -> None:
    try:
        await send(interaction, text)
    except discord.HTTPException:
        log.warning("could not answer the contribution in interaction %s", interaction.id)


async def _hand_back(interaction: discord.Interaction, text: object) -> None:
    """Say the database is busy, and give the person their text back to send again."""
    data = (text if isinstance(text, str) else "").encode("utf-8", "replace")
    await send(interaction, f"{DATABASE_BUSY} Your text is attached, so you can paste it into `/contribute` again.")
    await interaction.followup.send(file=discord.File(io.BytesIO(data), "your-contribution.txt"),
                                    ephemeral=True, allowed_mentions=NO_MENTIONS)


def submitted_text(data: object) -> object:
    """The value of the first text input in a modal submission's ``data`` (None if it has none)."""
    rows = data.get("components") if isinstance(data, dict) else None
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        inner = row.get("components") or ([row["component"]] if isinstance(row.get("component"), dict) else [])
        for component in inner if isinstance(inner, list) else []:
            if isinstance(component, dict) and component.get("type") == 4:
                return component.get("value")
    return None


class ContributionModal(discord.ui.Modal):
    """A text box for a contribution; saved (and acknowledged) only once it is on disk."""

    def __init__(self, bot: commands.Bot, corpus: str, forms: dict[str, "ContributionModal"]) -> None:
        custom_id = f"{FORM_PREFIX}{corpus}:{secrets.token_hex(8)}"
        super().__init__(title=f"Teach the {corpus} model"[:45], timeout=900, custom_id=custom_id)
        self.bot = bot
        self.corpus = corpus
        self.text = discord.ui.TextInput(
            label="Your text", style=discord.TextStyle.paragraph, min_length=1,
            max_length=min(TEXT_INPUT_CHARS, bot.config.limits.max_contribution_chars),
            placeholder=CORPORA[corpus].description[:100],
        )
        self.add_item(self.text)
        self._forms = forms
        forms[custom_id] = self

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await save_contribution(self.bot, interaction, self.corpus, self.text.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.error("saving a contribution failed", exc_info=error)
        await send_unexpected(interaction)

    async def on_timeout(self) -> None:
        self._forms.pop(self.custom_id, None)  # a late submission is then saved by Contributions.on_interaction

    def stop(self) -> None:
        super().stop()
        asyncio.get_running_loop().call_later(FORGET_FORM_AFTER_S, self._forms.pop, self.custom_id, None)


class Contributions(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.forms: dict[str, ContributionModal] = {}  # open forms by custom_id: discord.py answers those

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Save a contribution form this bot no longer knows (it restarted, or the form timed out)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        custom_id = (interaction.data or {}).get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.startswith(FORM_PREFIX) or custom_id in self.forms:
            return
        corpus = custom_id[len(FORM_PREFIX):].split(":")[0]
        await save_contribution(self.bot, interaction, corpus, submitted_text(interaction.data))

    @app_commands.command(name="contribute", description="Offer a text to teach one of the models")
    @app_commands.describe(corpus="which model your text is for")
    @app_commands.choices(corpus=CORPUS_CHOICES)
    @app_commands.guild_only()
    async def contribute(self, interaction: discord.Interaction, corpus: app_commands.Choice[str]) -> None:
        await interaction.response.send_modal(ContributionModal(self.bot, corpus.value, self.forms))

    @app_commands.command(name="forget", description="Delete everything you contributed in this server")
    @app_commands.guild_only()
    async def forget(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        await send_answer(interaction, await answers.forget(self.bot.store, interaction.guild_id, interaction.user.id,
                                                            self.bot.finetune, self.bot.models))

    @app_commands.command(name="optout", description="Stop your messages in listening channels from being stored")
    @app_commands.describe(undo="opt back in")
    @app_commands.guild_only()
    async def optout(self, interaction: discord.Interaction, undo: bool = False) -> None:
        await defer(interaction)
        answer = await answers.optout(self.bot.store, interaction.guild_id, interaction.user.id, undo)
        await send_answer(interaction, answer)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Contributions(bot))
