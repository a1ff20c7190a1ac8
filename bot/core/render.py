"""How a reply looks when posted: the user's words set apart, the generated text, the length cap.

This is the one place that turns (prompt, generated text) into a message, used by the bot
while streaming and at the end, and by ``charbot reply``/``charbot chat``, so the terminal
shows exactly the characters Discord receives. Both the prompt and the generated text are
markdown-escaped (a stray ``**`` in either must not restyle the rest) and mention-neutralised
(the bot also sends with ``AllowedMentions.none()``, which is the actual guarantee; this only
keeps ``@everyone`` from even looking like a ping). Messages never exceed Discord's 2000.

Layout: prose corpora are hard-wrapped at about 70 columns, so the model writes single
newlines inside paragraphs; they are joined with spaces, and a continuation of the user's
sentence follows the bold prompt on the same line, while a new paragraph (a blank line)
starts on its own. A grounded answer ends with its source passage, quoted and trimmed
("From the FAQ: ..."), escaped and defused like everything else, so the reader can check it.
"""

from __future__ import annotations

import re

from bot.core.sanitise import clean_text, defuse_links, public_text
from bot.discord_limits import MESSAGE_CHARS
from corpora.passages import quote
from corpora.voices import voice
from model.sample import Finish, ends_sentence

ZWSP = "\u200b"
WORKING = " \u2026"  # shown after the text while it is still being written
TRUNCATED = "\u2026"  # shown when the reply was cut at its length
CUT_SHORT = "\n*(cut short: the bot is restarting)*"
QUOTE_CHARS = 280  # the source passage shown under a grounded answer, at most
QUOTE_ROOM = 2 * QUOTE_CHARS + 40  # what a quote may take once escaped, kept free when sizing the answer
_WRAPPED = re.compile(r"(?<![\n])[ \t]*\n[ \t]*(?![\n])")

_INLINE_MARKUP = re.compile(r"([\\*_~`|])")
_BLOCK_MARKUP = r"([ ]*)(#{1,3}|-#|-|>{1,3}|\d+\.)(?= )"  # headings, subtext, lists, quotes
_LINE_START_MARKUP = re.compile(rf"(?m)^{_BLOCK_MARKUP}")
_AFTER_NEWLINE_MARKUP = re.compile(rf"(?<=\n){_BLOCK_MARKUP}")


def escape_markdown(text: str, at_line_start: bool = True) -> str:
    """Backslash-escape Discord markdown so text shows as typed.

    Block markup (``# ``, ``- ``, ``> ``, ``1. ``) only counts at the start of a line, so it is
    escaped there only; ``at_line_start`` says whether ``text`` itself begins a line.
    """
    text = _INLINE_MARKUP.sub(r"\\\1", text)
    block = _LINE_START_MARKUP if at_line_start else _AFTER_NEWLINE_MARKUP

    def escape_block(m: re.Match[str]) -> str:
        indent, mark = m.group(1), m.group(2)
        if mark[0].isdigit():  # a backslash only escapes punctuation, so escape the dot: "1\. "
            return f"{indent}{mark[:-1]}\\."
        return f"{indent}\\{mark}"

    return block.sub(escape_block, text)


def safe_text(text: str, at_line_start: bool = True) -> str:
    return escape_markdown(public_text(text), at_line_start)  # bot.core.sanitise: controls, bidi, mentions, links


def _fitting_prefix(text: str, room: int, at_line_start: bool = True) -> str:
    """The longest prefix of ``text`` whose :func:`safe_text` fits in ``room`` characters, escaped.

    Escaping lengthens text unevenly (a ``*`` becomes two characters, a mention three), so
    what fits is found by measuring the escaped form, by bisection over the prefix length:
    the prompt shortened to leave the reply room, and the reply cut to the message limit.
    """
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(safe_text(text[:mid], at_line_start)) <= room:
            lo = mid
        else:
            hi = mid - 1
    return safe_text(text[:lo], at_line_start)


