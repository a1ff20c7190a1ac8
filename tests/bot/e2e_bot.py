"""Runs the real CharBot against the fake Discord, and waits on what it does instead of sleeping.

The bot is configured the way a person configures it (environment variables through ``load_config``,
checkpoints from ``CHARBOT_CHECKPOINT_DIR``, a SQLite file from ``CHARBOT_DB``) and redirected with its own
``CHARBOT_DISCORD_API``/``CHARBOT_DISCORD_GATEWAY`` override; only the models are tiny and random, so a
reply takes milliseconds. :meth:`BotUnderTest.run` sends a slash command and returns when discord.py says
the command finished (or the bot's error handler did), so tests assert on a settled state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import torch

from bot.bench.fake_discord import (
    CALLBACK_DEFERRED,
    CALLBACK_MESSAGE,
    EPHEMERAL,
    LOADING,
    FakeDiscord,
    FakeDiscordError,
    FakeInteraction,
    FakeUser,
)
from bot.config import BotConfig, load_config
from bot.discord_app.client import CharBot, new_bot
from bot.discord_app.endpoints import discord_endpoints
from bot.store import Store
from model.checkpoint import save_checkpoint
from model.network import CharLSTM, ModelConfig

CORPORA = ("tale", "faq", "novel")


def write_checkpoints(folder: Path, hidden_size: int = 32, n_layers: int = 1) -> dict[str, Path]:
    """One small random-weight checkpoint per corpus, saved the way training saves them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, corpus in enumerate(CORPORA):
        torch.manual_seed(i)
        model = CharLSTM(ModelConfig(embed_size=8, hidden_size=hidden_size, n_layers=n_layers, dropout=0.0)).eval()
        paths[corpus] = folder / f"{corpus}.safetensors"
        save_checkpoint(paths[corpus], model, info={"val_bpc": 3.25 + i, "corpus": corpus})
    return paths


