"""The fake Discord itself, proven with a bare discord.py client: if these fail, the bot's e2e tests mean nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands

from bot.bench.fake_discord import (
    CALLBACK_DEFERRED,
    CALLBACK_MODAL,
    EPHEMERAL,
    INTENT_MESSAGE_CONTENT,
    DiscordClientRefused,
    FakeDiscord,
    FakeDiscordError,
)
from bot.discord_app.endpoints import discord_endpoints


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
    with discord_endpoints(fake.api_base, fake.gateway_url):
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
    with discord_endpoints(fake.api_base, fake.gateway_url):
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

    from bot.bench.fake_discord import shard_of

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


# ----- conversation: mentions, replies, buttons, context menus, DMs ---------------------------------------------


class TaleView(discord.ui.View):
    """Continue (edits the message: callback 7), Another (a private answer: 4) and Later (6, then an edit)."""

    def __init__(self, client: ConversingClient) -> None:
        super().__init__(timeout=None)
        self.client = client

    @discord.ui.button(label="Continue", style=discord.ButtonStyle.primary, custom_id="tale:continue")
    async def cont(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.client.pressed.append(("continue", interaction.message.id if interaction.message else None))
        try:
            await interaction.response.edit_message(content=f"{interaction.message.content} and then", view=self)
        except discord.NotFound:
            await interaction.response.send_message("that tale is gone", ephemeral=True)

    @discord.ui.button(label="Another", style=discord.ButtonStyle.secondary, custom_id="tale:another")
    async def another(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.client.pressed.append(("another", interaction.message.id if interaction.message else None))
        await interaction.response.send_message("another tale, for you only", ephemeral=True)

    @discord.ui.button(label="Later", style=discord.ButtonStyle.success, custom_id="tale:later")
    async def later(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="the end")

    @discord.ui.button(label="Retitle", style=discord.ButtonStyle.secondary, custom_id="tale:retitle")
    async def retitle(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(Retitle())


class Retitle(discord.ui.Modal, title="A new title"):
    """A modal opened by a button; its submission edits the button's message (callback 7)."""

    text = discord.ui.TextInput(label="Title", max_length=80)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"# {self.text.value}")


class ConversingClient(discord.Client):
    """Answers mentions, replies to its own messages and DMs with a reply that carries TaleView's buttons."""

    def __init__(self, intents: discord.Intents, guild_id: int) -> None:
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.seen: list[discord.Message] = []
        self.pressed: list[tuple[str, int | None]] = []
        self.targets: list[discord.Message] = []
        self.own: list[discord.Message] = []
        self.deleted: list[int] = []

        @self.tree.context_menu(name="Continue as a tale", guild=self.guild)
        async def continue_tale(interaction: discord.Interaction, message: discord.Message) -> None:
            self.targets.append(message)
            await interaction.response.send_message(f"continuing: {message.content}", ephemeral=True)

    async def setup_hook(self) -> None:
        self.add_view(TaleView(self))
        await self.tree.sync(guild=self.guild)

    async def on_raw_message_delete(self, event: discord.RawMessageDeleteEvent) -> None:
        self.deleted.append(event.message_id)

    async def on_message(self, message: discord.Message) -> None:
        if message.author == self.user:
            self.own.append(message)
            return
        self.seen.append(message)
        assert self.user is not None
        resolved = message.reference.resolved if message.reference else None
        to_me = isinstance(resolved, discord.Message) and resolved.author == self.user
        if self.user in message.mentions or message.guild is None or to_me:
            await message.reply(f"a tale for {message.author.name}", view=TaleView(self))


