"""Cleaning of raw corpus files: Project Gutenberg boilerplate out, line endings unified.

The model must never learn the licence text, so everything from the Gutenberg end marker on
is cut, and a start marker (when a copy still has the header) cuts everything before it.
"""

from __future__ import annotations

import re

_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^(\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG EBOOK|End of (the )?Project Gutenberg'?s? )",
                  re.MULTILINE | re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Text between the Gutenberg start and end markers (each optional)."""
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def unify_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean_gutenberg(text: str) -> str:
    return strip_gutenberg(unify_newlines(text))


def clean_plain(text: str) -> str:
    return unify_newlines(text).strip("\n") + "\n"
