"""Cleaning of raw corpus files: Project Gutenberg boilerplate out, line endings unified.

The model must never learn the licence text, so everything from the Gutenberg end marker on
is cut, and a start marker (present in the canonical gutenberg.org files, absent from the
trimmed mirrors) cuts the header and the producers' credit line before it. The mirrors'
cleaned text must not change: the shipped checkpoints record its sha256.
"""

from __future__ import annotations

import re

_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^(\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG EBOOK|End of (the )?Project Gutenberg'?s? )",
                  re.MULTILINE | re.IGNORECASE)
# The credit paragraph some Gutenberg files put right after the start marker.
_CREDITS = re.compile(r"\A\s*(Produced by|E-text prepared by|Transcribed from)[^\n]*(\n[^\n]+)*\n",
                      re.IGNORECASE)


def unify_newlines(text: str) -> str:
    """CRLF and lone CR become LF, so Windows and Unix copies of a text clean to the same string."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> str:
    """The book between the Gutenberg start and end markers (each optional), without credits."""
    start = _START.search(text)
    if start:
        text = _CREDITS.sub("", text[start.end() :], count=1)
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def clean_gutenberg(text: str) -> str:
    """Unify line endings, then cut the Project Gutenberg header, credits and licence footer."""
    return strip_gutenberg(unify_newlines(text))


def clean_plain(text: str) -> str:
    """Unify line endings and trim blank lines at both ends; the text is otherwise kept as it is."""
    return unify_newlines(text).strip("\n") + "\n"
