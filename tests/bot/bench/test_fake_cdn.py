"""Attachment options and the fake CDN, proven with a bare discord.py client and plain HTTP.

A command declared with ``file: discord.Attachment`` must get a working ``discord.Attachment`` from the
fake's interaction (discord.py's own parsing of ``data.options`` and ``data.resolved``), and
``await attachment.read()`` must return the uploaded bytes through discord.py's own HTTP client; the
CDN routes must serve exactly those bytes and refuse (404) every URL Discord's would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import discord
import pytest
from discord import app_commands

from bot.bench.fake_cdn import ATTACHMENT_SIZE_LIMIT
from bot.bench.fake_discord import EPHEMERAL, OPT_ATTACHMENT, DiscordClientRefused, FakeDiscord, FakeDiscordError
from bot.discord_app.endpoints import discord_endpoints

RULES = "# Rules\nSpeak like a dragon 🐉, never in capitals.\n".encode()
BINARY = bytes(range(256)) + b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"


class UploadClient(discord.Client):
    """``/persona create name style file [file2] [file3]``, the shape of the coming upload command."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.received: list[tuple[discord.Attachment, bytes, bytes]] = []  # (attachment, read(), cached read)
        self.done = asyncio.Event()
        persona = app_commands.Group(name="persona", description="Manage personas", guild_ids=[guild_id])

        @persona.command(description="Create a persona from text files")
        async def create(
            interaction: discord.Interaction, name: str, style: Literal["gothic", "plain"], file: discord.Attachment,
            file2: discord.Attachment | None = None, file3: discord.Attachment | None = None,
        ) -> None:
            for att in (file, file2, file3):
                if att is not None:
                    self.received.append((att, await att.read(), await att.read(use_cached=True)))
            await interaction.response.send_message(f"{name} ({style}): {len(self.received)} files", ephemeral=True)
            self.done.set()

        self.tree.add_command(persona)

    async def setup_hook(self) -> None:
        await self.tree.sync(guild=self.guild)


@contextlib.asynccontextmanager
async def running_client(fake: FakeDiscord) -> AsyncIterator[UploadClient]:
    with discord_endpoints(fake.api_base, fake.gateway_url):
        client = UploadClient(int(fake.guild_id))
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


async def test_a_discord_py_command_gets_attachments_whose_read_returns_the_bytes(fake: FakeDiscord) -> None:
    async with running_client(fake) as client:
        inter = await fake.slash("persona create", {"name": "Ada", "style": "gothic"}, files={
            "file": ("rules.md", RULES, "text/markdown; charset=utf-8"),
            "file2": ("blob.bin", BINARY, None),
            "file3": ("empty.txt", b"", "text/plain"),
        })
        callback = await inter.wait_callback()
        await asyncio.wait_for(client.done.wait(), 10)
    assert callback.json["data"]["content"] == "Ada (gothic): 3 files"
    assert callback.json["data"]["flags"] == EPHEMERAL
    got = {att.filename: (att, read, cached) for att, read, cached in client.received}
    assert set(got) == {"rules.md", "blob.bin", "empty.txt"}
    for filename, data, content_type in (("rules.md", RULES, "text/markdown; charset=utf-8"),
                                         ("blob.bin", BINARY, None), ("empty.txt", b"", "text/plain")):
        att, read, cached = got[filename]
        assert isinstance(att, discord.Attachment)
        assert (read, cached) == (data, data)
        assert att.size == len(data) and att.content_type == content_type and att.ephemeral
    # discord.py fetched each file twice (url, then proxy_url), with no unknown route on the way
    assert sorted(d.attachment_id for d in fake.cdn.downloads) == sorted(2 * [str(a.id) for a, _, _ in got.values()])
    assert {d.status for d in fake.cdn.downloads} == {200}


