"""A fake Discord (REST API v10 and gateway) on 127.0.0.1, so end-to-end tests can run the real bot offline.

Discord itself is unreachable from tests and must never see a real token, yet the bot's behaviour that users
notice lives in the bytes it sends: deferrals, edits, modals, ``allowed_mentions``, ephemeral flags. This fake
speaks enough of the protocol for discord.py to log in, connect, identify, heartbeat, resume and receive
interactions and messages; it validates what real Discord validates where a bot could get it wrong (message
length, empty messages, answering an interaction twice, the intents needed to see message content) and it
records every HTTP request (method, path, JSON body) and every heartbeat so tests can assert on them.

Routes it does not know are logged at ERROR, recorded in :attr:`FakeDiscord.unknown_routes` and answered 404,
so a gap in the fake shows up instead of passing silently.

Point discord.py at it with the bot's own ``CHARBOT_DISCORD_API``/``CHARBOT_DISCORD_GATEWAY`` settings (in
process: :func:`bot.discord_app.endpoints.discord_endpoints`). It lives in the bench, not in the tests, because
``charbot bench --only capacity`` drives a real bot process through it; it imports no discord.py (only
``bot/discord_app/`` may), so it speaks the protocol from its own constants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.bench.fake_cdn import ATTACHMENT_SIZE_LIMIT, FakeCDN, FileUpload

log = logging.getLogger("fake_discord")

API_VERSION = 10
# Shaped like a real bot token (three dot-separated parts) so token checks accept it; it opens nothing anywhere.
FAKE_TOKEN = "ZmFrZS1ib3QtdG9rZW4tMDAw.ZmFrZQ.ZmFrZS1kaXNjb3JkLW5vdC1hLXJlYWwtdG9rZW4"
DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | READ_MESSAGE_HISTORY | USE_APPLICATION_COMMANDS
ALL_PERMISSIONS = (1 << 51) - 1

# Gateway intents that decide which events the bot receives.
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Message types (https://discord.com/developers/docs/resources/message#message-object-message-types).
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19

# Interaction and callback types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
MODAL_SUBMIT = 5
CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE = 7
CALLBACK_MODAL = 9

# Application command types: a slash command, a user context menu, a message context menu.
CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3

# Message component types and button styles.
ACTION_ROW, BUTTON, TEXT_INPUT = 1, 2, 4
SELECT_TYPES = (3, 5, 6, 7, 8)
LINK_BUTTON, PREMIUM_BUTTON = 5, 6

# Application command option types, used to turn test values into interaction options.
OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 10, 11

MESSAGE_SENDING_ROUTES = {
    "POST /channels/{channel_id}/messages",
    "PATCH /channels/{channel_id}/messages/{message_id}",
    "POST /webhooks/{app_id}/{token}",
    "PATCH /webhooks/{app_id}/{token}/messages/@original",
    "PATCH /webhooks/{app_id}/{token}/messages/{message_id}",
}


class FakeDiscordError(AssertionError):
    """A test used the fake wrongly or waited for something that never came."""


class DiscordClientRefused(FakeDiscordError):
    """Discord's own client would not send this (a declared option limit, choice or requirement stops it)."""


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class Snowflakes:
    """Time-based, strictly increasing ids, so discord.py's ``created_at`` stays sensible."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self, shard: int | None = None, shard_count: int = 1) -> str:
        """The next id; with ``shard``, one Discord routes to that shard of ``shard_count`` (its
        timestamp is nudged a few milliseconds forward until ``(id >> 22) % shard_count == shard``)."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if shard is not None:
            ms += (shard - ms) % shard_count
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))


def shard_of(guild_id: str | int, shard_count: int) -> int:
    """The shard Discord sends a guild's events to."""
    return (int(guild_id) >> 22) % shard_count


@dataclass
class FakeUser:
    """A Discord user (or bot account) as the fake's world knows it."""

    id: str
    username: str
    bot: bool = False
    roles: list[str] = field(default_factory=list)
    permissions: int = MEMBER_PERMISSIONS

    def payload(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "global_name": self.username.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, with_permissions: bool = False) -> dict:
        member = {
            "user": self.payload(),
            "roles": list(self.roles),
            "nick": None,
            "avatar": None,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
        }
        if with_permissions:
            member["permissions"] = str(self.permissions)
        return member


@dataclass
class RecordedRequest:
    """One HTTP request the bot made, with what the fake answered."""

    method: str
    path: str
    route: str
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[str]
    headers: dict[str, str]
    at: float
    status: int = 0
    response: Any = None

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def sends_message(self) -> bool:
        """Whether this request puts message content in front of users (so ``allowed_mentions`` matters)."""
        if self.route in MESSAGE_SENDING_ROUTES:
            return True
        if self.route == "POST /interactions/{interaction_id}/{token}/callback":
            return isinstance(self.json, dict) and self.json.get("type") in (CALLBACK_MESSAGE, 7)
        return False

    def message_data(self) -> dict:
        """The message fields of the body (the ``data`` of an interaction callback, else the body)."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.route == "POST /interactions/{interaction_id}/{token}/callback":
            return body.get("data") or {}
        return body


@dataclass
class FakeInteraction:
    """An interaction the fake sent the bot; its token ties the bot's later requests to it."""

    fake: FakeDiscord
    id: str
    token: str
    user: FakeUser
    payload: dict
    sent_at: float

    @property
    def requests(self) -> list[RecordedRequest]:
        return [r for r in self.fake.requests if r.params.get("token") == self.token]

    @property
    def callbacks(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route.endswith("/callback")]

    @property
    def original(self) -> dict | None:
        """The response message as users see it now (content, flags), or None if there is none yet."""
        return self.fake.original_messages.get(self.token)

    @property
    def followups(self) -> list[dict]:
        return list(self.fake.followup_messages.get(self.token, []))

    async def wait_callback(self, timeout: float = 10.0) -> RecordedRequest:
        return await self.fake.wait_for_request(
            lambda r: r.params.get("token") == self.token and r.route.endswith("/callback"),
            timeout=timeout,
            what=f"the interaction callback for {self.payload.get('data', {}).get('name', self.id)}",
        )

    async def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 20.0, what: str = ""
    ) -> RecordedRequest:
        return await self.fake.wait_for_request(
            lambda r: r.params.get("token") == self.token and predicate(r), timeout=timeout, what=what
        )


class _Route:
    def __init__(self, method: str, template: str, handler: Callable[..., Awaitable[web.StreamResponse]]) -> None:
        self.method = method
        self.template = template
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.regex = re.compile(f"^{pattern}$")
        self.handler = handler

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


class _GatewaySession:
    """One identified gateway session; survives a reconnect when the bot resumes it."""

    def __init__(self, session_id: str, intents: int, shard: tuple[int, int] = (0, 1)) -> None:
        self.session_id = session_id
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.sent: list[dict] = []
        self.ws: web.WebSocketResponse | None = None