@contextlib.asynccontextmanager
async def conversing(fake: FakeDiscord, content_intent: bool = False) -> AsyncIterator[ConversingClient]:
    intents = discord.Intents.default()
    intents.message_content = content_intent
    with discord_endpoints(fake.api_base, fake.gateway_url):
        client = ConversingClient(intents, int(fake.guild_id))
        task = asyncio.create_task(client.start(fake.token))
        try:
            await fake.wait_ready()
            yield client
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def rest(fake: FakeDiscord, method: str, path: str, body: object = None) -> tuple[int, dict]:
    """A bot's REST request with plain aiohttp: what Discord answers to exactly this body."""
    async with aiohttp.ClientSession() as http, http.request(method, f"{fake.api_base}{path}", json=body,
                            headers={"Authorization": f"Bot {fake.token}"}) as resp:
        return resp.status, (await resp.json() if resp.content_type == "application/json" else {})


def buttons(*ids: str, style: int = 1) -> list[dict]:
    return [{"type": 2, "style": style, "label": i, "custom_id": i} for i in ids]


async def test_a_mention_is_seen_without_the_content_intent_and_answered_with_a_reply(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        sent = await fake.post_message(f"{fake.mention(fake.bot_user)} once upon a time", channel="stories")
        assert sent is not None and sent["mentions"][0]["id"] == fake.bot_user.id
        reply = await fake.wait_for_reply(sent)
        assert client.seen[0].content.endswith("once upon a time")  # a mention lifts the intent's veil
        assert client.user in client.seen[0].mentions
        assert reply["type"] == 19 and reply["content"] == "a tale for bob"
        assert reply["message_reference"] == {"type": 0, "message_id": sent["id"],
                                              "channel_id": fake.channels["stories"], "guild_id": fake.guild_id}
        # discord.py leaves replied_user out when false; Discord's default with allowed_mentions is false
        assert reply["allowed_mentions"] == {"parse": []}
        assert reply["mentions"] == []  # replied_user false: bob is not pinged
        assert [b["custom_id"] for b in reply["components"][0]["components"]] == [
            "tale:continue", "tale:another", "tale:later", "tale:retitle"]
        assert fake.bot_messages("stories") == [reply]
        status, fetched = await rest(fake, "GET", f"/channels/{fake.channels['stories']}/messages/{reply['id']}")
        assert status == 200 and fetched["referenced_message"]["id"] == sent["id"]
        # Without a mention, and without the intent, the words stay hidden and nobody is answered.
        await fake.post_message("just chatting", channel="stories")
        await fake.wait_until(lambda: len(client.seen) == 2, what="the second message")
        assert client.seen[1].content == "" and len(fake.bot_messages("stories")) == 1


async def test_reply_chains_carry_the_referenced_message_or_none_once_it_is_deleted(fake: FakeDiscord) -> None:
    async with conversing(fake, content_intent=True) as client:
        first = await fake.post_message(f"{fake.mention(fake.bot_user)} tell me", channel="stories")
        answer = await fake.wait_for_reply(first)
        second = await fake.post_message("and then?", channel="stories", reply_to=answer, ping_reply=False)
        assert second is not None and second["referenced_message"]["id"] == answer["id"]
        assert second["mentions"] == [] and second["type"] == 19
        await fake.wait_for_reply(second)
        seen = client.seen[-1]
        assert seen.type is discord.MessageType.reply
        assert isinstance(seen.reference.resolved, discord.Message) and seen.reference.resolved.author == client.user
        pinged = await fake.post_message("ping on", channel="stories", reply_to=answer)
        assert [u["id"] for u in pinged["mentions"]] == [fake.bot_user.id]
        status, _ = await rest(fake, "DELETE", f"/channels/{fake.channels['stories']}/messages/{answer['id']}")
        assert status == 204
        orphan = await fake.post_message("still there?", channel="stories", reply_to=answer["id"])
        assert orphan["referenced_message"] is None and orphan["message_reference"]["message_id"] == answer["id"]
        await fake.wait_until(lambda: client.seen[-1].content == "still there?", what="the orphaned reply")
        assert isinstance(client.seen[-1].reference.resolved, discord.DeletedReferencedMessage)


async def test_replies_to_unknown_messages_are_refused_unless_told_not_to_fail(fake: FakeDiscord) -> None:
    channel = fake.channels["general"]
    status, body = await rest(fake, "POST", f"/channels/{channel}/messages",
                              {"content": "hi", "message_reference": {"message_id": "12345"}})
    assert status == 400 and body["code"] == 50035
    assert body["errors"]["message_reference"]["_errors"][0]["message"] == "Unknown message"
    _, elsewhere = await rest(fake, "POST", f"/channels/{fake.channels['stories']}/messages", {"content": "there"})
    status, body = await rest(fake, "POST", f"/channels/{channel}/messages",
                              {"content": "hi", "message_reference": {"message_id": elsewhere["id"]}})
    assert status == 400  # a reply must be in the replied-to message's channel
    status, body = await rest(fake, "POST", f"/channels/{channel}/messages", {
        "content": "hi", "message_reference": {"message_id": "12345", "fail_if_not_exists": False}})
    assert status == 200 and "message_reference" not in body and body["type"] == 0


@pytest.mark.parametrize(
    ("components", "where"),
    [
        ([{"type": 1, "components": buttons(*"abcdef")}], ["0", "components"]),
        ([{"type": 1, "components": buttons(str(i))} for i in range(6)], []),
        ([{"type": 1, "components": buttons("x" * 101)}], ["0", "components", "0", "custom_id"]),
        ([{"type": 1, "components": [{**buttons("a")[0], "label": "y" * 81}]}], ["0", "components", "0", "label"]),
        ([{"type": 1, "components": buttons("a", "a")}], ["0", "components", "1", "custom_id"]),
        ([{"type": 1, "components": buttons("a", style=5)}], ["0", "components", "0", "custom_id"]),
        ([{"type": 1, "components": [{"type": 2, "style": 5, "label": "go"}]}], ["0", "components", "0", "url"]),
        ([{"type": 1, "components": [{"type": 2, "style": 1, "label": "no id"}]}],
         ["0", "components", "0", "custom_id"]),
        ([{"type": 1, "components": [{"type": 2, "style": 7, "label": "a", "custom_id": "a"}]}],
         ["0", "components", "0", "style"]),
        ([{"type": 1, "components": []}], ["0", "components"]),
        (buttons("a"), ["0"]),  # a button outside an action row
    ],
)
async def test_components_discord_refuses_are_refused(fake: FakeDiscord, components: list, where: list) -> None:
    status, body = await rest(fake, "POST", f"/channels/{fake.channels['general']}/messages",
                              {"content": "buttons", "components": components})
    assert status == 400 and body["code"] == 50035
    errors = body["errors"]["components"]
    for key in where:
        errors = errors[key]
    assert "_errors" in errors
    assert not fake.bot_messages()


async def test_good_components_are_stored_and_edits_may_change_them(fake: FakeDiscord) -> None:
    channel = fake.channels["general"]
    link = {"type": 2, "style": 5, "label": "read", "url": "https://example.com"}
    rows = [{"type": 1, "components": [*buttons("a", "b", "c", "d"), link]}] + [
        {"type": 1, "components": buttons(f"r{i}")} for i in range(4)]
    status, sent = await rest(fake, "POST", f"/channels/{channel}/messages", {"content": "x", "components": rows})
    assert status == 200 and sent["components"] == rows
    status, edited = await rest(fake, "PATCH", f"/channels/{channel}/messages/{sent['id']}",
                                {"content": "y", "components": [{"type": 1, "components": buttons(*"abcdef")}]})
    assert status == 400 and fake.find_message(sent["id"])["components"] == rows  # a refused edit changes nothing
    status, edited = await rest(fake, "PATCH", f"/channels/{channel}/messages/{sent['id']}",
                                {"content": "y", "components": []})
    assert status == 200 and fake.bot_messages()[0]["components"] == [] and edited["content"] == "y"


async def test_buttons_press_into_interactions_discord_py_dispatches(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        asked = await fake.post_message(f"{fake.mention(fake.bot_user)} a tale", channel="stories")
        tale = await fake.wait_for_reply(asked)

        pressed = await fake.press(tale, "tale:continue")
        assert pressed.payload["type"] == 3 and pressed.payload["data"] == {"custom_id": "tale:continue",
                                                                            "component_type": 2}
        assert pressed.payload["message"]["id"] == tale["id"]
        callback = await pressed.wait_callback()
        assert callback.json["type"] == 7 and callback.status == 200  # discord.py asks with_response
        assert client.pressed == [("continue", int(tale["id"]))]
        assert pressed.original is fake.find_message(tale["id"])
        assert fake.find_message(tale["id"])["content"] == "a tale for bob and then"
        assert fake.find_message(tale["id"])["components"][0]["components"][0]["custom_id"] == "tale:continue"

        other = await fake.press(tale, "tale:another", user=fake.other_member)
        callback = await other.wait_callback()
        assert callback.json["type"] == 4 and callback.json["data"]["flags"] == EPHEMERAL
        assert other.original["content"] == "another tale, for you only"
        assert len(fake.bot_messages("stories")) == 1  # the private answer is not in the channel for all

        later = await fake.press(tale, "tale:later")
        settled = await fake.wait_for_message(lambda m: m["id"] == tale["id"] and m["content"] == "the end")
        assert [r.json["type"] for r in later.callbacks] == [6]
        assert later.requests[-1].route.endswith("/messages/@original")
        assert (await fake.wait_settled(settled, quiet_s=0.1))["content"] == "the end"
        with pytest.raises(DiscordClientRefused, match="no component"):
            await fake.press(tale, "tale:nope")


async def test_a_press_on_a_deleted_message_can_still_be_answered_privately(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        asked = await fake.post_message(f"{fake.mention(fake.bot_user)} a tale")
        tale = await fake.wait_for_reply(asked)
        status, _ = await rest(fake, "DELETE", f"/channels/{tale['channel_id']}/messages/{tale['id']}")
        assert status == 204 and fake.find_message(tale["id"]) is None
        pressed = await fake.press(tale, "tale:continue")
        await pressed.wait_for(lambda r: r.status == 200 and r.route.endswith("callback"), what="the second answer")
        assert [(r.json["type"], r.status) for r in pressed.callbacks] == [(7, 404), (4, 200)]
        assert pressed.original["content"] == "that tale is gone" and pressed.original["flags"] == EPHEMERAL
        assert client.pressed == [("continue", int(tale["id"]))]


async def test_message_context_menu_carries_the_resolved_message(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        menu = next(c for c in fake.commands[fake.guild_id] if c["name"] == "Continue as a tale")
        assert menu["type"] == 3 and menu["description"] == ""
        words = await fake.post_message("The frog sat by the well.", author=fake.other_member, channel="stories")
        inter = await fake.context_menu("Continue as a tale", words)
        assert inter.payload["data"]["target_id"] == words["id"]
        assert inter.payload["data"]["resolved"]["messages"][words["id"]]["content"] == "The frog sat by the well."
        callback = await inter.wait_callback()
        assert callback.status == 200 and callback.json["data"]["content"] == "continuing: The frog sat by the well."
        assert client.targets[0].content == "The frog sat by the well."  # whatever the intents say
        assert client.targets[0].author.id == int(fake.other_member.id)
        with pytest.raises(FakeDiscordError, match="no message command"):
            await fake.context_menu("Never registered", words)


async def test_context_menus_are_validated_when_synced(fake: FakeDiscord) -> None:
    path = f"/applications/{fake.app_id}/commands"
    ok = {"name": "Continue as a tale", "type": 3}
    assert (await rest(fake, "PUT", path, [ok, {"name": "continue", "type": 1, "description": "go on"}]))[0] == 200
    for bad in ({**ok, "description": "not allowed"}, {**ok, "name": "x" * 33},
                {"name": "Has Spaces", "type": 1, "description": "a slash command"}):
        status, body = await rest(fake, "PUT", path, [bad])
        assert status == 400 and body["code"] == 50035, bad
    status, body = await rest(fake, "PUT", path, [{"name": f"Menu {i}", "type": 3} for i in range(6)])
    assert status == 400 and body["code"] == 30032


async def test_direct_messages_arrive_without_a_guild_and_the_bot_can_answer_there(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        sent = await fake.post_dm("hello bot")
        assert sent is not None and "guild_id" not in sent and "member" not in sent
        reply = await fake.wait_for_reply(sent)
        assert client.seen[0].guild is None and isinstance(client.seen[0].channel, discord.DMChannel)
        assert client.seen[0].content == "hello bot"  # DMs need no message-content intent
        assert reply["channel_id"] == fake.dm_channel(fake.member) and "guild_id" not in reply
        assert fake.bot_messages(fake.dm_channel(fake.member)) == [reply]
        dm = await (await client.fetch_user(int(fake.member.id))).create_dm()
        assert dm.id == int(fake.dm_channel(fake.member))
        pressed = await fake.press(reply, "tale:another")
        assert "guild_id" not in pressed.payload and pressed.payload["channel_id"] == fake.dm_channel(fake.member)
        await pressed.wait_callback()


async def test_webhooks_other_bots_and_role_mentions_look_as_on_discord(fake: FakeDiscord) -> None:
    async with conversing(fake, content_intent=True) as client:
        hooked = await fake.post_message(f"news for <@&{fake.admin_role_id}>", webhook_name="Herald")
        assert hooked["webhook_id"] == hooked["author"]["id"] and hooked["author"]["bot"]
        assert hooked["mention_roles"] == [fake.admin_role_id]
        await fake.post_message("beep", author=fake.other_bot, mentions=[fake.member])
        await fake.wait_until(lambda: len(client.seen) == 2, what="both messages")
        assert client.seen[0].webhook_id == int(hooked["webhook_id"]) and client.seen[0].author.bot
        assert [r.id for r in client.seen[0].role_mentions] == [int(fake.admin_role_id)]
        assert client.seen[1].author.bot and client.seen[1].mentions[0].id == int(fake.member.id)


async def test_the_bot_sees_its_own_messages_when_the_fake_echoes_them() -> None:
    async with FakeDiscord(heartbeat_interval_ms=100, echo_bot_messages=True) as fake, conversing(fake) as client:
        sent = await fake.post_message(f"{fake.mention(fake.bot_user)} a tale", channel="stories")
        reply = await fake.wait_for_reply(sent)
        await fake.wait_until(lambda: client.own, what="the echo of the bot's reply")
        assert client.own[0].id == int(reply["id"]) and client.own[0].content == "a tale for bob"  # no intent needed
        assert client.own[0].reference is not None and client.own[0].reference.message_id == int(sent["id"])
        assert fake.dispatched.count(("MESSAGE_CREATE", fake.guild_id, 0)) == 2
        assert not fake.unknown_routes


async def test_interaction_responses_can_be_replied_to_fetched_and_deleted_in_their_channel(fake: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    async with running_client(fake, intents) as client:
        inter = await fake.slash("echo", {"text": "a tale"})
        await inter.wait_for(lambda r: r.route.startswith("POST /webhooks"), what="the follow-up")
        answer = inter.original
        assert fake.bot_messages() == [answer]  # the ephemeral follow-up is not the channel's
        reply = await fake.post_message("more!", reply_to=answer)
        assert reply["referenced_message"]["content"] == "a tale"
        await fake.wait_until(lambda: client.seen, what="the reply")
        assert client.seen[0].reference.resolved.id == int(answer["id"])
        path = f"/channels/{answer['channel_id']}/messages/{answer['id']}"
        assert (await rest(fake, "GET", path))[1]["content"] == "a tale"
        assert (await rest(fake, "DELETE", path))[0] == 204
        assert inter.original is None and fake.find_message(answer["id"]) is None
        assert fake.bot_messages() == []


async def test_a_user_deleting_a_message_reaches_the_bot_and_every_route(fake: FakeDiscord) -> None:
    async with conversing(fake) as client:
        asked = await fake.post_message(f"{fake.mention(fake.bot_user)} a tale")
        tale = await fake.wait_for_reply(asked)
        await fake.delete_message(tale)
        await fake.wait_until(lambda: client.deleted, what="MESSAGE_DELETE")
        assert client.deleted == [int(tale["id"])]
        path = f"/channels/{tale['channel_id']}/messages/{tale['id']}"
        assert (await rest(fake, "GET", path))[0] == 404
        assert fake.bot_reply_to(asked) is None and fake.bot_messages() == []
        with pytest.raises(FakeDiscordError, match="no message"):
            await fake.delete_message(tale)


async def test_only_its_owner_can_press_a_button_on_an_ephemeral_message(fake: FakeDiscord) -> None:
    async with running_client(fake):
        inter = await fake.slash("echo", {"text": "hi"})
        await inter.wait_for(lambda r: r.route.startswith("POST /webhooks"), what="the ephemeral follow-up")
        private = inter.followups[0]
        assert private["flags"] & EPHEMERAL
        status, _ = await rest(fake, "PATCH", f"/webhooks/{fake.app_id}/{inter.token}/messages/{private['id']}",
                               {"components": [{"type": 1, "components": buttons("more")}]})
        assert status == 200
        with pytest.raises(DiscordClientRefused, match="ephemeral"):
            await fake.press(private, "more", user=fake.other_member)
        pressed = await fake.press(private, "more")
        assert pressed.payload["message"]["flags"] & EPHEMERAL and pressed.user is fake.member


async def test_a_modal_opened_by_a_button_can_update_that_message(fake: FakeDiscord) -> None:
    async with conversing(fake):
        asked = await fake.post_message(f"{fake.mention(fake.bot_user)} a tale")
        tale = await fake.wait_for_reply(asked)
        opened = await fake.press(tale, "tale:retitle")
        assert (await opened.wait_callback()).json["type"] == CALLBACK_MODAL
        submitted = await fake.submit_modal(opened, {"Title": "The Frog King"})
        assert submitted.payload["message"]["id"] == tale["id"]
        callback = await submitted.wait_callback()
        assert callback.json["type"] == 7 and callback.status == 200
        assert fake.find_message(tale["id"])["content"] == "# The Frog King"


async def test_a_twin_keeps_the_echo_setting() -> None:
    async with FakeDiscord(echo_bot_messages=True) as fake:
        assert fake.twin().echo_bot_messages and not fake.twin(echo_bot_messages=False).echo_bot_messages


async def test_after_a_deferred_update_on_a_deleted_message_edits_fail_and_followups_work(fake: FakeDiscord) -> None:
    async with running_client(fake):  # it ignores the press: the test answers with the bot's own requests
        _, tale = await rest(fake, "POST", f"/channels/{fake.channels['general']}/messages",
                             {"content": "a tale", "components": [{"type": 1, "components": buttons("more")}]})
        await fake.delete_message(tale)
        pressed = await fake.press(tale, "more")
        hook = f"/webhooks/{fake.app_id}/{pressed.token}"
        assert (await rest(fake, "POST", f"/interactions/{pressed.id}/{pressed.token}/callback", {"type": 6}))[0] == 204
        status, body = await rest(fake, "PATCH", f"{hook}/messages/@original", {"content": "more"})
        assert status == 404 and body["code"] == 10008
        status, body = await rest(fake, "POST", f"{hook}?wait=true", {"content": "that tale is gone", "flags": 64})
        assert status == 200 and pressed.followups[0]["flags"] == EPHEMERAL
