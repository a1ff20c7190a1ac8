"""The reply score: which of a reply's best-of-n candidates a person would rather read.

``total = loglik + invented + ending + repetition + grounding + short``, higher is better:

- ``loglik``: the model's own mean log-likelihood per character of the posted text, in nats
  at temperature 1 (about -0.8 to -2): fluent text scores higher than a stumble.
- ``invented``: -0.25 per invented word (:mod:`bot.core.words`: neither the corpus's nor English),
  so one made-up word outweighs the usual spread of ``loglik`` between candidates.
- ``ending``: -1 when the text does not end a sentence (it would be posted with "…").
- ``repetition``: -2 times the share of the reply's word trigrams that repeat an earlier one
  ("and the little boy and the little boy").
- ``grounding`` (FAQ only): +1 when the answer shares a content word (four or more letters,
  not a stop word) with the question, plus up to +0.2 for content words shared with the
  quoted passage (0.04 each, up to five): an answer that ignores the question is the worst
  failure a reader sees, so an on-topic candidate wins unless it is much worse otherwise.
- ``short``: up to -0.5 for a reply under 40% of the asked length, so "Yes." does not win on
  likelihood alone.
- ``opening``: -0.5 when a reply that starts on a fresh line (an FAQ answer, a tale under its
  title) starts with debris: not a capital letter, digit or opening quote ("-b hours) you...").

The weights are plain constants, chosen so that each penalty outweighs the typical loglik
difference between candidates (about 0.1 to 0.3 nats); the bench's quality section shows
what they buy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bot.core.words import Lexicon, words
from corpora.passages import STOP_WORDS
from model.sample import ends_sentence

INVENTED_PENALTY = 0.25
UNCLEAN_PENALTY = 1.0
REPEAT_PENALTY = 2.0
TOPIC_BONUS = 1.0
PASSAGE_BONUS_PER_WORD = 0.04
PASSAGE_BONUS_WORDS = 5
SHORT_FRACTION = 0.4
SHORT_PENALTY = 0.5
CONTENT_MIN_LETTERS = 4
OPENING_PENALTY = 0.5
_OPENING = re.compile(r"[\"'\u201c\u2018(]*[A-Z0-9]")  # a quote or bracket opens well only before a capital
_NEXT_SENTENCE = re.compile(r"[.!?][\"'\u2019\u201d)\]]*\s+(?=[A-Z0-9\"\u201c])")


def content_words(text: str) -> set[str]:
    """Lower-cased words of four or more letters that are not stop words: what a topic is made of."""
    return {w.lower() for w in words(text) if len(w) >= CONTENT_MIN_LETTERS and w.lower() not in STOP_WORDS}


def debris_end(text: str) -> int:
    """Where a fresh reply's real start is: after a leading fragment ("for both course. Yes, ...").

    A reply that should start a line but starts mid-sentence (lower case, a stray bracket) is
    cut to its first sentence start within the first half; 0 when it starts well or has none.
    """
    body = text.lstrip()
    if not body or _OPENING.match(body):
        return 0
    m = _NEXT_SENTENCE.search(body, 0, len(body) // 2 + 1)
    return len(text) - len(body) + m.end() if m else 0


def repeated_share(text: str) -> float:
    """The share of word trigrams that already occurred earlier in ``text``."""
    ws = [w.lower() for w in words(text)]
    grams = [tuple(ws[i : i + 3]) for i in range(len(ws) - 2)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    again = 0
    for g in grams:
        again += g in seen
        seen.add(g)
    return again / len(grams)


@dataclass(frozen=True)
class Grounding:
    """What an FAQ answer should be about: the question and the retrieved passage."""

    question: str
    passage: str = ""


@dataclass(frozen=True)
class Score:
    """One candidate's score and its parts (see the module docstring)."""

    loglik: float
    invented: float
    ending: float
    repetition: float
    grounding: float
    short: float
    opening: float = 0.0
    invented_words: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return self.loglik + self.invented + self.ending + self.repetition + self.grounding + self.short + self.opening

    def to_dict(self) -> dict:
        return {**asdict(self), "invented_words": list(self.invented_words), "total": self.total}


def score_reply(
    text: str,
    logprobs: Sequence[float],
    lexicon: Lexicon,
    target_chars: int = 0,
    grounding: Grounding | None = None,
    fresh_start: bool = False,
) -> Score:
    """Score one candidate's posted text; ``logprobs`` are the model's, one per character of ``text``.

    ``fresh_start``: the text begins a line of its own rather than continuing the user's words.
    """
    body = text.strip()
    loglik = sum(logprobs) / len(logprobs) if logprobs else -5.0
    invented = tuple(lexicon.invented(body))
    ground = 0.0
    if grounding is not None:
        mine = content_words(body)
        ground += TOPIC_BONUS if mine & content_words(grounding.question) else 0.0
        shared = len(mine & content_words(grounding.passage))
        ground += PASSAGE_BONUS_PER_WORD * min(PASSAGE_BONUS_WORDS, shared)
    short = 0.0
    if target_chars:
        want = SHORT_FRACTION * target_chars
        short = -SHORT_PENALTY * max(0.0, 1.0 - len(body) / want) if want else 0.0
    return Score(
        loglik=loglik,
        invented=-INVENTED_PENALTY * len(invented),
        ending=0.0 if body and ends_sentence(body) else -UNCLEAN_PENALTY,
        repetition=-REPEAT_PENALTY * repeated_share(body),
        grounding=ground,
        short=short,
        opening=-OPENING_PENALTY if fresh_start and body and not _OPENING.match(body) else 0.0,
        invented_words=invented,
    )


def best(scores: Sequence[Score]) -> int:
    """The index of the best score; the earliest candidate wins a tie, so the choice is reproducible."""
    return max(range(len(scores)), key=lambda i: (scores[i].total, -i))
