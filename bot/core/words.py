"""Which words are real: the corpus's own words plus a maintained English word list.

A character model spells by feel, so now and then it writes a word nobody uses ("infeded",
"cledge"). A word counts as *known* when it occurs in the corpus the model learned from (so
Andersen's "Klaus" and the FAQ's "NetID" are fine) or in ``wordfreq``'s English list with a
Zipf frequency of at least :data:`ENGLISH_MIN_ZIPF` (about 1 use in 10 million words: keeps
"gossamer", leaves out common misspellings such as "seperation"). Everything else is
*invented*. The list comes from the ``wordfreq`` package, never written by hand. Possessives
and contractions are known when their parts are ("king's", "mermaid's").
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass

import wordfreq

from corpora.registry import CorpusMissing, load_corpus

log = logging.getLogger(__name__)

ENGLISH_MIN_ZIPF = 2.0
WORD = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*")


def words(text: str) -> list[str]:
    """The words of ``text`` as a reader sees them (letters, inner apostrophes; hyphens split)."""
    return WORD.findall(text)


@functools.cache
def english_words() -> frozenset[str]:
    """wordfreq's English words at or above :data:`ENGLISH_MIN_ZIPF`, lower-cased."""
    freqs = wordfreq.get_frequency_dict("en", wordlist="best")
    floor = 10 ** (ENGLISH_MIN_ZIPF - 9)
    return frozenset(w for w, f in freqs.items() if f >= floor and not math.isnan(f))


@dataclass(frozen=True)
class Lexicon:
    """The words one corpus's replies may use: its own plus English."""

    corpus_words: frozenset[str]
    has_corpus: bool = True

    @classmethod
    def from_text(cls, text: str) -> Lexicon:
        return cls(frozenset(w.lower().replace("\u2019", "'") for w in words(text)))

    def known(self, word: str) -> bool:
        w = word.lower().replace("\u2019", "'")
        if w in self.corpus_words or w in english_words():
            return True
        if "'" in w:
            return all(part in self.corpus_words or part in english_words() or part in ("s", "t", "ll", "d", "re")
                       for part in w.split("'") if part)
        return False

    def invented(self, text: str) -> list[str]:
        """The words of ``text`` that are neither the corpus's nor English, in order."""
        return [w for w in words(text) if not self.known(w)]


@functools.cache
def lexicon(corpus: str) -> Lexicon:
    """The lexicon of a registered corpus, built once; English alone when its text is not here."""
    try:
        return Lexicon.from_text(load_corpus(corpus).text)
    except CorpusMissing as exc:
        log.warning("no %s text on this machine (%s): invented words are checked against English only", corpus, exc)
        return Lexicon(frozenset(), has_corpus=False)