class _ErrorLog(logging.Handler):
    """Keeps ERROR records from the bot, discord.py, asyncio and the fake: a swallowed exception fails a test."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("bot", "model", "corpora", "discord", "fake_discord", "asyncio", "aiohttp")):
            self.records.append(record)


@dataclass
class BotUnderTest:
    """The running bot, the fake it talks to, and ways to drive it."""

    fake: FakeDiscord
    bot: CharBot
    config: BotConfig
    checkpoints: dict[str, Path]
    errors: _ErrorLog
    expect_errors: bool = False
    _finished: dict[int, asyncio.Future] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        assert self.bot.store is not None
        return self.bot.store

    @property
    def guild(self) -> int:
        return int(self.fake.guild_id)

    def channel(self, name: str = "general") -> int:
        return int(self.fake.channels[name])

    def _finish(self, interaction: discord.Interaction) -> None:
        # The command may finish before run() starts waiting, so whoever comes first creates the future.
        future = self._finished.setdefault(interaction.id, asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(None)

    async def run(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        channel: str = "general",
        timeout: float = 30.0,
        **sent: Any,
    ) -> FakeInteraction:
        """Send ``/command`` and return once the bot has finished handling it (success or error).

        ``sent`` goes to :meth:`FakeDiscord.slash`: ``files`` for attachment options, ``guild`` for another
        server's channel, ``dm`` for a direct message."""
        loop = asyncio.get_running_loop()
        inter = await self.fake.slash(command, options, user=user, channel=channel, **sent)
        future = self._finished.setdefault(int(inter.id), loop.create_future())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            raise FakeDiscordError(
                f"/{command} did not finish within {timeout}s; it sent: {[(r.key, r.status) for r in inter.requests]}"
            ) from None
        return inter

    async def press(
        self, message: dict | str, custom_id: str, *, user: FakeUser | None = None, timeout: float = 30.0
    ) -> FakeInteraction:
        """Press a button on ``message`` and return once the bot has answered the press (see :meth:`settled`).

        An answer by UPDATE_MESSAGE (7) counts at once; after DEFERRED_UPDATE_MESSAGE (6) wait for the edit
        itself with ``fake.wait_for_message``.
        """
        inter = await self.fake.press(message, custom_id, user=user)
        return await self.settled(inter, timeout)

    async def context_menu(
        self, name: str, message: dict | str, *, user: FakeUser | None = None, timeout: float = 30.0
    ) -> FakeInteraction:
        """Use the message command ``name`` on ``message``; return when discord.py says it finished (as :meth:`run`)."""
        loop = asyncio.get_running_loop()
        inter = await self.fake.context_menu(name, message, user=user)
        future = self._finished.setdefault(int(inter.id), loop.create_future())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            raise FakeDiscordError(
                f"{name!r} did not finish within {timeout}s; it sent: {[(r.key, r.status) for r in inter.requests]}"
            ) from None
        return inter

    async def ask(
        self, text: str, *, user: FakeUser | None = None, channel: str = "general", quiet_s: float = 0.5,
        timeout: float = 30.0,
    ) -> dict:
        """Post ``@charbot text`` as ``user`` and return the bot's reply once it has stopped editing it."""
        fake = self.fake
        sent = await fake.post_message(f"{fake.mention(fake.bot_user)} {text}", author=user, channel=channel)
        assert sent is not None, "the bot's intents hide messages in guilds"
        reply = await fake.wait_for_reply(sent, timeout=timeout)
        return await fake.wait_settled(reply, quiet_s=quiet_s, timeout=timeout)

    async def submit(self, opened: FakeInteraction, values: dict[str, str] | list[str]) -> FakeInteraction:
        """Submit the modal ``opened`` showed; return the submission once the bot has answered it."""
        submitted = await self.fake.submit_modal(opened, values)
        await self.settled(submitted)
        return submitted

    async def settled(self, inter: FakeInteraction, timeout: float = 30.0) -> FakeInteraction:
        """Wait until ``inter`` has its answer: a message, or a deferral that was filled in (or replaced)."""
        await self.fake.wait_until(lambda: answered(inter), timeout, f"an answer to interaction {inter.id}")
        return inter

    def answer(self, inter: FakeInteraction) -> tuple[str, bool]:
        """The answer the person sees and whether only they see it, however the bot sent it.

        Either a message as the interaction's response, or a deferral ("thinking...") that a
        follow-up filled in, or, where the answer is seen differently from the deferral, that
        was deleted and followed up by one message. Every request must have succeeded.
        """
        assert inter.requests and all(0 < r.status < 300 for r in inter.requests), [
            (r.key, r.status, r.json) for r in inter.requests
        ]
        callback = inter.callbacks[0].json
        assert len(inter.callbacks) == 1, [c.json for c in inter.callbacks]
        if callback["type"] == CALLBACK_MESSAGE:
            return callback["data"]["content"], bool(callback["data"].get("flags", 0) & EPHEMERAL)
        assert callback["type"] == CALLBACK_DEFERRED, callback
        if inter.original is not None:
            assert not inter.original["flags"] & LOADING, "the deferred answer was never filled in"
            return inter.original["content"], bool(inter.original["flags"] & EPHEMERAL)
        assert inter.followups, "the deferred answer was deleted and nothing replaced it"
        first = inter.followups[0]
        return first["content"], bool(first["flags"] & EPHEMERAL)

    def private_answer(self, inter: FakeInteraction) -> str:
        """The text of an answer only the caller sees; fails if everyone sees it."""
        text, private = self.answer(inter)
        assert private, f"answer is public: {text!r}"
        return text

    def public_answer(self, inter: FakeInteraction) -> str:
        """The text of an answer everyone in the channel sees."""
        text, private = self.answer(inter)
        assert not private, f"answer is private: {text!r}"
        return text

    def final(self, inter: FakeInteraction) -> str:
        """What the person sees as the command's answer now."""
        assert inter.original is not None, f"no response message for {inter.payload['data'].get('name')}"
        return inter.original["content"]


