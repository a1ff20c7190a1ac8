"""How a user's words become the text each corpus's model continues (its prime).

A character model only answers well when the prime looks like its training text at the spot
where the wanted reply starts, so each function below copies its corpus's own layout:

- tale: each of Andersen's tales starts with its title in capitals on its own line and a
  blank line (``THE UGLY DUCKLING\\n\\n``). A short topic ("the brave tin soldier", "tell me a
  story about the moon") becomes such a title; a longer line that reads like prose ("Once upon
  a time there was ...") is taken as the tale's first words and continued.
- faq: the FAQ file holds answers only. It has no question marks at all; the only lines that
  play the part of a question are short headings with no end punctuation, each followed on
  the next line by the text that answers it ("When to call a health care provider",
  "Student Accommodations"). A user's question is written as such a heading line.
- novel: the user's words are the start of a passage and are continued as they are.

In a conversation (a reply chain, a Continue button) the text before the person's words comes
first, and their words start a new paragraph of it.
"""

from __future__ import annotations

import re

_SPACES = re.compile(r"\s+")
_ASK = (r"^(please\s+)?((tell|write|give|make|read)\s+((me|us)\s+)?)?(a|an|another)\s+"
        r"(short\s+|little\s+|new\s+)?(fairy\s*)?")
_REQUEST = re.compile(_ASK + r"(tale|story)\s+(about|of|called|named|on)\s+", re.IGNORECASE)
_BARE_REQUEST = re.compile(_ASK + r"(tale|story)\W*$", re.IGNORECASE)
_OPENING = re.compile(r"^(once upon a time|there (was|were|lived) once|there once|long,? long ago|long ago)\b",
                      re.IGNORECASE)
TITLE_MAX_WORDS = 6


def one_line(text: str) -> str:
    """The text with every run of whitespace, newlines included, turned into one space."""
    return _SPACES.sub(" ", text).strip()


def tale_prime(prompt: str) -> str:
    """A topic becomes a tale's title; a line of prose becomes the tale's opening words."""
    text = one_line(prompt)
    topic = _REQUEST.sub("", text, count=1)
    if not topic or _BARE_REQUEST.match(text):
        return ""
    asked_for = topic != text
    core = topic.rstrip(" .!?")
    short = len(core.split()) <= TITLE_MAX_WORDS and not re.search(r"[.!?;:,\"]", core) and not _OPENING.match(core)
    if core and (asked_for or short):
        return core.upper() + "\n\n"
    return topic


def faq_prime(question: str) -> str:
    """The question as a heading line: no question mark (the corpus has none), then a newline."""
    text = one_line(question).rstrip(" ?.!:;,")
    text = re.sub(r"\?+", ".", text)
    if not text:
        return ""
    return text[0].upper() + text[1:] + "\n"


def conversation_prime(context: str, prompt: str) -> str:
    """The conversation so far, then the person's words as the start of a new paragraph.

    Without words (a Continue button) the model picks up exactly where the context stops.
    """
    words = one_line(prompt)
    return f"{context.rstrip()}\n\n{words}" if words else context


def novel_prime(prompt: str) -> str:
    """The start of a passage, continued as written (whitespace runs become single spaces)."""
    return one_line(prompt)
