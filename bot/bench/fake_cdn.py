"""Files a user uploads through a slash command's attachment option, and the fake CDN that serves them back.

On Discord, a file given to an ATTACHMENT option (type 11) never travels in the interaction: the client
uploads it first, the interaction carries only its id (``data.options``) and an attachment object in
``data.resolved.attachments``, and the bot downloads the bytes from the CDN URL in that object
(discord.py: ``Attachment.read()`` -> ``HTTPClient.get_from_cdn(url)``, a plain GET without the bot's
token). So the fake needs both halves: :meth:`FakeCDN.upload` makes the attachment object, and the routes
:meth:`FakeCDN.add_routes` installs on the fake's own server serve the bytes, so a bot pointed at the fake
downloads from 127.0.0.1 like everything else and never from the real CDN.

Fidelity where a bot could get it wrong: URLs are shaped like Discord's signed ones
(``/ephemeral-attachments/<channel>/<id>/<filename>?ex=..&is=..&hm=..&``) and are refused (404) without
their signature, so a bot that rebuilds or trims a URL fails here as it would there; ``size`` is the exact
byte count; the CDN answers with the bytes untouched (binary, empty files) and the stored content type.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

# What Discord's client lets a user upload to a bot without Nitro; interactions announce it as
# ``attachment_size_limit``, and the client refuses bigger files before anything is sent.
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
# How long Discord's signed attachment URLs stay valid (their ``ex`` parameter).
URL_LIFETIME_S = 24 * 3600

# A file a test uploads: (filename, bytes, content type or None where Discord would not know one).
FileUpload = tuple[str, bytes, str | None]


@dataclass(frozen=True)
class StoredAttachment:
    """One uploaded file, as the CDN keeps it."""

    id: str
    channel_id: str
    filename: str
    data: bytes
    content_type: str | None
    signature: str  # the URL's ``hm``: without it the CDN answers 404, as Discord's does
    issued: int  # the URL's ``is`` (Unix seconds)


@dataclass(frozen=True)
class CdnDownload:
    """A GET (or HEAD) the CDN answered: what tests check to see that the bot fetched a file."""

    path: str
    attachment_id: str | None
    status: int


class FakeCDN:
    """Uploaded attachments and the routes that serve them, on the fake Discord's HTTP server.

    ``base_url`` and ``new_id`` are the fake's own (read at each upload: its port is only known once it
    runs); ``notify`` wakes the fake's waiters after each download.
    """

    def __init__(
        self, base_url: Callable[[], str], new_id: Callable[[], str], notify: Callable[[], Awaitable[None]]
    ) -> None:
        self._base_url = base_url
        self._new_id = new_id
        self._notify = notify
        self.attachments: dict[str, StoredAttachment] = {}
        self.downloads: list[CdnDownload] = []

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve ``url`` (``/cdn/...``) and ``proxy_url`` (``/media/...``); add before any catch-all route."""
        for host in ("cdn", "media"):
            router.add_get(f"/{host}/ephemeral-attachments/{{channel_id}}/{{attachment_id}}/{{filename}}", self._serve)

    def upload(self, channel_id: str, filename: str, data: bytes, content_type: str | None = None) -> dict:
        """Store a file a user attached in ``channel_id``; returns the attachment object Discord would send.

        Discord's upload turns spaces in the name into underscores; the object's ``filename`` and URL say so.
        """
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"{filename!r}: upload bytes, not {type(data).__name__}")
        if not filename or "/" in filename:
            raise ValueError(f"{filename!r} is not a file name Discord's client would upload")
        stored = StoredAttachment(
            id=self._new_id(), channel_id=channel_id, filename=filename.replace(" ", "_"), data=bytes(data),
            content_type=content_type, signature=secrets.token_hex(32), issued=int(time.time()),
        )
        self.attachments[stored.id] = stored
        return self.payload(stored)

    def payload(self, att: StoredAttachment) -> dict:
        """The attachment object of ``data.resolved.attachments`` (Discord omits an unknown content type)."""
        path = f"ephemeral-attachments/{att.channel_id}/{att.id}/{quote(att.filename)}"
        query = f"?ex={att.issued + URL_LIFETIME_S:x}&is={att.issued:x}&hm={att.signature}&"
        out: dict = {
            "id": att.id,
            "filename": att.filename,
            "size": len(att.data),
            "url": f"{self._base_url()}/cdn/{path}{query}",
            "proxy_url": f"{self._base_url()}/media/{path}{query}",
            "ephemeral": True,
        }
        if att.content_type:
            out["content_type"] = att.content_type
        return out

    def _find(self, request: web.Request) -> StoredAttachment | None:
        """The attachment a URL names, if every part of it (channel, id, name, signature) is right."""
        att = self.attachments.get(request.match_info["attachment_id"])
        if att is None or att.channel_id != request.match_info["channel_id"]:
            return None
        if att.filename != request.match_info["filename"] or request.query.get("hm") != att.signature:
            return None
        return att

    async def _serve(self, request: web.Request) -> web.Response:
        att = self._find(request)
        if att is None:
            # Discord's CDN answers a wrong, unsigned or expired attachment URL with this plain-text 404.
            response = web.Response(status=404, text="This content is no longer available.")
        else:
            response = web.Response(
                status=200, body=att.data, headers={"Content-Type": att.content_type or "application/octet-stream"}
            )
        self.downloads.append(CdnDownload(request.path, att.id if att else None, response.status))
        await self._notify()
        return response