@contextlib.asynccontextmanager
async def bot_on_fake(
    tmp_path: Path,
    env: dict[str, str] | Callable[[FakeDiscord], dict[str, str]] | None = None,
    heartbeat_interval_ms: int = 500,
    checkpoints: dict[str, Path] | None = None,
    fake_options: dict[str, Any] | None = None,
) -> AsyncIterator[BotUnderTest]:
    """Start the fake and the bot connected to it; on exit, close both and check nothing went wrong unseen."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    checkpoints = checkpoints or write_checkpoints(tmp_path / "checkpoints")
    errors = _ErrorLog()
    world: BotUnderTest | None = None
    logging.getLogger().addHandler(errors)
    try:
        async with FakeDiscord(heartbeat_interval_ms=heartbeat_interval_ms, interaction_deadline_s=10.0,
                               **(fake_options or {})) as fake:
            environ = {
                "DISCORD_TOKEN": fake.token,
                "CHARBOT_DB": str(tmp_path / "charbot.db"),
                "CHARBOT_DEV_GUILD": fake.guild_id,
                "CHARBOT_CHECKPOINT_DIR": str(next(iter(checkpoints.values())).parent),
                "CHARBOT_DEVICE": "cpu",
                "CHARBOT_COOLDOWN": "0",
                "CHARBOT_EDIT_INTERVAL": "0.05",
                "CHARBOT_SHUTDOWN_GRACE": "5",
                "CHARBOT_DISCORD_API": fake.api_base,
                "CHARBOT_DISCORD_GATEWAY": fake.gateway_url,
            }
            environ.update(env(fake) if callable(env) else env or {})
            config = load_config(env_file=None, environ=environ)
            assert config.token is not None
            with discord_endpoints(config.discord_api, config.discord_gateway):
                bot = new_bot(config)  # CHARBOT_SHARD_COUNT in env makes it the sharded bot
                world = BotUnderTest(fake, bot, config, checkpoints, errors)
                _instrument(world)
                task = asyncio.create_task(bot.start(config.token.reveal()), name="charbot")
                try:
                    ready = asyncio.ensure_future(fake.wait_ready(timeout=60))
                    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
                    if task.done():
                        ready.cancel()
                        task.result()
                        raise FakeDiscordError("the bot stopped before connecting")
                    await ready
                    yield world
                finally:
                    await bot.close()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(task, 30)
            assert not fake.unknown_routes, (
                f"the bot used routes the fake lacks: {[r.key for r in fake.unknown_routes]}"
            )
            _assert_no_mentions_allowed(fake)
    finally:
        logging.getLogger().removeHandler(errors)
    if world is not None and not world.expect_errors:
        assert not errors.records, "errors were logged:\n" + "\n".join(errors.format(r) for r in errors.records)


def _instrument(world: BotUnderTest) -> None:
    """Learn when each command is done: discord.py's completion event, or the tree's error handler returning."""
    bot = world.bot

    async def on_app_command_completion(interaction: discord.Interaction, command: object) -> None:
        world._finish(interaction)

    bot.add_listener(on_app_command_completion)
    handle_error = bot.tree.on_error

    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        try:
            await handle_error(interaction, error)
        finally:
            world._finish(interaction)

    bot.tree.on_error = on_error  # type: ignore[method-assign]


def answered(inter: FakeInteraction) -> bool:
    """Whether the bot has finished answering ``inter`` (see :meth:`BotUnderTest.answer`)."""
    done = [c for c in inter.callbacks if 0 < c.status < 300]
    if not done:
        return False
    if done[0].json.get("type") != CALLBACK_DEFERRED:
        return True
    if inter.original is not None:
        return not inter.original["flags"] & LOADING
    return bool(inter.followups)


def _assert_no_mentions_allowed(fake: FakeDiscord) -> None:
    """Every message the bot sent said: ping nobody (Discord honours this whatever the text contains)."""
    for request in fake.message_requests():
        mentions = request.message_data().get("allowed_mentions")
        assert mentions is not None, f"{request.key} sent no allowed_mentions: {request.json}"
        assert mentions.get("parse") == [], f"{request.key} allows mentions: {mentions}"
        assert not mentions.get("users") and not mentions.get("roles"), f"{request.key} allows mentions: {mentions}"
        assert not mentions.get("replied_user"), f"{request.key} pings the replied-to user: {mentions}"