class FakeDiscord:
    """The fake server. ``async with FakeDiscord() as fake:`` starts it on a free loopback port.

    Its world: one guild ("Fairy Tale Club") with text channels ``general`` and ``stories``; the bot user
    (whose id is the application id); ``admin`` (every permission, owner), ``member`` and ``other_member``
    (ordinary permissions) and ``other_bot``. Drive the bot with :meth:`slash` (with ``files`` for attachment
    options, served back by :attr:`cdn`), :meth:`submit_modal` and :meth:`post_message`; assert on
    :attr:`requests`, :attr:`heartbeats`, :attr:`original_messages` or per interaction through
    :class:`FakeInteraction`; wait with :meth:`wait_for_request`/:meth:`wait_until`.

    Conversation: :meth:`post_message` (mentions, ``reply_to``), :meth:`post_dm`, :meth:`press` (buttons),
    :meth:`context_menu` (message commands) and :meth:`delete_message` drive it; :meth:`bot_messages`,
    :meth:`bot_reply_to`, :meth:`find_message`, :meth:`wait_for_message`, :meth:`wait_for_reply` and
    :meth:`wait_settled` show what the bot posted, with its ``components`` and ``allowed_mentions``.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 500,
        token: str = FAKE_TOKEN,
        interaction_deadline_s: float | None = 3.0,
        privileged_intents: int = ALL_PERMISSIONS,
        recommended_shards: int = 1,
        echo_bot_messages: bool = False,
    ) -> None:
        self.recommended_shards = recommended_shards
        # Discord sends a bot MESSAGE_CREATE for the messages it posts itself; off by default (older tests
        # count the events they cause), on for tests that must show the bot does not answer itself.
        self.echo_bot_messages = echo_bot_messages
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.token = token
        self.interaction_deadline_s = interaction_deadline_s
        self.privileged_intents = privileged_intents
        self.ids = Snowflakes()

        self.app_id = self.ids.next()
        self.bot_user = FakeUser(self.app_id, "charbot", bot=True)
        self.guild_id = self.ids.next()
        self.admin_role_id = self.ids.next()
        self.admin = FakeUser(self.ids.next(), "ada", roles=[self.admin_role_id], permissions=ALL_PERMISSIONS)
        self.member = FakeUser(self.ids.next(), "bob")
        self.other_member = FakeUser(self.ids.next(), "cleo")
        self.other_bot = FakeUser(self.ids.next(), "otherbot", bot=True)
        self.users = [self.bot_user, self.admin, self.member, self.other_member, self.other_bot]
        self.channels = {"general": self.ids.next(), "stories": self.ids.next()}
        # Every guild's channels by name; the first guild's are also self.channels (most tests need one guild).
        self.guild_channels: dict[str, dict[str, str]] = {self.guild_id: self.channels}
        self.guild_names: dict[str, str] = {self.guild_id: "Fairy Tale Club"}
        self.dispatched: list[tuple[str, str | None, int]] = []  # (event, guild id, shard) for every dispatch

        self.requests: list[RecordedRequest] = []
        # Called with each request once answered, in order: a load generator follows hundreds of replies
        # without re-scanning every request for each of them (what wait_until's checks do).
        self.observers: list[Callable[[RecordedRequest], None]] = []
        self.unknown_routes: list[RecordedRequest] = []
        self.heartbeats: list[float] = []
        self.heartbeat_acks: list[float] = []
        self.gateway_received: list[dict] = []
        self.identifies: list[dict] = []
        self.resumes: list[dict] = []
        self.commands: dict[str | None, list[dict]] = {}
        self.channel_messages: dict[str, dict[str, dict]] = {}
        self.original_messages: dict[str, dict] = {}
        self.followup_messages: dict[str, list[dict]] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        # One direct-message channel per user, as Discord keeps one: user id -> channel id.
        self.dm_channels: dict[str, str] = {}
        # Files users attach to slash commands (``slash(..., files=...)``) and the CDN routes serving them.
        self.cdn = FakeCDN(lambda: self.base_url, lambda: self.ids.next(), self._notify)

        self._session: _GatewaySession | None = None
        self._sessions: dict[str, _GatewaySession] = {}
        self._by_shard: dict[int, _GatewaySession] = {}
        self._changed = asyncio.Condition()
        self._routes = self._build_routes()
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = 0

    # ----- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        self.cdn.add_routes(app.router)  # before the catch-all, which would answer CDN URLs as unknown routes
        app.router.add_route("*", "/{tail:.*}", self._http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("fake Discord listening on %s", self.base_url)

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What discord.py's ``Route.BASE`` must be."""
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ----- waiting on what happened ----------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, check: Callable[[], Any], timeout: float = 20.0, what: str = "a condition") -> Any:
        """Wait until ``check()`` is truthy (re-checked whenever the fake records something) and return it."""

        async def _wait() -> Any:
            async with self._changed:
                while True:
                    result = check()
                    if result:
                        return result
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(_wait(), timeout)
        except asyncio.TimeoutError:
            recent = "\n  ".join(f"{r.key} -> {r.status} {json.dumps(r.json)[:200]}" for r in self.requests[-8:])
            raise FakeDiscordError(
                f"timed out after {timeout}s waiting for {what}; last requests:\n  {recent}"
            ) from None

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 20.0, what: str = "", start: int = 0
    ) -> RecordedRequest:
        """The first recorded request (from index ``start``) that matches, waiting for it if need be."""

        def find() -> RecordedRequest | None:
            return next((r for r in self.requests[start:] if r.status and predicate(r)), None)

        return await self.wait_until(find, timeout, what or "a matching request")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the bot has identified and been sent READY and GUILD_CREATE."""

        def ready() -> bool:
            s = self._session
            return s is not None and any(e.get("t") == "READY" for e in s.sent) and \
                sum(e.get("t") == "GUILD_CREATE" for e in s.sent) >= max(1, len(self.guilds_of(s.shard)))

        await self.wait_until(ready, timeout, "the bot to connect to the gateway and receive GUILD_CREATE")

    async def wait_heartbeats(self, count: int, timeout: float = 20.0) -> None:
        await self.wait_until(lambda: len(self.heartbeat_acks) >= count, timeout, f"{count} heartbeat acks")

    def message_requests(self) -> list[RecordedRequest]:
        """Every request that showed message content to users."""
        return [r for r in self.requests if r.sends_message]

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    def add_guild(self, name: str, shard: int | None = None, shard_count: int = 1) -> str:
        """Another guild (channels ``general`` and ``stories``), on ``shard`` of ``shard_count`` if given.

        Add guilds before the bot connects: they are announced in READY and GUILD_CREATE.
        """
        guild_id = self.ids.next(shard, shard_count)
        self.guild_channels[guild_id] = {"general": self.ids.next(), "stories": self.ids.next()}
        self.guild_names[guild_id] = name
        return guild_id

    def twin(self, **options: Any) -> FakeDiscord:
        """Another fake server with this one's world (application, guilds, channels, users, token).

        Two bot processes, each on its own twin, see the same guild and people: what a rolling
        restart or a resharded cluster does to one guild, in a form a test can drive one
        process at a time. Start it with ``async with``.
        """
        other = FakeDiscord(heartbeat_interval_ms=self.heartbeat_interval_ms, token=self.token,
                            interaction_deadline_s=self.interaction_deadline_s,
                            privileged_intents=self.privileged_intents,
                            **{"echo_bot_messages": self.echo_bot_messages, **options})
        for name in ("ids", "app_id", "bot_user", "guild_id", "admin_role_id", "admin", "member", "other_member",
                     "other_bot", "users", "channels", "guild_channels", "guild_names"):
            setattr(other, name, getattr(self, name))
        return other

    def guilds_of(self, shard: tuple[int, int]) -> list[str]:
        """The guilds Discord sends to ``shard`` = (shard id, shard count)."""
        return [g for g in self.guild_channels if shard_of(g, shard[1]) == shard[0]]

    @property
    def shards(self) -> dict[int, tuple[int, int]]:
        """The shards identified so far, by shard id: (id, count)."""
        return {k: s.shard for k, s in self._by_shard.items()}

    async def wait_shards_ready(self, shard_ids: list[int], timeout: float = 60.0) -> None:
        """Wait until each of ``shard_ids`` has identified and been sent READY and its guilds."""

        def ready() -> bool:
            return all(
                (s := self._by_shard.get(i)) is not None
                and sum(e.get("t") == "GUILD_CREATE" for e in s.sent) >= len(self.guilds_of(s.shard))
                for i in shard_ids
            )

        await self.wait_until(ready, timeout, f"shards {shard_ids} to connect and receive their guilds")

    def _session_for(self, guild_id: str | None) -> _GatewaySession | None:
        """Where Discord sends a guild's events: the connected session of the guild's shard (DMs: shard 0)."""
        if not self._by_shard:
            return self._session
        count = next(iter(self._by_shard.values())).shard[1]
        return self._by_shard.get(shard_of(guild_id, count) if guild_id else 0)

    @property
    def synced_command_names(self) -> set[str]:
        return {c["name"] for cmds in self.commands.values() for c in cmds}

    # ----- HTTP ------------------------------------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        r = _Route
        return [
            r("GET", "/gateway", self._get_gateway),
            r("GET", "/gateway/bot", self._get_gateway),
            r("GET", "/users/@me", self._get_me),
            r("GET", "/oauth2/applications/@me", self._get_application),
            r("GET", "/applications/@me", self._get_application),
            r("GET", "/applications/{app_id}/commands", self._get_commands),
            r("PUT", "/applications/{app_id}/commands", self._put_commands),
            r("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            r("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            r("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            r("GET", "/webhooks/{app_id}/{token}/messages/@original", self._get_original),
            r("PATCH", "/webhooks/{app_id}/{token}/messages/@original", self._edit_original),
            r("DELETE", "/webhooks/{app_id}/{token}/messages/@original", self._delete_original),
            r("POST", "/webhooks/{app_id}/{token}", self._post_followup),
            r("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_followup),
            r("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_followup),
            r("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._delete_followup),
            r("POST", "/users/@me/channels", self._open_dm),
            r("GET", "/users/{user_id}", self._get_user),
            r("POST", "/channels/{channel_id}/messages", self._post_channel_message),
            r("GET", "/channels/{channel_id}/messages/{message_id}", self._get_channel_message),
            r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_channel_message),
            r("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_channel_message),
            r("POST", "/channels/{channel_id}/typing", self._no_content),
            r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._no_content),
        ]

    async def _http(self, request: web.Request) -> web.StreamResponse:
        prefix = f"/api/v{API_VERSION}"
        full = request.path
        path = full[len(prefix) :] if full.startswith(prefix + "/") else full
        body, files = await self._read_body(request)
        rec = RecordedRequest(
            method=request.method,
            path=path,
            route="",
            params={},
            query=dict(request.query),
            json=body,
            files=files,
            headers=dict(request.headers),
            at=time.monotonic(),
        )
        self.requests.append(rec)
        route, params = self._match(request.method, path) if full.startswith(prefix + "/") else (None, {})
        if route is None:
            rec.route = "UNKNOWN"
            self.unknown_routes.append(rec)
            log.error("FAKE DISCORD: unknown route %s %s (body %s) -> 404", request.method, full, body)
            response = self._error(404, 0, f"404: Not Found (the fake Discord has no route {request.method} {full})")
        elif request.headers.get("Authorization") != f"Bot {self.token}" and not route.template.startswith(
            ("/interactions/", "/webhooks/")
        ):
            rec.route = route.name
            response = self._error(401, 0, "401: Unauthorized")
        else:
            rec.route = route.name
            rec.params = params
            try:
                response = await route.handler(rec)
            except _Reject as exc:
                response = exc.response
        rec.status = response.status
        if (
            isinstance(response, web.Response)
            and response.body is not None
            and response.content_type == "application/json"
        ):
            rec.response = json.loads(response.text or "null")
        self._rate_limit_headers(response, rec.route)
        for observe in self.observers:
            observe(rec)
        await self._notify()
        return response

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            if route.method != method:
                continue
            m = route.regex.match(path)
            if m:
                return route, m.groupdict()
        return None, {}

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[str]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: list[str] = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    await part.read()  # type: ignore[union-attr]
                    files.append(part.filename or part.name or "")  # type: ignore[union-attr]
            return body, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            return raw.decode("utf-8", "replace"), []

    @staticmethod
    def _rate_limit_headers(response: web.StreamResponse, route: str) -> None:
        # Generous, constant limits: discord.py parses them but never has to wait.
        response.headers["X-RateLimit-Limit"] = "50"
        response.headers["X-RateLimit-Remaining"] = "49"
        response.headers["X-RateLimit-Reset-After"] = "1.0"
        response.headers["X-RateLimit-Reset"] = f"{time.time() + 1:.3f}"
        response.headers["X-RateLimit-Bucket"] = f"fake-{abs(hash(route)) % 10**8}"

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return _json_response(data, status)

    @staticmethod
    def _error(status: int, code: int, message: str, errors: dict | None = None) -> web.Response:
        body: dict[str, Any] = {"code": code, "message": message}
        if errors:
            body["errors"] = errors
        return _json_response(body, status)

    async def _no_content(self, rec: RecordedRequest) -> web.Response:
        return web.Response(status=204)

    # -- login and application ----------------------------------------------------------------------------------

    async def _get_gateway(self, rec: RecordedRequest) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return self._json({"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limit})

    async def _get_me(self, rec: RecordedRequest) -> web.Response:
        return self._json({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_application(self, rec: RecordedRequest) -> web.Response:
        return self._json(
            {
                "id": self.app_id,
                "name": "charbot",
                "description": "a fake application",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self.admin.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    def _check_app(self, rec: RecordedRequest) -> None:
        if rec.params.get("app_id") != self.app_id:
            raise _Reject(self._error(404, 10002, "Unknown Application"))

    async def _get_commands(self, rec: RecordedRequest) -> web.Response:
        self._check_app(rec)
        return self._json(self.commands.get(rec.params.get("guild_id"), []))

    async def _put_commands(self, rec: RecordedRequest) -> web.Response:
        self._check_app(rec)
        if not isinstance(rec.json, list):
            return self._error(400, 50035, "Invalid Form Body")
        guild_id = rec.params.get("guild_id")
        # Names are unique per command type: a slash command and a context menu may share one.
        names = [(c.get("name"), c.get("type", CHAT_INPUT)) for c in rec.json]
        if len(names) != len(set(names)):
            return self._error(400, 50035, "Invalid Form Body: duplicate command names")
        for kind, limit in ((CHAT_INPUT, 100), (USER_COMMAND, 5), (MESSAGE_COMMAND, 5)):
            if sum(t == kind for _, t in names) > limit:
                return self._error(400, 30032, f"Maximum number of commands of type {kind} reached ({limit})")
        for c in rec.json:
            problem = _command_problem(c)
            if problem:
                return self._error(400, 50035, f"Invalid Form Body: {problem}")
        old = {(c["name"], c.get("type", CHAT_INPUT)): c for c in self.commands.get(guild_id, [])}
        stored = []
        for c in rec.json:
            cmd = {
                "id": old.get((c["name"], c.get("type", CHAT_INPUT)), {}).get("id") or self.ids.next(),
                "application_id": self.app_id,
                "version": self.ids.next(),
                "type": c.get("type", 1),
                "description": c.get("description", ""),
                "options": c.get("options", []),
                "default_member_permissions": c.get("default_member_permissions"),
                "nsfw": c.get("nsfw", False),
                **c,
            }
            if guild_id:
                cmd["guild_id"] = guild_id
            if cmd["default_member_permissions"] is not None:
                cmd["default_member_permissions"] = str(cmd["default_member_permissions"])  # Discord answers strings
            stored.append(cmd)
        self.commands[guild_id] = stored
        return self._json(stored)

    # -- interactions -------------------------------------------------------------------------------------------

    def _interaction_for(self, rec: RecordedRequest) -> FakeInteraction:
        inter = self.interactions.get(rec.params.get("token", ""))
        if inter is None:
            raise _Reject(self._error(401, 50027, "Invalid Webhook Token"))
        return inter

    async def _interaction_callback(self, rec: RecordedRequest) -> web.Response:
        inter = self._interaction_for(rec)
        if rec.params["interaction_id"] != inter.id:
            return self._error(404, 10062, "Unknown interaction")
        if any(r.status and r.status < 300 for r in inter.callbacks if r is not rec):
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        if self.interaction_deadline_s is not None and rec.at - inter.sent_at > self.interaction_deadline_s:
            log.error("FAKE DISCORD: interaction %s answered after %.1fs", inter.id, rec.at - inter.sent_at)
            return self._error(404, 10062, "Unknown interaction")
        body = rec.json if isinstance(rec.json, dict) else {}
        kind = body.get("type")
        data = body.get("data") or {}
        message: dict | None = None
        if kind == CALLBACK_MESSAGE:
            problem = _message_problem(data, creating=True, files=rec.files)
            if problem:
                return self._error(400, 50035, "Invalid Form Body", {"data": problem})
            message = self._new_webhook_message(inter, data, flags=data.get("flags", 0) & ~LOADING)
            self.original_messages[inter.token] = message
        elif kind == CALLBACK_DEFERRED:
            flags = (data.get("flags", 0) & EPHEMERAL) | LOADING
            message = self._new_webhook_message(inter, {"content": ""}, flags=flags)
            self.original_messages[inter.token] = message
        elif kind == CALLBACK_MODAL:
            if inter.payload["type"] == MODAL_SUBMIT:
                return self._error(400, 50035, "Invalid Form Body: a modal cannot answer a modal submit")
            problem = _modal_problem(data)
            if problem:
                return self._error(400, 50035, f"Invalid Form Body: {problem}")
        elif kind in (CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE):
            if inter.payload["type"] not in (MESSAGE_COMPONENT, MODAL_SUBMIT):
                return self._error(400, 50035, f"Invalid Form Body: callback type {kind} needs a component interaction")
            # The "original" of a component interaction answered this way is the message the component is on.
            target = self._component_message(inter)
            if kind == CALLBACK_UPDATE:
                if target is None:
                    return self._error(404, 10008, "Unknown Message")
                edited = self._edit(target, rec, body=data)
                if edited.status >= 300:
                    return edited
                message = target
            if target is not None:
                self.original_messages[inter.token] = target
        else:
            return self._error(400, 50035, f"Invalid Form Body: callback type {kind!r} not supported here")
        answer: dict[str, Any] = {
            "interaction": {
                "id": inter.id,
                "type": inter.payload["type"],
                "response_message_loading": kind == CALLBACK_DEFERRED,
                "response_message_ephemeral": bool(message and message["flags"] & EPHEMERAL),
            }
        }
        if message is not None:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, "message": self.rendered(message)}
        if rec.query.get("with_response") in ("1", "true", "True"):
            return self._json(answer)
        return web.Response(status=204)

    def _new_webhook_message(self, inter: FakeInteraction, data: dict, flags: int) -> dict:
        return {
            "id": self.ids.next(),
            "channel_id": inter.payload.get("channel_id"),
            "guild_id": inter.payload.get("guild_id"),
            "author": self.bot_user.payload(),
            "content": data.get("content") or "",
            "embeds": list(data.get("embeds") or []),
            "components": list(data.get("components") or []),
            "attachments": [],
            "allowed_mentions": data.get("allowed_mentions"),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "type": 20,
            "flags": flags,
            "webhook_id": self.app_id,
            "application_id": self.app_id,
        }

    def _original_for(self, rec: RecordedRequest) -> dict:
        self._check_app(rec)
        inter = self._interaction_for(rec)
        message = self.original_messages.get(inter.token)
        if message is None:
            raise _Reject(self._error(404, 10008, "Unknown Message"))
        return message

    @staticmethod
    def _apply_edit(message: dict, body: Any, files: list[str]) -> web.Response | None:
        data = body if isinstance(body, dict) else {}
        # A components-v2 message stays one: its layout is checked by the flag it was sent with.
        problem = _message_problem({**data, "flags": data.get("flags") or message.get("flags", 0)},
                                   creating=False, files=files)
        if problem:
            return FakeDiscord._error(400, 50035, "Invalid Form Body", problem)
        for key in ("content", "embeds", "components", "allowed_mentions"):
            if key in data:
                message[key] = data[key] if data[key] is not None else ([] if key != "content" else "")
        if "flags" in data and data["flags"] is not None:
            message["flags"] = (message["flags"] & EPHEMERAL) | (data["flags"] & ~EPHEMERAL & ~LOADING)
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = _now_iso()
        if not (message["content"] or message["embeds"] or message["components"] or files):
            return FakeDiscord._error(400, 50006, "Cannot send an empty message")
        return None

    async def _get_original(self, rec: RecordedRequest) -> web.Response:
        return self._json(self._original_for(rec))

    def _component_message(self, inter: FakeInteraction) -> dict | None:
        """The stored message a component interaction came from, or None if it was deleted since."""
        shown = inter.payload.get("message") or {}
        return self.channel_messages.get(str(shown.get("channel_id")), {}).get(str(shown.get("id"))) or next(
            (m for m in self._webhook_messages() if m["id"] == shown.get("id")), None)

    def _webhook_messages(self) -> list[dict]:
        """Every interaction response and follow-up that still exists."""
        return [*self.original_messages.values(), *(m for ms in self.followup_messages.values() for m in ms)]

    def _edit(self, message: dict, rec: RecordedRequest, body: Any = None) -> web.Response:
        """Apply an edit (``body``, else the request's), or leave the message as it was if Discord would refuse it."""
        before = dict(message)
        problem = self._apply_edit(message, rec.json if body is None else body, rec.files)
        if problem is not None:
            message.clear()
            message.update(before)
            return problem
        return self._json(message)

    async def _edit_original(self, rec: RecordedRequest) -> web.Response:
        return self._edit(self._original_for(rec), rec)

    async def _delete_original(self, rec: RecordedRequest) -> web.Response:
        # After a type 6/7 answer the original is the component's message: deleting it deletes that message.
        self._forget(self._original_for(rec))
        self.original_messages.pop(rec.params["token"], None)
        return web.Response(status=204)

    async def _post_followup(self, rec: RecordedRequest) -> web.Response:
        self._check_app(rec)
        inter = self._interaction_for(rec)
        if not inter.callbacks or not any(r.status and r.status < 300 for r in inter.callbacks):
            return self._error(404, 10015, "Unknown Webhook (the interaction was never answered)")
        data = rec.json if isinstance(rec.json, dict) else {}
        problem = _message_problem(data, creating=True, files=rec.files)
        if problem:
            return self._error(400, 50035, "Invalid Form Body", problem)
        original = self.original_messages.get(inter.token)
        if original is not None and original["flags"] & LOADING:
            # Discord's own behaviour: the first follow-up after a deferral replaces the "thinking" message.
            keep = original["flags"] & EPHEMERAL
            fresh = self._new_webhook_message(inter, data, flags=keep | (data.get("flags", 0) & ~LOADING))
            original.update({**fresh, "id": original["id"]})
            message = original
        else:
            message = self._new_webhook_message(inter, data, flags=data.get("flags", 0) & ~LOADING)
            self.followup_messages.setdefault(inter.token, []).append(message)
        if rec.query.get("wait") in ("1", "true", "True"):
            return self._json(message)
        return web.Response(status=204)

    def _followup_for(self, rec: RecordedRequest) -> dict:
        self._check_app(rec)
        inter = self._interaction_for(rec)
        wanted = rec.params["message_id"]
        for message in [self.original_messages.get(inter.token), *self.followup_messages.get(inter.token, [])]:
            if message is not None and message["id"] == wanted:
                return message
        raise _Reject(self._error(404, 10008, "Unknown Message"))

    async def _get_followup(self, rec: RecordedRequest) -> web.Response:
        return self._json(self._followup_for(rec))

    async def _edit_followup(self, rec: RecordedRequest) -> web.Response:
        return self._edit(self._followup_for(rec), rec)

    async def _delete_followup(self, rec: RecordedRequest) -> web.Response:
        message = self._followup_for(rec)
        for messages in self.followup_messages.values():
            if message in messages:
                messages.remove(message)
        return web.Response(status=204)

    # -- channel messages ---------------------------------------------------------------------------------------

    def _check_channel(self, rec: RecordedRequest) -> str:
        channel_id = rec.params["channel_id"]
        known = any(channel_id in chans.values() for chans in self.guild_channels.values())
        if not known and channel_id not in self.dm_channels.values():
            raise _Reject(self._error(404, 10003, "Unknown Channel"))
        return channel_id

    async def _get_user(self, rec: RecordedRequest) -> web.Response:
        """``GET /users/{id}`` (discord.py's ``fetch_user``), for users of the fake's world."""
        user = next((u for u in self.users if u.id == rec.params["user_id"]), None)
        return self._json(user.payload()) if user else self._error(404, 10013, "Unknown User")

    async def _open_dm(self, rec: RecordedRequest) -> web.Response:
        """``POST /users/@me/channels`` (discord.py's ``create_dm``): the one DM channel with that user."""
        data = rec.json if isinstance(rec.json, dict) else {}
        user = next((u for u in self.users if u.id == str(data.get("recipient_id"))), None)
        if user is None:
            return self._error(400, 50035, "Invalid Form Body",
                               {"recipient_id": _form_error("USER_NOT_FOUND", "Unknown user")})
        return self._json(self._dm_channel_payload(user))

    def _dm_channel_payload(self, user: FakeUser) -> dict:
        return {"id": self.dm_channel(user), "type": 1, "recipients": [user.payload()], "last_message_id": None,
                "flags": 0}

    async def _post_channel_message(self, rec: RecordedRequest) -> web.Response:
        channel_id = self._check_channel(rec)
        data = rec.json if isinstance(rec.json, dict) else {}
        problem = _message_problem(data, creating=True, files=rec.files)
        if problem:
            return self._error(400, 50035, "Invalid Form Body", problem)
        reference = data.get("message_reference") or None
        referenced: dict | None = None
        if reference is not None:
            # A reply (type 0) must point at a message of the same channel that still exists; with
            # fail_if_not_exists false Discord sends it as a plain message instead of refusing it.
            ref_channel = str(reference.get("channel_id") or channel_id)
            if ref_channel == channel_id:
                referenced = self._message_in(channel_id, str(reference.get("message_id")))
            if referenced is None:
                if reference.get("fail_if_not_exists", True):
                    return self._error(400, 50035, "Invalid Form Body", {"message_reference": _form_error(
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")})
                reference = None
        message = self.message_payload(self.bot_user, data.get("content") or "", channel_id)
        message["embeds"] = list(data.get("embeds") or [])
        message["components"] = list(data.get("components") or [])
        message["allowed_mentions"] = data.get("allowed_mentions")
        message["flags"] = int(data.get("flags") or 0) & (SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2)
        if referenced is not None:
            message["message_reference"] = self._reference_to(referenced)
            message["type"] = MESSAGE_REPLY
            # The replied-to author is pinged (and listed in mentions) unless allowed_mentions says not to.
            mentions = data.get("allowed_mentions")
            pings = mentions is None or mentions.get("replied_user", False)
            author = referenced["author"]
            if pings and author["id"] != self.bot_user.id and not referenced.get("webhook_id"):
                message["mentions"].append(author)
        self.channel_messages.setdefault(channel_id, {})[message["id"]] = message
        if self.echo_bot_messages:
            await self._echo(message)
        return self._json(self.rendered(message))

    async def _echo(self, message: dict) -> None:
        """The MESSAGE_CREATE Discord sends the bot for its own message (content included, whatever the intents)."""
        session = self._session_for(message.get("guild_id"))
        wanted = INTENT_GUILD_MESSAGES if "guild_id" in message else INTENT_DIRECT_MESSAGES
        if session is not None and session.ws is not None and not session.ws.closed and session.intents & wanted:
            await self.dispatch("MESSAGE_CREATE", self.rendered(message))

    def _reference_to(self, message: dict) -> dict:
        reference = {"type": 0, "message_id": message["id"], "channel_id": message["channel_id"]}
        if message.get("guild_id"):
            reference["guild_id"] = message["guild_id"]
        return reference

    def _channel_message_for(self, rec: RecordedRequest) -> dict:
        channel_id = self._check_channel(rec)
        message = self._message_in(channel_id, rec.params["message_id"])
        if message is None:
            raise _Reject(self._error(404, 10008, "Unknown Message"))
        return message

    def _message_in(self, channel_id: str, message_id: str) -> dict | None:
        """A message of the channel everyone there can see: posted, or a public interaction response."""
        message = self.channel_messages.get(channel_id, {}).get(message_id)
        if message is None:
            message = next((m for m in self._webhook_messages() if m["id"] == message_id
                            and m["channel_id"] == channel_id and not m["flags"] & EPHEMERAL), None)
        return message

    def _forget(self, message: dict) -> None:
        """Delete ``message`` wherever it is kept: in its channel, as a response or follow-up, as an original."""
        stored = self.channel_messages.get(str(message.get("channel_id")), {})
        if stored.get(message["id"]) is message:
            del stored[message["id"]]
        for token, original in list(self.original_messages.items()):
            if original is message:
                del self.original_messages[token]
        for messages in self.followup_messages.values():
            if any(m is message for m in messages):
                messages[:] = [m for m in messages if m is not message]

    async def _get_channel_message(self, rec: RecordedRequest) -> web.Response:
        return self._json(self.rendered(self._channel_message_for(rec)))

    async def _edit_channel_message(self, rec: RecordedRequest) -> web.Response:
        message = self._channel_message_for(rec)
        if message["author"]["id"] != self.bot_user.id:
            return self._error(403, 50005, "Cannot edit a message authored by another user")
        response = self._edit(message, rec)
        return self._json(self.rendered(message)) if response.status == 200 else response

    async def _delete_channel_message(self, rec: RecordedRequest) -> web.Response:
        self._forget(self._channel_message_for(rec))
        return web.Response(status=204)

    # ----- gateway ---------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: _GatewaySession | None = None
        try:
            await ws.send_json(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.gateway_received.append(frame)
                session = await self._on_frame(ws, frame, session)
                await self._notify()
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
            await self._notify()
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: dict, session: _GatewaySession | None
    ) -> _GatewaySession | None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            self.heartbeats.append(time.monotonic())
            await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            self.heartbeat_acks.append(time.monotonic())
        elif op == 2:
            self.identifies.append(data)
            if data.get("token") != self.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return session
            intents = int(data.get("intents", 0))
            privileged = intents & ((1 << 1) | (1 << 8) | INTENT_MESSAGE_CONTENT)
            if privileged & ~self.privileged_intents:
                await ws.close(code=4014, message=b"Disallowed intent(s).")
                return session
            shard = data.get("shard") or [0, 1]
            valid = (isinstance(shard, list) and len(shard) == 2 and all(isinstance(n, int) for n in shard)
                     and 0 <= shard[0] < shard[1])
            counts = {s.shard[1] for s in self._by_shard.values() if s.ws is not None and not s.ws.closed}
            if not valid or (counts and shard[1] not in counts):
                await ws.close(code=4010, message=b"Invalid shard.")
                return session
            session = _GatewaySession(secrets.token_hex(16), intents, (shard[0], shard[1]))
            session.ws = ws
            self._sessions[session.session_id] = session
            self._session = session
            self._by_shard[shard[0]] = session
            await self._send(session, "READY", self._ready_payload(session))
            for guild_id in self.guilds_of(session.shard):
                await self._send(session, "GUILD_CREATE", self.guild_payload(guild_id))
        elif op == 6:
            self.resumes.append(data)
            old = self._sessions.get(data.get("session_id"))
            if old is None or data.get("token") != self.token:
                await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
                return session
            old.ws = ws
            self._session = old
            self._by_shard[old.shard[0]] = old
            session = old
            for event in old.sent:
                if event["s"] > int(data.get("seq") or 0):
                    await ws.send_json(event)
            await self._send(old, "RESUMED", {})
        elif op == 8:
            if session is not None:
                members = [u.member_payload() for u in self.users]
                guild_id = str(data.get("guild_id") or self.guild_id)
                chunk = {"guild_id": guild_id, "members": members, "chunk_index": 0, "chunk_count": 1}
                if data.get("nonce"):
                    chunk["nonce"] = data["nonce"]
                await self._send(session, "GUILD_MEMBERS_CHUNK", chunk)
        elif op in (3, 4):
            pass
        else:
            log.error("FAKE DISCORD: unknown gateway op %s: %s", op, frame)
        return session

    async def _send(self, session: _GatewaySession, event: str, data: dict) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_json(frame)

    def _ready_payload(self, session: _GatewaySession) -> dict:
        return {
            "v": API_VERSION,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": g, "unavailable": True} for g in self.guilds_of(session.shard)],
            "session_id": session.session_id,
            "shard": list(session.shard),
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.app_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    def guild_payload(self, guild_id: str | None = None) -> dict:
        guild_id = guild_id or self.guild_id
        everyone = {
            "id": guild_id,
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        admin = {
            **everyone,
            "id": self.admin_role_id,
            "name": "admins",
            "permissions": str(ADMINISTRATOR),
            "position": 1,
        }
        channels = [
            {
                "id": cid,
                "type": 0,
                "guild_id": guild_id,
                "name": name,
                "position": i,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
            }
            for i, (name, cid) in enumerate(self.guild_channels[guild_id].items())
        ]
        return {
            "id": guild_id,
            "name": self.guild_names[guild_id],
            "icon": None,
            "owner_id": self.admin.id,
            "roles": [everyone, admin],
            "channels": channels,
            "threads": [],
            "members": [u.member_payload() for u in self.users],
            "member_count": len(self.users),
            "large": False,
            "unavailable": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
        }

    async def dispatch(self, event: str, data: dict) -> None:
        """Send a dispatch event to the session Discord would: the shard of the event's guild."""
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        session = self._session_for(guild_id)
        if session is None or session.ws is None or session.ws.closed:
            raise FakeDiscordError(f"cannot dispatch {event}: the bot is not connected to the gateway"
                                   + (f" for guild {guild_id}" if guild_id else ""))
        self.dispatched.append((event, guild_id, session.shard[0]))
        await self._send(session, event, data)

    def delete_response(self, inter: FakeInteraction) -> None:
        """Someone deletes the bot's response message: later edits of it get 404 Unknown Message, as on Discord."""
        if self.original_messages.pop(inter.token, None) is None:
            raise FakeDiscordError("the interaction has no response message to delete")

    async def delete_message(self, message: dict | str) -> None:
        """Someone (a moderator, the author) deletes ``message``: it is gone from every route, replies to it
        carry ``referenced_message`` None, and the bot gets MESSAGE_DELETE if its intents ask for it."""
        message_id = message if isinstance(message, str) else message["id"]
        stored = self.find_message(message_id)
        if stored is None:
            raise FakeDiscordError(f"no message {message_id} to delete")
        self._forget(stored)
        event = {"id": message_id, "channel_id": stored["channel_id"]}
        if stored.get("guild_id"):
            event["guild_id"] = stored["guild_id"]
        session = self._session_for(stored.get("guild_id"))
        wanted = INTENT_GUILD_MESSAGES if "guild_id" in event else INTENT_DIRECT_MESSAGES
        if session is not None and session.ws is not None and not session.ws.closed and session.intents & wanted:
            await self.dispatch("MESSAGE_DELETE", event)
        await self._notify()

    async def send_op(self, op: int, data: Any = None) -> None:
        """Send a raw gateway opcode (7 = reconnect, 9 = invalid session, 1 = heartbeat request)."""
        session = self._session
        if session is None or session.ws is None:
            raise FakeDiscordError("the bot is not connected to the gateway")
        await session.ws.send_json({"op": op, "d": data, "s": None, "t": None})

    # ----- driving the bot -------------------------------------------------------------------------------------

    def _find_command(self, name: str, kind: int = CHAT_INPUT, guild: str | None = None) -> dict | None:
        for guild_id in (guild or self.guild_id, None):
            for cmd in self.commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd
        return None

    def _interaction_payload(
        self, kind: int, user: FakeUser, data: dict, channel: str, dm: bool = False, guild: str | None = None
    ) -> dict:
        if dm:
            return self._dm_payload(kind, user, data)
        guild_id = guild or self.guild_id
        channel_id = self.guild_channels[guild_id][channel]
        return {
            **self._envelope(kind, data),
            "guild_id": guild_id,
            "guild": {"id": guild_id, "locale": "en-US", "features": []},
            "channel_id": channel_id,
            "channel": {
                "id": channel_id,
                "type": 0,
                "guild_id": guild_id,
                "name": channel,
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "permissions": str(user.permissions),
            },
            "member": user.member_payload(with_permissions=True),
            "guild_locale": "en-US",
            "app_permissions": str(ALL_PERMISSIONS & ~ADMINISTRATOR),
            "authorizing_integration_owners": {"0": guild_id},
            "context": 0,
        }

    def _envelope(self, kind: int, data: dict) -> dict:
        """What every interaction carries, from a server or a direct message alike."""
        return {
            "id": self.ids.next(),
            "application_id": self.app_id,
            "type": kind,
            "token": f"itoken-{secrets.token_urlsafe(24)}",
            "version": 1,
            "data": data,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }

    def _dm_payload(self, kind: int, user: FakeUser, data: dict) -> dict:
        """An interaction from a direct message with the bot: no guild, a ``user`` instead of a ``member``.

        Discord sends these for commands it was told are guild-only too (that flag is a hint to its
        client) and for user-installed apps, so the bot must answer them sensibly.
        """
        dm_channel = self.dm_channel(user)
        return {
            **self._envelope(kind, data),
            "channel_id": dm_channel,
            "channel": self._dm_channel_payload(user),
            "user": user.payload(),
            "app_permissions": str(MEMBER_PERMISSIONS),
            "authorizing_integration_owners": {"1": user.id},
            "context": 1,
        }

    async def command(
        self, data: dict, *, user: FakeUser | None = None, channel: str = "general", dm: bool = False,
        guild: str | None = None,
    ) -> FakeInteraction:
        """Send an application-command interaction with exactly ``data``, unchecked.

        Unlike :meth:`slash`, nothing stands between a test and the bot: options of the wrong type,
        choices outside the list, missing options, commands the bot never registered, as a stale
        client or a crafted request would send them.
        """
        user = user or self.member
        payload = self._interaction_payload(APPLICATION_COMMAND, user, {"type": 1, **data}, channel, dm, guild)
        return await self._send_interaction(payload, user)

    async def _send_interaction(self, payload: dict, user: FakeUser) -> FakeInteraction:
        inter = FakeInteraction(self, payload["id"], payload["token"], user, payload, time.monotonic())
        self.interactions[inter.token] = inter
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    async def slash(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        channel: str = "general",
        dm: bool = False,
        guild: str | None = None,
        files: dict[str, FileUpload] | None = None,
    ) -> FakeInteraction:
        """A user runs ``/command`` (``"group sub"`` for subcommands) with ``options``; returns the interaction.

        The command must have been registered by the bot (as Discord only shows registered commands); option
        types come from that registration, so ``1`` for a NUMBER option is sent as a number. ``dm`` sends it
        from a direct message with the bot (see :meth:`_dm_payload`); ``guild`` from another guild
        (:meth:`add_guild`; a guild command of the first guild is then sent as the global command).

        ``files`` fills ATTACHMENT options: ``{"file": ("rules.md", b"...", "text/markdown")}`` (content type
        None where Discord would not know one). Each file is uploaded to :attr:`cdn` and sent as Discord sends
        it: the option's value is the attachment id, ``data.resolved.attachments`` holds the attachment object
        whose ``url`` serves the bytes from this server.
        """
        user = user or self.member
        parts = command.split()
        registered = self._find_command(parts[0])
        if registered is None:
            raise FakeDiscordError(
                f"/{parts[0]} is not registered with the fake Discord (registered: {sorted(self.synced_command_names)})"
            )
        declared = registered.get("options") or []
        path: list[tuple[str, int]] = []
        for sub in parts[1:]:
            spec = next((o for o in declared if o["name"] == sub and o["type"] in (1, 2)), None)
            if spec is None:
                raise FakeDiscordError(f"/{command}: {sub!r} is not a registered subcommand")
            path.append((sub, spec["type"]))
            declared = spec.get("options") or []
        if any(o["type"] in (1, 2) for o in declared):
            raise FakeDiscordError(f"/{command} needs a subcommand: {[o['name'] for o in declared]}")
        tree = [_option(name, value, declared) for name, value in (options or {}).items()]
        _check_files(files or {}, declared)
        given = {**(options or {}), **(files or {})}
        missing = [o["name"] for o in declared if o.get("required") and o["name"] not in given]
        if missing:
            raise DiscordClientRefused(f"/{command}: required options missing: {missing}")
        channel_id = self.dm_channel(user) if dm else self._channel_id(channel, guild)
        attachments = {name: self.cdn.upload(channel_id, *file) for name, file in (files or {}).items()}
        tree += [{"name": name, "type": OPT_ATTACHMENT, "value": att["id"]} for name, att in attachments.items()]
        for sub, kind in reversed(path):
            tree = [{"name": sub, "type": kind, "options": tree}]
        data: dict[str, Any] = {"id": registered["id"], "name": parts[0], "type": 1, "options": tree}
        if attachments:
            data["resolved"] = {"attachments": {att["id"]: att for att in attachments.values()}}
        if registered.get("guild_id") and registered["guild_id"] == (guild or self.guild_id):
            data["guild_id"] = registered["guild_id"]
        payload = self._interaction_payload(APPLICATION_COMMAND, user, data, channel, dm, guild)
        return await self._send_interaction(payload, user)

    async def submit_modal(
        self,
        opened_by: FakeInteraction,
        values: dict[str, str] | list[str],
        *,
        user: FakeUser | None = None,
        dm: bool = False,
    ) -> FakeInteraction:
        """The user fills in the modal the bot opened for ``opened_by`` and presses Submit.

        ``values`` maps a text input's custom_id or label to its text, or lists texts in the order of the inputs.
        ``dm`` sends the submission as if from a direct message (a crafted request: no guild).
        """
        callback = next(
            (r for r in opened_by.callbacks if r.status < 300 and r.json.get("type") == CALLBACK_MODAL), None
        )
        if callback is None:
            raise FakeDiscordError("the bot did not open a modal for this interaction")
        modal = callback.json["data"]
        inputs = list(_text_inputs(modal["components"]))
        ordered = list(values) if isinstance(values, list) else None

        def value_for(index: int, text_input: dict, label: str | None) -> str:
            value = ""
            if ordered is not None:
                value = ordered[index]
            else:
                assert isinstance(values, dict)
                value = next((values[k] for k in (text_input.get("custom_id"), label) if k in values), "")
            # Discord's client enforces these before the Submit button works.
            if text_input.get("required", True) and not value:
                raise DiscordClientRefused(f"{label or text_input['custom_id']}: a required field is empty")
            low, high = text_input.get("min_length") or 0, text_input.get("max_length") or 4000
            if value and not low <= len(value) <= high:
                raise DiscordClientRefused(f"{label}: {len(value)} characters, the field allows {low}-{high}")
            return value

        components: list[dict] = []
        index = 0
        for row in modal["components"]:
            if row["type"] == 1:
                inner = []
                for comp in row["components"]:
                    if comp["type"] == 4:
                        inner.append(
                            {
                                "type": 4,
                                "custom_id": comp["custom_id"],
                                "value": value_for(index, comp, comp.get("label")),
                            }
                        )
                        index += 1
                components.append({"type": 1, "components": inner})
            elif row["type"] == 18 and row["component"]["type"] == 4:
                comp = row["component"]
                value = value_for(index, comp, row.get("label"))
                index += 1
                components.append(
                    {"type": 18, "component": {"type": 4, "custom_id": comp["custom_id"], "value": value}}
                )
        if not inputs:
            raise FakeDiscordError("the modal has no text inputs")
        data = {"custom_id": modal["custom_id"], "components": components}
        user = user or opened_by.user
        guild = opened_by.payload.get("guild_id") or self.guild_id
        channel = next(n for n, c in self.guild_channels[guild].items() if c == opened_by.payload["channel_id"])
        payload = self._interaction_payload(MODAL_SUBMIT, user, data, channel, dm, guild)
        if opened_by.payload.get("message"):
            # A modal opened from a button: Discord sends that message along, and callbacks 6/7 act on it.
            shown = opened_by.payload["message"]
            payload["message"] = self.rendered(self.find_message(shown["id"]) or shown)
        return await self._send_interaction(payload, user)

    def message_payload(self, author: FakeUser, content: str, channel_id: str, mentions: list[FakeUser] = ()) -> dict:
        if channel_id in self.dm_channels.values():
            # A direct message: no guild, so no guild_id and no member objects, as Discord sends it.
            message = self.message_payload(author, content, self.channels["general"], mentions)
            message["channel_id"] = channel_id
            message.pop("guild_id")
            message.pop("member", None)
            message["mentions"] = [u.payload() for u in mentions]
            return message
        guild_id = next((g for g, chans in self.guild_channels.items() if channel_id in chans.values()), self.guild_id)
        message = {
            "id": self.ids.next(),
            "channel_id": channel_id,
            "guild_id": guild_id,
            "author": author.payload(),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "@everyone" in content,
            "mentions": [
                {**u.payload(), "member": {k: v for k, v in u.member_payload().items() if k != "user"}}
                for u in mentions
            ],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if author is not self.bot_user:
            message["member"] = {k: v for k, v in author.member_payload().items() if k != "user"}
        return message

    async def post_message(
        self, content: str, *, author: FakeUser | None = None, channel: str = "general", mentions: list[FakeUser] = (),
        guild: str | None = None, reply_to: dict | str | None = None, ping_reply: bool = True,
        mention_roles: list[str] = (), webhook_name: str | None = None,
    ) -> dict | None:
        """A user posts ``content`` in ``channel``; returns what the bot received, or None if its intents hide it.

        ``mentions`` are the users it mentions; ``<@id>`` (and ``<@&id>`` for roles) in ``content`` count
        too, as Discord derives mentions from the text (use :meth:`mention`). ``reply_to`` (a message or
        its id) makes it a reply (type 19, ``message_reference`` and ``referenced_message``, None if that
        message is gone); ``ping_reply`` is the client's "@ on" switch, which adds the replied-to author to
        ``mentions``. ``webhook_name`` posts it through a webhook of that name (``webhook_id``, no member).
        """
        author = author or self.member
        channel_id = self.guild_channels[guild or self.guild_id][channel]
        return await self._user_message(author, content, channel_id, list(mentions), reply_to, ping_reply,
                                        list(mention_roles), webhook_name)

    async def post_dm(
        self, content: str, *, author: FakeUser | None = None, reply_to: dict | str | None = None,
        ping_reply: bool = True,
    ) -> dict | None:
        """``author`` writes to the bot in their DM channel (:meth:`dm_channel`); returns what the bot received.

        The MESSAGE_CREATE has no ``guild_id`` and no member; it needs the direct-messages intent, and its
        content arrives even without the message-content intent, as on Discord.
        """
        author = author or self.member
        return await self._user_message(author, content, self.dm_channel(author), [], reply_to, ping_reply, [], None)

    async def _user_message(
        self, author: FakeUser, content: str, channel_id: str, mentions: list[FakeUser],
        reply_to: dict | str | None, ping_reply: bool, mention_roles: list[str], webhook_name: str | None,
    ) -> dict | None:
        mentions += [u for u in self.users if re.search(rf"<@!?{u.id}>", content) and u not in mentions]
        mention_roles += [r for r in re.findall(r"<@&(\d+)>", content) if r not in mention_roles]
        reference: dict | None = None
        if reply_to is not None:
            ref_id = reply_to if isinstance(reply_to, str) else reply_to["id"]
            if isinstance(reply_to, dict) and reply_to.get("channel_id") != channel_id:
                raise FakeDiscordError("a reply must be in the channel of the message it replies to")
            referenced = self._message_in(channel_id, ref_id)
            reference = {"type": 0, "message_id": ref_id, "channel_id": channel_id}
            replied = next((u for u in self.users if referenced and u.id == referenced["author"]["id"]), None)
            if ping_reply and replied is not None and replied is not author and replied not in mentions:
                mentions.append(replied)
        message = self.message_payload(author, content, channel_id, mentions)
        message["mention_roles"] = mention_roles
        if "guild_id" in message and reference is not None:
            reference["guild_id"] = message["guild_id"]
        if reference is not None:
            message["message_reference"] = reference
            message["type"] = MESSAGE_REPLY
        if webhook_name is not None:
            webhook_id = self.ids.next()
            message["author"] = {"id": webhook_id, "username": webhook_name, "discriminator": "0000", "avatar": None,
                                 "bot": True, "global_name": None, "public_flags": 0}
            message["webhook_id"] = webhook_id
            message.pop("member", None)
        self.channel_messages.setdefault(channel_id, {})[message["id"]] = message
        session = self._session_for(message.get("guild_id"))
        if session is None:
            raise FakeDiscordError("the bot is not connected to the gateway")
        if not session.intents & (INTENT_GUILD_MESSAGES if "guild_id" in message else INTENT_DIRECT_MESSAGES):
            return None
        seen = self.rendered(message)
        if not self._content_visible(session, message):
            seen["content"] = ""  # what Discord does without the message-content intent
        if seen.get("referenced_message") and not self._content_visible(session, seen["referenced_message"]):
            seen["referenced_message"] = {**seen["referenced_message"], "content": ""}
        await self.dispatch("MESSAGE_CREATE", seen)
        return seen

    def _content_visible(self, session: _GatewaySession, message: dict) -> bool:
        """Whether Discord shows the bot this message's content: with the message-content intent, or for
        its own messages, direct messages and messages that mention it (a reply with "@ on" does)."""
        return bool(
            session.intents & INTENT_MESSAGE_CONTENT
            or message["author"]["id"] == self.bot_user.id
            or "guild_id" not in message
            or any(u["id"] == self.bot_user.id for u in message.get("mentions") or [])
        )

    # ----- conversation: messages, components, context menus ---------------------------------------------------

    def dm_channel(self, user: FakeUser) -> str:
        """The id of ``user``'s direct-message channel with the bot (one per user, made on first use)."""
        if user.id not in self.dm_channels:
            self.dm_channels[user.id] = self.ids.next()
        return self.dm_channels[user.id]

    @staticmethod
    def mention(user: FakeUser) -> str:
        """How Discord's client writes a mention of ``user`` into message content."""
        return f"<@{user.id}>"

    def find_message(self, message_id: str) -> dict | None:
        """The stored message with this id as it is now (posted by anyone, or an interaction's response or
        follow-up), or None if there is none or it was deleted."""
        for messages in self.channel_messages.values():
            if message_id in messages:
                return messages[message_id]
        return next((m for m in self._webhook_messages() if m["id"] == message_id), None)

    def rendered(self, message: dict) -> dict:
        """``message`` as Discord sends it: a copy whose ``referenced_message`` is the replied-to message as it
        is now, or None if it was deleted (Discord does not nest a second level of references)."""
        out = json.loads(json.dumps(message))
        reference = message.get("message_reference")
        if reference and message.get("type") == MESSAGE_REPLY:
            referenced = self._message_in(reference["channel_id"], reference["message_id"])
            out["referenced_message"] = None if referenced is None else {
                k: v for k, v in json.loads(json.dumps(referenced)).items() if k != "referenced_message"}
        return out

    def _channel_id(self, channel: str, guild: str | None = None) -> str:
        """A channel name of ``guild`` (default the first guild), or already a channel id (a DM channel's)."""
        chans = self.guild_channels[guild or self.guild_id]
        return chans.get(channel, channel)

    def all_bot_messages(self) -> list[dict]:
        """Every message of the bot's that still exists and everyone in its channel sees, oldest first."""
        posted = [m for ms in self.channel_messages.values() for m in ms.values()
                  if m["author"]["id"] == self.bot_user.id]
        public = [m for m in self._webhook_messages() if not m["flags"] & EPHEMERAL]
        unique = {m["id"]: m for m in [*posted, *public]}
        return sorted(unique.values(), key=lambda m: int(m["id"]))

    def bot_messages(self, channel: str = "general", *, guild: str | None = None) -> list[dict]:
        """The bot's messages in ``channel`` (a name, or a channel id such as :meth:`dm_channel`'s), oldest
        first: those it posted and its public interaction responses, as they are now (edits applied)."""
        channel_id = self._channel_id(channel, guild)
        return [m for m in self.all_bot_messages() if m["channel_id"] == channel_id]

    def bot_reply_to(self, message: dict | str) -> dict | None:
        """The last message the bot posted as a reply to ``message`` (a message or its id), or None."""
        message_id = message if isinstance(message, str) else message["id"]
        replies = [m for m in self.all_bot_messages()
                   if (m.get("message_reference") or {}).get("message_id") == message_id]
        return replies[-1] if replies else None

    async def wait_for_message(
        self, predicate: Callable[[dict], bool], *, channel: str | None = None, guild: str | None = None,
        timeout: float = 20.0, what: str = "",
    ) -> dict:
        """The first bot message (in ``channel``, else anywhere) for which ``predicate`` holds, waiting for it.

        Messages are checked as they are now, so ``predicate`` can wait for an edit: for instance
        ``lambda m: m["id"] == sent["id"] and not m["content"].endswith("...")``.
        """

        def find() -> dict | None:
            messages = self.all_bot_messages() if channel is None else self.bot_messages(channel, guild=guild)
            return next((m for m in messages if predicate(m)), None)

        return await self.wait_until(find, timeout, what or "a bot message that matches")

    async def wait_for_reply(
        self, message: dict | str, predicate: Callable[[dict], bool] | None = None, timeout: float = 20.0
    ) -> dict:
        """The bot's reply to ``message`` once it exists (and ``predicate`` holds for it, e.g. the final edit)."""
        message_id = message if isinstance(message, str) else message["id"]

        def find() -> dict | None:
            reply = self.bot_reply_to(message_id)
            return reply if reply is not None and (predicate is None or predicate(reply)) else None

        return await self.wait_until(find, timeout, f"the bot's reply to message {message_id}")

    async def wait_settled(self, message: dict | str, quiet_s: float = 0.5, timeout: float = 20.0) -> dict:
        """``message`` once the bot has stopped editing it: unchanged for ``quiet_s`` seconds.

        For streaming edits whose last text a test cannot predict; where it can, :meth:`wait_for_message`
        with a predicate is exact and faster.
        """
        message_id = message if isinstance(message, str) else message["id"]
        deadline = time.monotonic() + timeout
        last: str | None = None
        while time.monotonic() < deadline:
            current = self.find_message(message_id)
            if current is None:
                raise FakeDiscordError(f"message {message_id} does not exist (deleted?)")
            snapshot = json.dumps(current, sort_keys=True)
            if snapshot == last:
                return current
            last = snapshot
            await asyncio.sleep(quiet_s)
        raise FakeDiscordError(f"message {message_id} was still being edited after {timeout}s")

    def _payload_in_channel(self, kind: int, user: FakeUser, data: dict, channel_id: str) -> dict:
        """An interaction payload from the channel with this id: a guild text channel or a user's DM channel."""
        if channel_id in self.dm_channels.values():
            if self.dm_channels.get(user.id) != channel_id:
                raise DiscordClientRefused(f"{user.username} cannot act in another user's DM channel")
            return self._dm_payload(kind, user, data)
        for guild_id, chans in self.guild_channels.items():
            for name, cid in chans.items():
                if cid == channel_id:
                    return self._interaction_payload(kind, user, data, name, guild=guild_id)
        raise FakeDiscordError(f"unknown channel {channel_id}")

    async def press(
        self, message: dict | str, custom_id: str, *, user: FakeUser | None = None, values: list[str] | None = None,
    ) -> FakeInteraction:
        """``user`` presses the button ``custom_id`` (or picks ``values`` in that select) on ``message``.

        Sends a MESSAGE_COMPONENT interaction whose ``message`` is the message as it is now; if it was
        deleted (someone deleted it while the button was on screen) pass the message dict and it is sent
        as last seen, so the bot's answer to a vanished message can be tested. The component must be on
        the message and enabled, as Discord's client shows nothing else to press.
        """
        user = user or self.member
        message_id = message if isinstance(message, str) else message["id"]
        shown = self.find_message(message_id) or (message if isinstance(message, dict) else None)
        if shown is None:
            raise FakeDiscordError(f"no message {message_id} to press a button on")
        components = list(_walk_components(shown.get("components") or []))
        component = next((c for c in components if c.get("custom_id") == custom_id), None)
        if component is None:
            raise DiscordClientRefused(
                f"message {message_id} has no component {custom_id!r} "
                f"(it has {[c.get('custom_id') for c in components if c.get('custom_id')]})"
            )
        if component.get("disabled"):
            raise DiscordClientRefused(f"component {custom_id!r} is disabled")
        if shown.get("flags", 0) & EPHEMERAL:
            owner = next((i.user for t, i in self.interactions.items() if any(
                m is shown for m in [self.original_messages.get(t), *self.followup_messages.get(t, [])])), user)
            if owner.id != user.id:
                raise DiscordClientRefused(f"only {owner.username} sees that ephemeral message")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECT_TYPES:
            data["values"] = list(values or [])
        payload = self._payload_in_channel(MESSAGE_COMPONENT, user, data, shown["channel_id"])
        payload["message"] = self.rendered(shown)
        return await self._send_interaction(payload, user)

    async def context_menu(
        self, name: str, target_message: dict | str, *, user: FakeUser | None = None,
    ) -> FakeInteraction:
        """``user`` picks Apps > ``name`` on ``target_message`` (a message or its id): a message command.

        The command must be registered as a message command (type 3); the payload carries ``target_id``
        and the message, with its content, in ``resolved.messages`` (interaction payloads always
        include it, whatever the intents).
        """
        user = user or self.member
        message_id = target_message if isinstance(target_message, str) else target_message["id"]
        target = self.find_message(message_id)
        if target is None:
            raise FakeDiscordError(f"no message {message_id} to open a context menu on (deleted?)")
        registered = self._find_command(name, MESSAGE_COMMAND, target.get("guild_id"))
        if registered is None:
            known = sorted(c["name"] for cs in self.commands.values() for c in cs if c.get("type") == MESSAGE_COMMAND)
            raise FakeDiscordError(f"no message command {name!r} is registered (registered: {known})")
        if registered.get("guild_id") and registered["guild_id"] != target.get("guild_id"):
            raise DiscordClientRefused(f"{name!r} is registered for guild {registered['guild_id']} only")
        data: dict[str, Any] = {
            "id": registered["id"],
            "name": name,
            "type": MESSAGE_COMMAND,
            "target_id": message_id,
            "resolved": {"messages": {message_id: self.rendered(target)}},
        }
        if registered.get("guild_id"):
            data["guild_id"] = registered["guild_id"]
        payload = self._payload_in_channel(APPLICATION_COMMAND, user, data, target["channel_id"])
        return await self._send_interaction(payload, user)


def _json_response(data: Any, status: int) -> web.Response:
    # Exactly "application/json", no charset: discord.py compares the header verbatim, as Discord sends it.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


class _Reject(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _option(name: str, value: Any, declared: list[dict]) -> dict:
    """An interaction option for ``value``, or DiscordClientRefused where Discord's client would not send it."""
    spec = next((o for o in declared if o["name"] == name), None)
    if spec is None:
        raise FakeDiscordError(f"option {name!r} is not registered (registered: {[o['name'] for o in declared]})")
    kind = spec["type"]
    if kind == OPT_ATTACHMENT:
        raise FakeDiscordError(f"option {name!r} takes a file: pass it in files=, not options=")
    try:
        if kind == OPT_NUMBER:
            value = value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)
        elif kind == OPT_INTEGER:
            value = int(value)
        elif kind == OPT_BOOLEAN:
            value = bool(value)
        elif kind in (OPT_USER, OPT_CHANNEL, OPT_ROLE) or kind == OPT_STRING:
            value = str(value)
    except (TypeError, ValueError):
        raise DiscordClientRefused(f"{name}: {value!r} is not a valid value for option type {kind}") from None
    if spec.get("choices") and value not in [c["value"] for c in spec["choices"]]:
        raise DiscordClientRefused(f"{name}: {value!r} is not one of the choices")
    if kind == OPT_STRING:
        low, high = spec.get("min_length", 0) or 0, min(spec.get("max_length") or 6000, 6000)
        if not low <= len(value) <= high:
            raise DiscordClientRefused(f"{name}: {len(value)} characters, Discord allows {low}-{high}")
    if kind in (OPT_NUMBER, OPT_INTEGER):
        if spec.get("min_value") is not None and value < spec["min_value"]:
            raise DiscordClientRefused(f"{name}: {value} is below the minimum {spec['min_value']}")
        if spec.get("max_value") is not None and value > spec["max_value"]:
            raise DiscordClientRefused(f"{name}: {value} is above the maximum {spec['max_value']}")
    return {"name": name, "type": kind, "value": value}


def _check_files(files: dict[str, FileUpload], declared: list[dict]) -> None:
    """Refuse files for options that take none, and files Discord's client would not upload."""
    for name, file in files.items():
        spec = next((o for o in declared if o["name"] == name), None)
        if spec is None or spec["type"] != OPT_ATTACHMENT:
            raise FakeDiscordError(f"option {name!r} is not a registered ATTACHMENT option")
        if len(file) != 3:
            raise FakeDiscordError(f"{name}: a file is (filename, bytes, content type or None), not {len(file)} items")
        if len(file[1]) > ATTACHMENT_SIZE_LIMIT:
            raise DiscordClientRefused(f"{name}: {len(file[1])} bytes, Discord uploads at most {ATTACHMENT_SIZE_LIMIT}")


def _walk_components(components: list[dict]) -> Iterator[dict]:
    """Every component, depth first, through action rows and the components-v2 layouts that nest them."""
    for comp in components:
        yield comp
        yield from _walk_components(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                yield from _walk_components([comp[key]])


def _text_inputs(components: list[dict]) -> Iterator[dict]:
    for row in components:
        if row["type"] == 1:
            yield from (c for c in row["components"] if c["type"] == 4)
        elif row["type"] == 18 and row.get("component", {}).get("type") == 4:
            yield row["component"]


def _length_error(limit: int) -> dict:
    return {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {limit} or fewer in length."}]}


def _message_problem(data: dict, creating: bool, files: list[str]) -> dict | None:
    """Discord's validation of a message body, as error details, or None if it would be accepted."""
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        return {"content": {"_errors": [{"code": "STRING_TYPE_CONVERT", "message": "Could not interpret as string."}]}}
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        return {"content": _length_error(MAX_CONTENT)}
    embeds = data.get("embeds") or []
    if len(embeds) > 10:
        return {"embeds": _length_error(10)}
    for i, embed in enumerate(embeds):
        if len(embed.get("description") or "") > 4096:
            return {"embeds": {str(i): {"description": _length_error(4096)}}}
        if len(embed.get("title") or "") > 256:
            return {"embeds": {str(i): {"title": _length_error(256)}}}
    mentions = data.get("allowed_mentions")
    if mentions is not None:
        parse = mentions.get("parse", [])
        if any(p not in ("users", "roles", "everyone") for p in parse):
            return {"allowed_mentions": {"_errors": [{"code": "ENUM", "message": "bad parse value"}]}}
        for key in ("users", "roles"):
            if key in parse and mentions.get(key):
                return {"allowed_mentions": {"_errors": [{"code": "MUTUALLY_EXCLUSIVE", "message": key}]}}
    components = data.get("components")
    if components:
        problem = _components_problem(components, int(data.get("flags") or 0))
        if problem:
            return {"components": problem}
    if creating and not (content or embeds or data.get("components") or data.get("sticker_ids") or files):
        return {"_errors": [{"code": "MESSAGE_EMPTY", "message": "Cannot send an empty message"}]}
    return None


def _form_error(code: str, message: str) -> dict:
    return {"_errors": [{"code": code, "message": message}]}


def _components_problem(components: Any, flags: int) -> dict | None:
    """Discord's checks of a message's ``components``, as the error details under ``components``, or None.

    What a bot can get wrong with buttons: more than 5 rows or 5 buttons in a row, a select sharing its row,
    a ``custom_id`` over 100 characters or used twice in one message, a label over 80 characters, a link
    button with a ``custom_id`` or another button without one. With the components-v2 flag other top-level
    layouts are allowed, so only the action rows among them are checked.
    """
    if not isinstance(components, list):
        return _form_error("LIST_TYPE_CONVERT", "Must be an array.")
    v2 = bool(flags & IS_COMPONENTS_V2)
    if not v2 and len(components) > 5:
        return _form_error("BASE_TYPE_BAD_LENGTH", "Must be between 0 and 5 in length.")
    seen: set[str] = set()
    for i, row in enumerate(components):
        kind = row.get("type") if isinstance(row, dict) else None
        if kind != ACTION_ROW:
            if v2 and kind is not None:
                continue
            return {str(i): _form_error("UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).')}
        inner = row.get("components") or []
        if not 1 <= len(inner) <= 5:
            return {str(i): {"components": _form_error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")}}
        if any(c.get("type") in SELECT_TYPES for c in inner) and len(inner) > 1:
            return {str(i): {"components": _form_error("COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                                                       "The specified component exceeds the maximum width")}}
        for j, comp in enumerate(inner):
            problem = _component_problem(comp, seen)
            if problem:
                return {str(i): {"components": {str(j): problem}}}
    return None


def _component_problem(comp: dict, seen: set[str]) -> dict | None:
    """One button or select in an action row; ``seen`` collects the message's custom_ids so far."""
    kind = comp.get("type")
    custom_id = comp.get("custom_id")
    if kind not in (BUTTON, *SELECT_TYPES):
        allowed = (BUTTON, *SELECT_TYPES)
        return {"type": _form_error("UNION_TYPE_CHOICES", f'Value of field "type" must be one of {allowed}.')}
    if custom_id is not None:
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
            return {"custom_id": _form_error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")}
        if custom_id in seen:
            return {"custom_id": _form_error("COMPONENT_CUSTOM_ID_DUPLICATED",
                                             "Component custom id cannot be duplicated")}
        seen.add(custom_id)
    if kind != BUTTON:
        if custom_id is None:
            return {"custom_id": _form_error("BASE_TYPE_REQUIRED", "This field is required")}
        if kind == 3 and not 1 <= len(comp.get("options") or []) <= 25:
            return {"options": _form_error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")}
        return None
    style = comp.get("style")
    if style not in (1, 2, 3, 4, LINK_BUTTON, PREMIUM_BUTTON):
        return {"style": _form_error("ENUM_TYPE_COERCE", f"Value \"{style}\" is not a valid enum value.")}
    if len(comp.get("label") or "") > 80:
        return {"label": _form_error("BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")}
    if style == LINK_BUTTON:
        if custom_id is not None:
            return {"custom_id": _form_error("BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                                             "A link button cannot have a custom id")}
        if not comp.get("url"):
            return {"url": _form_error("BUTTON_COMPONENT_URL_REQUIRED", "A url is required")}
    elif style == PREMIUM_BUTTON:
        if not comp.get("sku_id"):
            return {"sku_id": _form_error("BASE_TYPE_REQUIRED", "This field is required")}
    else:
        if custom_id is None:
            return {"custom_id": _form_error("BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required")}
        if comp.get("url"):
            return {"url": _form_error("BUTTON_COMPONENT_URL_NOT_ALLOWED", "A non-link button cannot have a url")}
        if not (comp.get("label") or comp.get("emoji")):
            return {"label": _form_error("BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or emoji is required")}
    return None


def _modal_problem(data: dict) -> str | None:
    if not data.get("custom_id") or len(data["custom_id"]) > 100:
        return "modal custom_id must be 1-100 characters"
    if not data.get("title") or len(data["title"]) > 45:
        return "modal title must be 1-45 characters"
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        return "a modal needs 1-5 components"
    inputs = list(_text_inputs(components))
    for t in inputs:
        if not t.get("custom_id") or len(t["custom_id"]) > 100:
            return "text input custom_id must be 1-100 characters"
        if len(t.get("label") or "") > 45:
            return "text input label must be at most 45 characters"
        if t.get("max_length") is not None and not 1 <= t["max_length"] <= 4000:
            return "text input max_length must be 1-4000"
    for row in components:
        if row["type"] == 18 and not 1 <= len(row.get("label") or "") <= 45:
            return "label must be 1-45 characters"
    return None


def _command_problem(cmd: dict) -> str | None:
    name = cmd.get("name") or ""
    if cmd.get("type", CHAT_INPUT) in (USER_COMMAND, MESSAGE_COMMAND):
        # Context-menu names are what the menu shows: mixed case and spaces allowed; no description, no options.
        if not 1 <= len(name) <= 32 or name != name.strip():
            return f"context menu name {name!r} must be 1-32 characters"
        if cmd.get("description"):
            return f"context menu {name!r}: description must be empty"
        if cmd.get("options"):
            return f"context menu {name!r}: options are not allowed"
        return None
    if cmd.get("type", CHAT_INPUT) != CHAT_INPUT:
        return f"command {name!r}: unknown type {cmd.get('type')!r}"
    if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
        return f"command name {name!r} must be 1-32 lowercase characters"
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description") or "") <= 100:
        return f"/{name}: description must be 1-100 characters"
    for opt in cmd.get("options") or []:
        if not 1 <= len(opt.get("description") or "") <= 100:
            return f"/{name} {opt.get('name')}: description must be 1-100 characters"
    if len(cmd.get("options") or []) > 25:
        return f"/{name}: at most 25 options"
    return None

