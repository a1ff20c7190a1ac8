"""Who can speak: the registered corpora, and the personas servers make from their own text.

A persona is a :class:`~corpora.registry.Corpus` built from one of three styles, each borrowing
a built-in corpus's framing, stop rule, layout and grounding (``story`` from tale, ``faq`` from
faq, ``prose`` from novel), so a persona answers the way the built-in of its style does. Its
text is what its server uploaded, not a registered file, so it has no downloads.

Every persona has a *key*, ``g<server id>-<name>``: the one string the rest of charbot (engines,
jobs, versions, contributions) files it under. Two servers may both name a persona ``rules``;
their keys differ, so nothing of one can reach the other. :func:`voice` looks a key up: the
built-in corpora first, then the personas this process has registered (:func:`add_persona`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal, get_args

from corpora.registry import CORPORA, Corpus

Style = Literal["story", "faq", "prose"]
STYLES: tuple[Style, ...] = get_args(Style)
TEMPLATES: dict[Style, str] = {"story": "tale", "faq": "faq", "prose": "novel"}
STYLE_HELP: dict[Style, str] = {
    "story": "tells stories, framed and ended like the fairy tales",
    "faq": "answers questions, grounded in your text and quoting it",
    "prose": "writes prose, like the novel",
}
NAME_RULE = "2 to 32 characters: lower-case letters, digits, - and _, starting with a letter"
_NAME = re.compile(r"[a-z][a-z0-9_-]{1,31}")
_KEY = re.compile(r"g(\d{1,20})-([a-z][a-z0-9_-]{1,31})")
RESERVED = frozenset({*CORPORA, "base", "help", "list", "info", "create", "delete"})

_personas: dict[str, Corpus] = {}


class BadName(ValueError):
    """A persona name that cannot be used; the message says why and what would do."""


def check_name(name: object) -> str:
    """``name`` normalised (trimmed, lower-cased) if it can name a persona, else BadName."""
    if not isinstance(name, str):
        raise BadName(f"A persona name must be text: {NAME_RULE}.")
    clean = name.strip().lower()
    if not _NAME.fullmatch(clean):
        raise BadName(f"A persona name must be {NAME_RULE}.")
    if clean in RESERVED:
        raise BadName(f"{clean!r} is taken by charbot itself; choose another name.")
    return clean


def persona_key(guild_id: int, name: str) -> str:
    """The key a server's persona is filed under everywhere: ``g<server id>-<name>``."""
    if isinstance(guild_id, bool) or not isinstance(guild_id, int) or guild_id <= 0:
        raise ValueError(f"a persona belongs to a server; got server id {guild_id!r}")
    return f"g{guild_id}-{check_name(name)}"


def parse_key(key: str) -> tuple[int, str] | None:
    """(server id, name) of a persona key, or None for anything else (a built-in corpus)."""
    m = _KEY.fullmatch(key)
    return (int(m.group(1)), m.group(2)) if m else None


def owner(key: str) -> int | None:
    """The server that owns the persona ``key``; None for a built-in corpus, which everyone shares."""
    parsed = parse_key(key)
    return parsed[0] if parsed else None


def display_name(key: str) -> str:
    """What people call a voice: a persona's name without its server id, a corpus's name as is."""
    parsed = parse_key(key)
    return parsed[1] if parsed else key


def persona_corpus(guild_id: int, name: str, style: Style, source: str = "") -> Corpus:
    """The :class:`Corpus` a persona speaks as: its style's built-in, renamed and without a file."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
    template = CORPORA[TEMPLATES[style]]
    clean = check_name(name)
    label = f"From {clean}" if template.grounded else template.style.source_label
    return replace(
        template,
        name=persona_key(guild_id, clean),
        title=clean,
        filename="",
        source=source or "uploaded by a server's admins",
        downloads=(),
        description=f"{clean}: this server's own persona ({style})",
        style=replace(template.style, source_label=label),
        example_prompt=template.example_prompt if style != "faq" else "How do I join?",
        target_val_bpc=None,
        notes=(f"A {style} persona: {STYLE_HELP[style]}.",),
    )


def add_persona(corpus: Corpus) -> None:
    """Let ``corpus`` (from :func:`persona_corpus`) speak in this process."""
    if parse_key(corpus.name) is None:
        raise ValueError(f"{corpus.name!r} is not a persona key")
    _personas[corpus.name] = corpus


def drop_persona(key: str) -> None:
    _personas.pop(key, None)


def is_voice(key: object) -> bool:
    return isinstance(key, str) and (key in CORPORA or key in _personas)


def voice(key: str) -> Corpus:
    """The corpus or registered persona filed under ``key``; KeyError naming the built-ins if none."""
    if key in CORPORA:
        return CORPORA[key]
    try:
        return _personas[key]
    except KeyError:
        raise KeyError(f"unknown corpus or persona {key!r} (corpora: {', '.join(CORPORA)})") from None


def personas_of(guild_id: int | None) -> dict[str, Corpus]:
    """The registered personas of one server by name (none for a DM: personas belong to servers)."""
    if guild_id is None:
        return {}
    return {display_name(k): c for k, c in sorted(_personas.items()) if owner(k) == guild_id}
