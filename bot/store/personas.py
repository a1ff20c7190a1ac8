"""The personas table: which server made which persona, in what style, from which files.

A companion of :class:`bot.store.base.Store` like :mod:`bot.store.jobs`, using only its query
primitives, so it works on every backend. The persona's text itself is stored as contributions
under its key (:func:`corpora.voices.persona_key`), written in the same transaction as its row,
so a persona never exists without its text nor its text without the persona.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bot.core.sanitise import storable_text
from bot.store.base import Store, utc_now
from corpora.voices import Style, persona_key


class PersonaExists(Exception):
    """This server already has a persona by that name."""


@dataclass(frozen=True)
class PersonaRow:
    guild_id: int
    name: str
    style: Style
    created_by: int
    created: str
    chars: int
    files: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return persona_key(self.guild_id, self.name)


@dataclass(frozen=True)
class Upload:
    """One uploaded file's text, checked (bot.personas.uploads)."""

    filename: str
    text: str


_COLUMNS = "guild_id, name, style, created_by, created, chars, files"


def _row(r: tuple) -> PersonaRow:
    return PersonaRow(int(r[0]), str(r[1]), r[2], int(r[3]), str(r[4]), int(r[5]), json.loads(r[6]))


class PersonaStore:
    """Queries on the ``personas`` table (and its texts in ``contributions``) of an open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, guild_id: int, name: str, style: Style, created_by: int, channel_id: int,
                     uploads: list[Upload], source: str) -> PersonaRow:
        """Record the persona and its texts in one transaction; PersonaExists if the name is taken here."""
        if await self.get(guild_id, name) is not None:
            raise PersonaExists(name)
        texts = [Upload(u.filename, storable_text(u.text)) for u in uploads]
        row = PersonaRow(guild_id, name, style, created_by, utc_now(), sum(len(u.text) for u in texts),
                         [u.filename for u in texts])
        statements = [(
            f"INSERT INTO personas ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (guild_id, name, style, created_by, row.created, row.chars, json.dumps(row.files)),
        )]
        statements += [(
            "INSERT INTO contributions (guild_id, channel_id, user_id, corpus, text, created, source, filename) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (guild_id, channel_id, created_by, row.key, u.text, row.created, source, u.filename),
        ) for u in texts]
        try:
            await self.store.write(statements)
        except Exception:
            if await self.get(guild_id, name) is not None:  # another admin took the name a moment earlier
                raise PersonaExists(name) from None
            raise
        return row

    async def get(self, guild_id: int, name: str) -> PersonaRow | None:
        row = await self.store.fetchone(f"SELECT {_COLUMNS} FROM personas WHERE guild_id = ? AND name = ?",
                                        (guild_id, name))
        return None if row is None else _row(row)

    async def of_guild(self, guild_id: int) -> list[PersonaRow]:
        rows = await self.store.fetchall(f"SELECT {_COLUMNS} FROM personas WHERE guild_id = ? ORDER BY name",
                                         (guild_id,))
        return [_row(r) for r in rows]

    async def every(self) -> list[PersonaRow]:
        """Every server's personas: what a bot process registers at start."""
        rows = await self.store.fetchall(f"SELECT {_COLUMNS} FROM personas ORDER BY guild_id, name")
        return [_row(r) for r in rows]

    async def text_chars(self, key: str) -> int:
        """Characters of the persona's text still stored (/forget may have deleted some)."""
        row = await self.store.fetchone("SELECT COALESCE(SUM(LENGTH(text)), 0) FROM contributions WHERE corpus = ?",
                                        (key,))
        return int(row[0]) if row else 0

    async def delete(self, guild_id: int, name: str) -> bool:
        """Delete the persona, its texts and the records of its versions and ended jobs; True if it existed.

        Its ended jobs go too, so a persona made later under the same name does not show their
        errors as its own; a running one (its process records the end) and claimed queue entries
        stay. The version files on disk are the caller's to delete (bot.personas.service), after this."""
        key = persona_key(guild_id, name)
        results = await self.store.write([
            ("DELETE FROM version_provenance WHERE corpus = ?", (key,)),
            ("DELETE FROM checkpoint_versions WHERE corpus = ?", (key,)),
            ("DELETE FROM jobs WHERE corpus = ? AND state <> 'running'", (key,)),
            ("DELETE FROM job_queue WHERE corpus = ? AND claimed_by IS NULL", (key,)),
            ("UPDATE channel_settings SET persona = NULL WHERE guild_id = ? AND persona = ?", (guild_id, key)),
            ("DELETE FROM posted_replies WHERE corpus = ?", (key,)),
            ("DELETE FROM forgotten_shingles WHERE corpus = ?", (key,)),
            ("DELETE FROM contributions WHERE corpus = ?", (key,)),
            ("DELETE FROM personas WHERE guild_id = ? AND name = ?", (guild_id, name)),
        ])
        await self.store._scrub()
        return results[-1].rowcount > 0
