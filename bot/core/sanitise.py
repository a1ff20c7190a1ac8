"""The one sanitiser for text people give the bot: what may be stored, and what may be posted.

Discord hands the bot whatever a client (or a crafted request) sends: lone UTF-16 surrogates
(which SQLite and UTF-8 cannot hold), NUL and other control characters, right-to-left
overrides that make the bot's own message read backwards past the user's words, masked links
(``[click here](https://...)``) that would make the bot's message show a disguised link, and
mentions. Storage (:func:`storable_text`) and everything posted publicly (:func:`public_text`,
used by :mod:`bot.core.render` and :mod:`bot.discord_app.interactions`) go through the functions here, so there is
one definition of "safe". ``AllowedMentions.none()`` on every send is still what actually stops
pings; :func:`neutralize_mentions` only keeps ``@everyone`` from even looking like one.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

# Bidirectional embeddings, overrides and isolates (and their terminators): each opens or
# closes a scope, so an unbalanced one re-orders everything after it. Removed, not balanced:
# removal is safe under any later truncation, balancing is not. Marks (LRM, RLM, ALM) have no
# scope and stay.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters (category Cc) but newline and tab, the bidi controls, and surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_MENTION = re.compile(r"@(everyone|here)|<(@[!&]?|#|/)(?=[\w-])")
_MASKED = re.compile(r"\]\s*\(")


def clean_text(text: str) -> tuple[str, int]:
    """``text`` without lone surrogates, control characters (but newline and tab) or bidi controls.

    Line ends become ``\\n``; a surrogate pair split into two code points (as a UTF-16 decoder
    may leave it) is joined back into its character. Returns the text and how many characters
    were left out, so a caller can say so.
    """
    text = str(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _SURROGATES.search(text):  # join valid pairs; what is left is lone and cannot be stored
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    kept = _UNSAFE.sub("", text)
    return kept, len(text) - len(kept)


def storable_text(text: str) -> str:
    """What the database may hold: :func:`clean_text`'s text (always encodable as UTF-8)."""
    return clean_text(text)[0]


def neutralize_mentions(text: str) -> str:
    """Break ``@everyone``, ``@here``, ``<@id>``, ``<@&id>``, ``<#id>`` and ``</cmd:id>`` with a zero-width space."""

    def breaker(m: re.Match[str]) -> str:
        if m.group(1):
            return f"@{ZWSP}{m.group(1)}"
        return f"<{m.group(2)}{ZWSP}"

    return _MENTION.sub(breaker, text)


def defuse_links(text: str) -> str:
    """Keep a person's words from becoming a link in the bot's message.

    ``https://x`` (any ``://``) gets a zero-width space after the colon (Discord no longer links it) and a
    masked link ``[label](url)`` one between ``]`` and ``(`` (no longer link syntax). The text
    still reads the same.
    """
    text = text.replace("://", f":{ZWSP}//")
    return _MASKED.sub(lambda m: m.group()[:-1] + ZWSP + "(", text)


def public_text(text: str) -> str:
    """Text the bot may post: cleaned (:func:`clean_text`), mention-neutralised, links defused.

    Links are defused in generated text too: a model continuing a prompt could complete a
    masked link the prompt began.
    """
    return defuse_links(neutralize_mentions(clean_text(text)[0]))


def quote(value: object, limit: int = 40) -> str:
    """A person's value, quoted in a refusal: shown as inline code, cleaned, shortened, never a ping or a link."""
    text = neutralize_mentions(clean_text(str(value))[0]).replace("`", "\u02cb").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return f"`{defuse_links(text)}`" if text.strip() else "(nothing)"
