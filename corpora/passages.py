"""FAQ grounding: the corpus split into passages, a BM25 index over them, and the grounded prime.

A character model asked a question writes FAQ-sounding text about anything; primed with the
FAQ passage that best matches the question, it writes about that passage's topic, and the
reader can check the claim against the quoted source. The index is BM25 (``bm25s``, which
works offline on a plain list of passages) over Snowball-stemmed words (``PyStemmer``) minus
English stop words, built once when a model is loaded; a question costs well under a
millisecond. Only corpora whose :attr:`~corpora.registry.Corpus.grounded` is set use it:
tales and novels are not grounded (no verbatim copying of the books).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

# bm25s imports JAX when it is installed and runs a JAX operation at import, and JAX then takes
# three quarters of the GPU's memory, which the bot's models need. BM25 here is NumPy work of
# well under a millisecond: keep JAX (if present) on the CPU, unless the operator said otherwise.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

from corpora.prompts import one_line

log = logging.getLogger(__name__)

# The passage's head read before the question. Each character is a step of the reply's row, and
# on the shipped faq model a longer head did not make answers measurably more on topic (the
# score's passage and question overlap does that), so it is kept to a sentence or two.
PRIME_PASSAGE_CHARS = 160
HEADING_MAX_WORDS = 12
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
STOP_WORDS = frozenset(STOPWORDS_EN_PLUS)


@dataclass(frozen=True)
class Passage:
    """One FAQ entry: its text as in the corpus (a heading line, if any, then the answer)."""

    text: str
    index: int

    @property
    def flat(self) -> str:
        """The passage on one line, as quoted under an answer."""
        return one_line(self.text)


@dataclass(frozen=True)
class Hit:
    """A retrieved passage and its BM25 score (higher matches better; 0 shares no word)."""

    passage: Passage
    score: float


def split_passages(text: str) -> list[str]:
    """Entries of an FAQ text: blank-line separated blocks, a lone heading joined to its answer.

    The FAQ puts some headings in a block of their own ("Student Accommodations", blank line,
    answer); such a short block without end punctuation belongs to the block after it.
    """
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    out: list[str] = []
    pending = ""
    for block in blocks:
        if pending:
            block = pending + "\n" + block
            pending = ""
        if "\n" not in block and len(block.split()) <= HEADING_MAX_WORDS and not re.search(r"[.!?:]$", block):
            pending = block
            continue
        out.append(block)
    if pending:
        out.append(pending)
    return out


@functools.cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """The stemmed content words of ``text``: what BM25 matches questions to passages by."""
    words = [w for w in _WORD.findall(text.lower().replace("\u2019", "'")) if w not in STOP_WORDS]
    return _stemmer().stemWords(words)


class PassageIndex:
    """BM25 over an FAQ's passages, built once; :meth:`search` answers a question."""

    def __init__(self, passages: Iterable[str]) -> None:
        self.passages = [Passage(p, i) for i, p in enumerate(passages)]
        self._bm25 = bm25s.BM25()
        tokens = [terms(p.text) or ["\u2205"] for p in self.passages]  # an empty doc would break the index
        if self.passages:
            self._bm25.index(tokens, show_progress=False)

    @classmethod
    def from_text(cls, text: str, extra: Iterable[str] = ()) -> PassageIndex:
        """The index of a corpus's cleaned text plus ``extra`` texts (e.g. contributions a version learned)."""
        passages = split_passages(text)
        for more in extra:
            passages += split_passages(more)
        return cls(passages)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, question: str, k: int = 1) -> list[Hit]:
        """The ``k`` best passages for ``question``, best first; only passages sharing a word with it."""
        query = terms(question)
        if not query or not self.passages:
            return []
        scores = self._bm25.get_scores(query)
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:k]
        return [Hit(self.passages[i], float(scores[i])) for i in order if scores[i] > 0]


def grounded_prime(passage: str, prime: str) -> str:
    """The text the model continues: the passage's head as an FAQ entry, a blank line, then the prime.

    The corpus separates entries with a blank line, so the question heading that follows reads
    as the next entry, and the answer the model writes draws on the entry just read.
    """
    return grounded_head(passage) + prime


def grounded_head(passage: str) -> str:
    """The part of :func:`grounded_prime` that comes from the corpus alone (no user's words): the
    same for every question this passage answers, so the engine may read it once for them all."""
    head = passage.strip()
    if len(head) > PRIME_PASSAGE_CHARS:
        cut = head[:PRIME_PASSAGE_CHARS]
        end = max(cut.rfind(". "), cut.rfind(".\n"))
        head = cut[: end + 1] if end > PRIME_PASSAGE_CHARS // 3 else cut.rsplit(" ", 1)[0]
    return head + "\n\n"


def quote(passage: str, limit: int = 280) -> str:
    """A short excerpt of a passage for the reader: whole sentences where they fit, else whole words."""
    flat = one_line(passage)
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if end >= limit // 3:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "\u2026"
