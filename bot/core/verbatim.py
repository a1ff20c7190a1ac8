"""The verbatim-copy guard: no reply posts a long span copied from a member's contribution.

A fine-tuned model can recite what it was trained on, including texts deleted since with
/forget. Every text a corpus learns from is cut into overlapping windows of :data:`SPAN`
characters (lower-cased, runs of white space as one space), each kept only as a 64-bit keyed
BLAKE2b hash: the guard, and the database's record of forgotten texts, can tell that a reply
repeats a window, but cannot give the text back. A candidate holding any such window copies a
span of at least :data:`SPAN` characters; the reply service then posts another candidate, or
trims the copy off (:mod:`bot.core.replies`), and counts it.

:data:`SPAN` is measured: two unrelated halves of the tale and the novel books (about a million
characters each) share a 40-character span in 0.5% and 1.2% of 400-character windows, and a
50-character one in none of 800, so 50 characters flags copying, not common phrases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol

SPAN = 50
_KEY = b"charbot-verbatim-shingles-v1"
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*(?=\s|$)")


class TextSource(Protocol):
    """What the guard reads from :class:`bot.store.Store` (named here so neither imports the other)."""

    async def texts_since(self, after_id: int) -> list[tuple[int, str, str]]: ...

    async def forgotten_shingles(self) -> list[tuple[str, int]]: ...

    async def count_forgotten_shingles(self) -> int: ...


def _normal(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased with white space runs as one space, and where each character came from."""
    out: list[str] = []
    where: list[int] = []
    for m in re.finditer(r"\s+|\S", text):
        out.append(" " if m.group().isspace() else m.group().lower())
        where.append(m.start())
    return "".join(out), where


def _hash(window: str) -> int:
    return int.from_bytes(hashlib.blake2b(window.encode("utf-8"), digest_size=8, key=_KEY).digest(), "big",
                          signed=True)


def shingles(text: str, span: int = SPAN) -> set[int]:
    """The one-way hashes of every ``span``-character window of ``text`` (normalized)."""
    norm, _ = _normal(text)
    return {_hash(norm[i : i + span]) for i in range(len(norm) - span + 1)}


@dataclass
class VerbatimGuard:
    """The windows of every text each corpus learns from (hashed), and how often it stepped in."""

    span: int = SPAN
    _seen: dict[str, set[int]] = field(default_factory=dict)
    replaced: int = 0  # replies that posted another candidate instead of a copying one
    trimmed: int = 0  # replies cut short before the copied span (every candidate copied)

    _last_id: int = 0
    _forgotten: int = -1

    async def sync(self, store: TextSource) -> None:
        """Take in the contributions stored since the last call, and the forgotten texts' hashes
        when their number changed (another process may have taken either)."""
        for cid, corpus, text in await store.texts_since(self._last_id):
            self.add(corpus, text)
            self._last_id = max(self._last_id, cid)
        if await store.count_forgotten_shingles() != self._forgotten:
            forgotten = await store.forgotten_shingles()
            for corpus, h in forgotten:
                self.add_hashes(corpus, [h])
            self._forgotten = len(forgotten)

    def add(self, corpus: str, text: str) -> None:
        self.add_hashes(corpus, shingles(text, self.span))

    def add_hashes(self, corpus: str, hashes: set[int] | list[int]) -> None:
        self._seen.setdefault(corpus, set()).update(int(h) for h in hashes)

    def copied(self, corpus: str, text: str) -> tuple[int, int] | None:
        """The first copied span of ``text`` as (start, end) in ``text``, or None."""
        seen = self._seen.get(corpus)
        if not seen:
            return None
        norm, where = _normal(text)
        start = end = None
        for i in range(len(norm) - self.span + 1):
            if _hash(norm[i : i + self.span]) in seen:
                if start is None:
                    start = i
                end = i + self.span
            elif start is not None and i >= end:
                break
        if start is None or end is None:
            return None
        return where[start], where[end - 1] + 1

    @staticmethod
    def trim(text: str, start: int) -> str:
        """``text`` up to the last sentence end before ``start`` (else the last whole word)."""
        head = text[:start]
        ends = list(_SENTENCE_END.finditer(head))
        if ends:
            return head[: ends[-1].end()]
        return head[: head.rfind(" ")].rstrip() if " " in head.strip() else ""