def _head(corpus: str, prompt: str, limit: int, continues: bool = True) -> str:
    """The user's words, set apart as the corpus's style says; long prompts are shortened so the reply keeps room."""
    style = voice(corpus).style
    prompt = defuse_links(clean_text(prompt)[0])  # bot.core.sanitise: never a link in the bot's message
    prompt = prompt.strip() if style.layout == "question" else prompt.rstrip()
    if not prompt.strip():
        return ""
    shown, budget = safe_text(prompt), limit // 2
    if len(shown) > budget:
        shown = _fitting_prefix(prompt, budget - len(TRUNCATED)) + TRUNCATED
    if style.layout == "question":
        lines = shown.split("\n")
        return "\n".join(f"> **{line}**" if line.strip() else ">" for line in lines) + "\n"
    return f"**{shown}**" if continues else f"**{shown}**\n"


def prime_continues(prime: str) -> bool:
    """Whether the model continues the user's own words (so its text is glued to them).

    A prime that is empty or ends with a newline is a fresh start, a title or a heading: the
    generated text then begins on a new line.
    """
    return bool(prime) and not prime.endswith("\n")


def unwrap(text: str) -> str:
    """Join hard-wrapped lines: a lone newline becomes a space; blank lines (paragraphs) stay."""
    return _WRAPPED.sub(" ", text)


def source_block(corpus: str, passage: str) -> str:
    """The quoted source under a grounded answer: labelled, trimmed, markdown-safe, never a ping or a link."""
    label = voice(corpus).style.source_label
    text = safe_text(defuse_links(quote(passage, QUOTE_CHARS)), at_line_start=False)
    return f"\n\n> *{label}:* \u201c{text}\u201d"


def head_length(corpus: str, prompt: str, limit: int = MESSAGE_CHARS, continues: bool = True) -> int:
    """Characters the prompt part of a reply takes, to size the generation."""
    return len(_head(corpus, prompt, limit, continues))


def render_reply(
    corpus: str,
    prompt: str,
    continuation: str,
    finish: Finish | None = None,
    limit: int = MESSAGE_CHARS,
    continues: bool = True,
    source: str | None = None,
) -> str:
    """The message for ``prompt`` and the text generated so far.

    ``finish`` is None while generating (a trailing ellipsis shows more is coming), else the
    engine's reason: ``STOP`` or ``SENTENCE`` (ended naturally), ``LENGTH`` (hit its length:
    an ellipsis unless the text ends a sentence), or ``CANCELLED`` (cut by a shutdown: said
    so). ``continues`` says whether the model continued the user's words (see
    :func:`prime_continues`). ``source`` is the passage a grounded answer drew on, quoted
    under the finished answer. The result is never longer than ``limit``.
    """
    head = _head(corpus, prompt, limit, continues)
    if voice(corpus).style.layout == "prose":
        continuation = unwrap(continuation)
    if not head or head.endswith("\n"):
        continuation = continuation.lstrip("\n")
    if head and not head.endswith("\n") and continuation.startswith("\n"):
        continuation = "\n\n" + continuation.lstrip("\n")  # a new paragraph after the user's words
    starts_line = not head or head.endswith("\n")
    if source and finish is not None and finish != Finish.CANCELLED:
        extra = source_block(corpus, source)
        if len(head) + len(extra) <= limit // 2:
            limit -= len(extra)
        else:
            extra = ""
    else:
        extra = ""
    if finish is None:
        tail = WORKING
    elif finish == Finish.CANCELLED:
        tail = CUT_SHORT
    elif finish == Finish.LENGTH and continuation.strip() and not ends_sentence(continuation):
        tail = TRUNCATED
    else:
        tail = ""
    body = safe_text(continuation.rstrip() if finish is not None else continuation, starts_line)
    if not body.strip() and finish is not None and finish != Finish.CANCELLED:
        body, tail = "*(no words came; try again or raise the temperature)*", ""
    if len(head) + len(body) + len(tail) <= limit:
        return head + body + tail + extra
    # still being written (even when the text so far already overflows), cut short, or cut at the limit
    tail = WORKING if finish is None else CUT_SHORT if finish == Finish.CANCELLED else TRUNCATED
    return head + _fitting_prefix(continuation, limit - len(head) - len(tail), starts_line) + tail + extra
