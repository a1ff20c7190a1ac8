"""The fake Discord itself, proven with a bare discord.py client: if these fail, the bot's e2e tests mean nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands

from tests.bot.fake_discord import (
    CALLBACK_DEFERRED,
    CALLBACK_MODAL,
    EPHEMERAL,
    INTENT_MESSAGE_CONTENT,
    DiscordClientRefused,
    FakeDiscord,
    point_discord_py_at,
)


class BareClient(discord.Client):
    """A minimal client with two slash commands and a modal, written the way any discord.py bot would be."""

    def __init__(self, intents: discord.Intents, guild_id: int) -> None:
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.seen: list[discord.Message] = []
        self.submitted: list[str] = []
        self.errors: list[Exception] = []
        self.message_seen = asyncio.Event()

        @self.tree.command(description="Echo slowly", guild=self.guild)
        @app_commands.describe(text="what to echo", times="how often")
        async def echo(interaction: discord.Interaction, text: str, times: int = 1) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="...")
            await interaction.edit_original_response(content=" ".join([text] * times))
            await interaction.followup.send("done", ephemeral=True)

        @self.tree.command(description="Too long", guild=self.guild)
        async def toolong(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.send_message("x" * 2001)
            except discord.HTTPException as exc:
                self.errors.append(exc)
                await interaction.response.send_message("that was too long", ephemeral=True)

        outer = self

        class Note(discord.ui.Modal, title="Leave a note"):
            text = discord.ui.TextInput(label="Your note", style=discord.TextStyle.paragraph, max_length=4000)

            async def on_submit(self, interaction: discord.Interaction) -> None:
                outer.submitted.append(self.text.value)
                await interaction.response.send_message(f"saved {len(self.text.value)} characters", ephemeral=True)

        @self.tree.command(description="Open a modal", guild=self.guild)
        async def note(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Note())

    async def setup_hook(self) -> None:
        await self.tree.sync(guild=self.guild)

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        self.message_seen.set()


@contextlib.asynccontextmanager
async def running_client(fake: FakeDiscord, intents: discord.Intents | None = None) -> AsyncIterator[BareClient]:
    intents = intents or discord.Intents.default()
    with point_discord_py_at(fake.api_base, fake.gateway_url):
        client = BareClient(intents, int(fake.guild_id))
        task = asyncio.create_task(client.start(fake.token))
        try:
            await fake.wait_ready()
            yield client
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_ms=100) as server:
        yield server
    assert not server.unknown_routes, [r.key for r in server.unknown_routes]


async def test_client_logs_in_connects_and_sees_the_guild(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        await asyncio.wait_for(client.wait_until_ready(), 10)
        guild = client.get_guild(int(fake.guild_id))
        assert guild is not None and guild.name == "Fairy Tale Club"
        assert {c.name for c in guild.text_channels} == {"general", "stories"}
        assert client.user is not None and client.user.id == int(fake.app_id)
        assert client.application_id == int(fake.app_id)
    keys = [r.key for r in fake.requests]
    assert keys[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert all(r.headers["Authorization"] == f"Bot {fake.token}" for r in fake.requests[:2])
    assert fake.identifies[0]["token"] == fake.token
    assert fake.synced_command_names == {"echo", "toolong", "note"}


async def test_heartbeats_are_acknowledged(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        await fake.wait_heartbeats(3)
        assert len(fake.heartbeat_acks) >= 3
        assert client.latency < 10  # discord.py measured a round trip, so it saw our acks


async def test_wrong_token_is_refused(fake: FakeDiscord) -> None:
    with point_discord_py_at(fake.api_base, fake.gateway_url):
        client = discord.Client(intents=discord.Intents.default())
        with pytest.raises(discord.LoginFailure):
            await client.login("not.the.token")
        await client.close()


async def test_slash_command_defer_edit_and_followup_are_recorded(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        inter = await fake.slash("echo", {"text": "hi @everyone", "times": 2})
        done = await inter.wait_for(lambda r: r.route.startswith("POST /webhooks"), what="the follow-up")
        assert inter.callbacks[0].json["type"] == CALLBACK_DEFERRED
        edits = [r.json["content"] for r in inter.requests if r.method == "PATCH"]
        assert edits == ["...", "hi @everyone hi @everyone"]
        assert inter.original is not None and inter.original["content"] == "hi @everyone hi @everyone"
        assert inter.original["flags"] == 0  # no longer "thinking"
        assert done.json["flags"] == EPHEMERAL
        assert inter.followups[0]["content"] == "done"
        assert client.tree.get_command("echo", guild=client.guild) is not None
    # the client set AllowedMentions.none(): every message-sending request says so
    sent = fake.message_requests()
    assert len(sent) == 3
    assert all(r.message_data()["allowed_mentions"]["parse"] == [] for r in sent)


async def test_fake_rejects_what_discord_rejects(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        inter = await fake.slash("toolong")
        await inter.wait_for(lambda r: r.status == 200, what="the second, accepted answer")
        assert [r.status for r in inter.callbacks] == [400, 200]
        assert "2000 or fewer" in str(client.errors[0])
        assert inter.original["content"] == "that was too long"
        with pytest.raises(Exception, match="not registered"):
            await fake.slash("nosuchcommand")


async def test_modal_opens_and_its_submission_reaches_the_client(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        opened = await fake.slash("note")
        callback = await opened.wait_callback()
        assert callback.json["type"] == CALLBACK_MODAL
        assert callback.json["data"]["title"] == "Leave a note"
        text = "Once upon a time 🐉 <@123> @everyone\nthe end"
        submitted = await fake.submit_modal(opened, {"Your note": text})
        reply = await submitted.wait_callback()
        assert client.submitted == [text]
        assert reply.json["data"]["content"] == f"saved {len(text)} characters"
        assert reply.json["data"]["flags"] == EPHEMERAL


async def test_messages_reach_the_client_only_with_the_content_intent(fake: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    async with running_client(fake, intents) as client:
        assert fake.identifies[0]["intents"] & INTENT_MESSAGE_CONTENT
        await fake.post_message("a story", channel="stories")
        await asyncio.wait_for(client.message_seen.wait(), 10)
        assert client.seen[0].content == "a story"
        assert client.seen[0].channel.name == "stories"
        assert client.seen[0].author.id == int(fake.member.id)


async def test_without_the_content_intent_messages_arrive_empty(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        await fake.post_message("a story")
        await asyncio.wait_for(client.message_seen.wait(), 10)
        assert client.seen[0].content == ""


async def test_client_resumes_after_a_reconnect_request(fake: FakeDiscord) -> None:
    async with running_client(fake):
        await fake.send_op(7)
        await fake.wait_until(lambda: fake.resumes, what="a RESUME")
        assert fake.resumes[0]["session_id"] == fake.session_id
        assert len(fake.identifies) == 1
        inter = await fake.slash("echo", {"text": "still here"})
        await inter.wait_for(lambda r: r.route.startswith("POST /webhooks"), what="the follow-up after resuming")
        assert inter.original["content"] == "still here"


async def test_unknown_routes_are_recorded_and_answered_404() -> None:
    async with FakeDiscord() as fake, running_client(fake) as client:
        with pytest.raises(discord.NotFound):
            await client.http.request(discord.http.Route("GET", "/guilds/{guild_id}/bans", guild_id=1))
        assert [r.key for r in fake.unknown_routes] == ["GET /guilds/1/bans"]


async def test_options_discord_itself_would_refuse_never_reach_the_client(fake: FakeDiscord) -> None:
    async with running_client(fake):
        with pytest.raises(DiscordClientRefused, match="required"):
            await fake.slash("echo", {"times": 2})
        with pytest.raises(DiscordClientRefused, match="not a valid value"):
            await fake.slash("echo", {"text": "a", "times": "many"})
        with pytest.raises(DiscordClientRefused, match="6000"):
            await fake.slash("echo", {"text": "a" * 6001})
        assert not fake.interactions


async def test_shards_identify_get_only_their_guilds_and_a_bad_shard_is_closed_4010() -> None:
    import aiohttp

    from tests.bot.fake_discord import shard_of

    async with FakeDiscord(recommended_shards=2) as fake:
        odd = fake.add_guild("Odd", shard=1, shard_count=2)
        assert shard_of(odd, 2) == 1
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fake.api_base}/gateway/bot", headers={"Authorization": f"Bot {fake.token}"}) as resp:
                assert (await resp.json())["shards"] == 2

            async def identify(shard: list) -> aiohttp.ClientWebSocketResponse:
                ws = await http.ws_connect(fake.gateway_url)
                await ws.receive_json()  # HELLO
                await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 0, "shard": shard}})
                return ws

            one = await identify([1, 2])
            ready = await one.receive_json()
            assert ready["t"] == "READY" and ready["d"]["shard"] == [1, 2]
            assert [g["id"] for g in ready["d"]["guilds"]] == fake.guilds_of((1, 2))
            assert odd in fake.guilds_of((1, 2)) and odd not in fake.guilds_of((0, 2))
            for bad in ([2, 2], [0, 3]):  # beyond the count; a count other than the running shards'
                ws = await identify(bad)
                assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4010
            await one.close()