async def test_the_interaction_carries_attachment_ids_and_resolved_objects(fake: FakeDiscord) -> None:
    async with running_client(fake):
        inter = await fake.slash("persona create", {"name": "Ada", "style": "plain"},
                                 files={"file": ("my rules.md", RULES, "text/markdown")})
        await inter.wait_callback()
    data = inter.payload["data"]
    (create,) = data["options"]
    assert (create["name"], create["type"]) == ("create", 1)
    by_name = {o["name"]: o for o in create["options"]}
    assert set(by_name) == {"name", "style", "file"}
    file_option = by_name["file"]
    assert file_option["type"] == OPT_ATTACHMENT == 11
    att = data["resolved"]["attachments"][file_option["value"]]
    channel = fake.channels["general"]
    assert att == {
        "id": file_option["value"], "filename": "my_rules.md", "size": len(RULES), "content_type": "text/markdown",
        "ephemeral": True, "url": att["url"], "proxy_url": att["proxy_url"],
    }
    for url, host in ((att["url"], "cdn"), (att["proxy_url"], "media")):
        prefix = f"{fake.base_url}/{host}/ephemeral-attachments/{channel}/{att['id']}/my_rules.md?ex="
        assert url.startswith(prefix) and "&hm=" in url


async def test_files_discord_would_not_send_are_refused_before_anything_is_uploaded(fake: FakeDiscord) -> None:
    async with running_client(fake):
        with pytest.raises(DiscordClientRefused, match="required options missing: \\['file'\\]"):
            await fake.slash("persona create", {"name": "Ada", "style": "plain"})
        with pytest.raises(DiscordClientRefused, match="at most"):
            await fake.slash("persona create", {"name": "Ada", "style": "plain"},
                             files={"file": ("big.txt", b"x" * (ATTACHMENT_SIZE_LIMIT + 1), "text/plain")})
        with pytest.raises(FakeDiscordError, match="not a registered ATTACHMENT option"):
            await fake.slash("persona create", {"style": "plain"},
                             files={"file": ("a.txt", b"a", None), "name": ("b.txt", b"b", None)})
        with pytest.raises(FakeDiscordError, match="pass it in files="):
            await fake.slash("persona create", {"name": "Ada", "style": "plain", "file": RULES})
    assert not fake.cdn.attachments and not fake.interactions


async def test_the_cdn_serves_the_exact_bytes_at_url_and_proxy_url(fake: FakeDiscord) -> None:
    channel = fake.channels["stories"]
    files = [("rules.md", RULES, "text/markdown; charset=utf-8"), ("blob.bin", BINARY, None),
             ("empty.txt", b"", "text/plain"), ("règles du jeu.txt", "é".encode("latin-1"), "text/plain")]
    async with aiohttp.ClientSession() as http:
        for filename, data, content_type in files:
            att = fake.cdn.upload(channel, filename, data, content_type)
            assert att["size"] == len(data)
            for url in (att["url"], att["proxy_url"]):
                async with http.get(url) as resp:
                    assert resp.status == 200, url
                    assert await resp.read() == data
                    assert resp.headers["Content-Length"] == str(len(data))
                    assert resp.headers["Content-Type"] == (content_type or "application/octet-stream")
    assert fake.cdn.attachments[att["id"]].filename == "règles_du_jeu.txt"


async def test_the_cdn_answers_404_for_unknown_or_unsigned_urls(fake: FakeDiscord) -> None:
    att = fake.cdn.upload(fake.channels["general"], "rules.md", RULES, "text/markdown")
    url, query = att["url"].split("?")
    base = f"{fake.base_url}/cdn/ephemeral-attachments"
    wrong = [
        f"{base}/{fake.channels['general']}/123456789/rules.md?{query}",  # no such attachment
        f"{base}/{fake.channels['stories']}/{att['id']}/rules.md?{query}",  # another channel
        url.replace("rules.md", "other.md") + "?" + query,  # another name
        url,  # the signature stripped
        att["url"].replace("hm=", "hm=0"),  # a forged signature
    ]
    async with aiohttp.ClientSession() as http:
        for bad in wrong:
            async with http.get(bad) as resp:
                assert resp.status == 404, bad
                assert await resp.text() == "This content is no longer available."
    assert [d.status for d in fake.cdn.downloads] == [404] * len(wrong)
    assert all(d.attachment_id is None for d in fake.cdn.downloads)
    assert not fake.requests  # CDN downloads are not REST requests: nothing in the API's records
