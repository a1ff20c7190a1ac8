"""Sampling: prime, temperature, top-k, top-p, seed, length, stop strings and sentence ends.

:func:`stream` runs several requests at once, each with its own settings and its own seeded
random generator, and yields text as it is produced; :func:`generate` collects it. This is
the reference path built on the plain ``nn.LSTM`` forward; the fast engine reuses
:func:`pick_next` so both draw the same character from the same distribution.

``SampleSettings.target_chars`` turns the length into a target instead of a guillotine: a
reply ends at the first sentence end after it (``max_chars`` stays the hard cap), and one
that reaches the cap is cut back to its last sentence end (:func:`clean_ending`), because a
person reads a reply that stops mid-word as broken. Sentence ends are plain punctuation
(``.``, ``!``, ``?``, optionally inside closing quotes or brackets) followed by whitespace;
the model knows characters, not languages, so nothing else is assumed.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch

from model.charset import decode, encode, normalize
from model.network import CharLSTM

MAX_TEMPERATURE = 2.0
PRIME_CHUNK = 1024
SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SampleSettings:
    """How one reply is drawn. ``temperature`` 0 means always the likeliest character."""

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_chars: int = 400
    stop: tuple[str, ...] = ()
    seed: int | None = None
    target_chars: int = 0  # 0: end at max_chars; else end at the first sentence end from here on


    def __post_init__(self) -> None:
        t = self.temperature
        if not _is_number(t) or not math.isfinite(t) or not 0 <= t <= MAX_TEMPERATURE:
            raise ValueError(
                f"temperature must be a number from 0 to {MAX_TEMPERATURE:g} "
                f"(0 = always the likeliest character), got {t!r}"
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number >= 0 (0 = off), got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1] (1 = off), got {self.top_p!r}")
        if not _is_int(self.max_chars) or self.max_chars < 1:
            raise ValueError(f"max_chars must be a whole number >= 1, got {self.max_chars!r}")
        if not _is_int(self.target_chars) or self.target_chars < 0:
            raise ValueError(f"target_chars must be a whole number >= 0 (0 = off), got {self.target_chars!r}")
        if self.seed is not None and (not _is_int(self.seed) or not SEED_RANGE[0] <= self.seed < SEED_RANGE[1]):
            raise ValueError(f"seed must be a whole number from -2**63 to 2**64-1, got {self.seed!r}")
        stops = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stops, (tuple, list)) or any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop strings must be non-empty text, got {self.stop!r}")
        normalized = tuple(normalize(s).text for s in stops)
        for raw, norm in zip(stops, normalized, strict=True):
            if not norm:  # an empty stop string would end every reply before its first character
                raise ValueError(f"stop string {raw!r} has no characters the model can write")
        object.__setattr__(self, "stop", normalized)


class Finish(str, Enum):
    """Why a reply ended: its length, a stop string, a sentence end after its target, or cancelled.

    A ``str``, so it compares equal to, formats as and serializes to the plain word it stands
    for: logs, JSON output and model cards read "length", never "Finish.LENGTH".
    """

    LENGTH = "length"
    STOP = "stop"
    CANCELLED = "cancelled"
    SENTENCE = "sentence"

    __str__ = str.__str__
    __format__ = str.__format__


def finish_after(watcher: StopWatcher, char: str, count: int, settings: SampleSettings) -> tuple[str, Finish | None]:
    """Add a reply's ``count``-th drawn character; return the text now safe to show and why the
    reply ends there, or None if it goes on.

    The one decision :func:`stream` and the engine both make, so a reply ends at the same
    character, for the same reason, on either path: a stop string first, then a sentence end
    at or past the target, then the length cap.
    """
    piece, hit = watcher.add(char)
    if hit:
        return piece, Finish.STOP
    if watcher.sentence_ended(count, settings):
        return piece, Finish.SENTENCE
    if count >= settings.max_chars:
        return piece, Finish.LENGTH
    return piece, None


@dataclass
class Generation:
    """One finished reply: the normalized prime, the new text, why it ended, the seed used.

    ``logprobs`` (from the engine) holds the model's own log-probability, in nats at
    temperature 1, of each character of ``text``: what best-of-n scores candidates by.
    """

    prime: str
    text: str
    finish: Finish
    seed: int
    dropped: int = 0
    settings: SampleSettings = field(default_factory=SampleSettings)
    logprobs: tuple[float, ...] = ()

    @property
    def mean_logprob(self) -> float | None:
        """Mean log-likelihood per character in nats, or None when it was not recorded."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


_CLOSERS = "\"'’”)]"
_SENTENCE_MARK = re.compile(rf"[.!?][{re.escape(_CLOSERS)}]*$")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "mme", "mlle", "messrs", "prof", "vs", "etc", "e.g", "i.e"})


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (trailing whitespace ignored) ends with a finished sentence.

    ``Mr.``, ``Dr.`` and single initials (``A.``) are not sentence ends: a reply cut there
    reads as cut.
    """
    body = text.rstrip()
    if not _SENTENCE_MARK.search(body):
        return False
    word = body.rstrip(_CLOSERS).rstrip(".!?")
    last = word.rsplit(None, 1)[-1] if word.split() else ""
    last = last.lstrip(_CLOSERS + "(\u2018\u201c")
    abbreviation = last.lower() in _ABBREVIATIONS or (len(last) == 1 and last.isupper())
    return not (body.rstrip(_CLOSERS).endswith(".") and abbreviation)


def sentence_just_ended(text: str) -> bool:
    """Whether the last character of ``text`` is the whitespace that confirms a sentence end."""
    return len(text) >= 2 and text[-1].isspace() and not text[-2].isspace() and ends_sentence(text)


def last_sentence_end(text: str) -> int:
    """Length of the longest prefix of ``text`` that ends a sentence (0 if there is none)."""
    for m in reversed(list(re.finditer(rf"[.!?][{re.escape(_CLOSERS)}]*(?=\s|$)", text))):
        if ends_sentence(text[: m.end()]):
            return m.end()
    return 0


def clean_ending(text: str, finish: Finish) -> tuple[str, bool]:
    """``text`` cut back to its last sentence end, and whether it now ends cleanly.

    Text that already ends a sentence is kept. Text with no sentence end at all is kept
    whole when a stop string ended it (a paragraph or entry end), else cut back to its last
    whole word; it does not end cleanly (the reader is shown an ellipsis). A cancelled reply
    is kept as it is.
    """
    body = text.rstrip()
    if finish == Finish.CANCELLED:
        return text, False
    if ends_sentence(body):
        return body, True
    end = last_sentence_end(body)
    if end:
        return body[:end], True
    if finish == Finish.STOP or not body:
        return body, False
    if text[-1:].isspace():  # the last word was finished
        return body, False
    cut = re.search(r"\s\S*$", body)
    return (body[: cut.start()].rstrip() if cut and body[: cut.start()].strip() else body), False


def candidate_seed(seed: int, index: int) -> int:
    """The seed of best-of-n candidate ``index``: candidate 0 is the reply's own seed.

    Each candidate draws from its own random stream, fixed by the reply's seed alone, so the
    same seed gives the same candidates (and the same chosen reply) whatever else is running.
    """
    if index == 0:
        return seed
    return (seed * 6364136223846793005 + index * 1442695040888963407 + 0x9E3779B97F4A7C15) % 2**64


def pick_next(logits: torch.Tensor, settings: SampleSettings, generator: torch.Generator) -> int:
    """Draw the next character code from one row of logits under ``settings``."""
    if settings.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / settings.temperature
    if settings.top_k and settings.top_k < logits.numel():
        # by index, not by ``logits >= kth``: ties at the k-th value must not let more than k through
        keep_k = torch.zeros_like(logits, dtype=torch.bool)
        keep_k[torch.topk(logits, settings.top_k).indices] = True
        logits = logits.masked_fill(~keep_k, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        keep = before < settings.top_p
        keep[0] = True
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = probs.masked_fill(~mask, 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))


def prime_codes(prime: str) -> tuple[str, int, torch.Tensor]:
    """Normalized prime, characters dropped, and the codes the model reads (newline if empty)."""
    norm = normalize(prime)
    context = norm.text if norm.text else "\n"
    return norm.text, norm.dropped, encode(context)


class StopWatcher:
    """Finds stop strings in generated text and tells how much can safely be streamed.

    Text that might be the start of a stop string is held back until it is known not to be,
    so a streamed reply never shows a stop string that the final reply leaves out.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._chars = frozenset("".join(self.stops))  # what a stop string, or a start of one, can end with
        self.text = ""
        self.sent = 0

    def add(self, piece: str) -> tuple[str, bool]:
        """Append ``piece``; return (text now safe to emit, whether a stop string was hit)."""
        self.text += piece
        if piece and self._chars.isdisjoint(piece):  # nothing can end or begin a stop string here: all is safe
            out = self.text[self.sent :]  # (the engine calls this per character per reply: keep it short)
            self.sent = len(self.text)
            return out, False
        found = [at for at in (self.text.find(s, self.sent) for s in self.stops) if at != -1]
        if found:  # the earliest stop string wins, whatever order they were given in
            self.text = self.text[: min(found)]
            out = self.text[self.sent :]
            self.sent = len(self.text)
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        safe_end = len(self.text) - hold
        out = self.text[self.sent : safe_end]
        self.sent = max(self.sent, safe_end)
        return out, False

    def flush(self) -> str:
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out

    def sentence_ended(self, count: int, settings: SampleSettings) -> bool:
        """After ``count`` characters: did a sentence just end at or past the target? If so, end there.

        The whitespace that confirmed the end is dropped from the text (it may have been
        streamed already; the finished text is what counts).
        """
        if not settings.target_chars or count < settings.target_chars or not sentence_just_ended(self.text):
            return False
        self.text = self.text.rstrip()
        self.sent = min(self.sent, len(self.text))
        return True


@torch.no_grad()
def _prime_state(model: CharLSTM, codes: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    device = model.head.weight.device
    state = None
    logits = None
    for start in range(0, len(codes), PRIME_CHUNK):
        logits, state = model(codes[start : start + PRIME_CHUNK].view(1, -1).to(device), state)
    return logits[0, -1], state


class Stream:
    """What :func:`stream` returns: iterate it for ``(request index, new text)`` as the text is
    produced; once it is used up, :attr:`generations` holds the finished replies.

    The finished replies are what the stream returns, not something it writes into a list its
    caller lends it: a caller that wants both the pieces and the result keeps one object.
    """

    def __init__(self, steps: Generator[tuple[int, str], None, list[Generation]]) -> None:
        self._steps = steps
        self._generations: list[Generation] | None = None

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> tuple[int, str]:
        try:
            return next(self._steps)
        except StopIteration as done:
            if self._generations is None:
                self._generations = done.value
            raise StopIteration from None

    @property
    def generations(self) -> list[Generation]:
        """One :class:`Generation` per prompt, in the prompts' order."""
        if self._generations is None:
            raise RuntimeError("the stream is not finished: iterate it to its end first")
        return self._generations


def stream(
    model: CharLSTM,
    prompts: Sequence[str],
    settings: SampleSettings | Sequence[SampleSettings] = SampleSettings(),
) -> Stream:
    """Generate for all prompts at once, giving ``(request index, new text)`` as characters are produced.

    Nothing runs until the stream is iterated; bad arguments raise then. Once it is used up,
    ``.generations`` holds one :class:`Generation` per prompt.
    """
    return Stream(_steps(model, prompts, settings))


@torch.no_grad()
def _steps(
    model: CharLSTM,
    prompts: Sequence[str],
    settings: SampleSettings | Sequence[SampleSettings],
) -> Generator[tuple[int, str], None, list[Generation]]:
    """The work of :func:`stream`: yields the pieces, returns the finished replies."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    n = len(prompts)
    if isinstance(settings, SampleSettings):
        settings = [settings] * n
    if len(settings) != n:
        raise ValueError("give one SampleSettings per prompt, or one for all")
    if n == 0:
        return []
    model.eval()
    seeds = [s.seed if s.seed is not None else secrets.randbits(63) for s in settings]
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    primes, dropped, logits_b, (h, c) = _prime_all(model, prompts)
    watchers = [StopWatcher(s.stop) for s in settings]
    counts = [0] * n
    finish = [Finish.LENGTH] * n
    active = list(range(n))
    device = model.head.weight.device
    while active:
        chosen, still = [], []
        for row, i in enumerate(active):
            code = pick_next(logits_b[row], settings[i], gens[i])
            counts[i] += 1
            piece, ended = finish_after(watchers[i], decode([code]), counts[i], settings[i])
            if piece:
                yield i, piece
            if ended is None:
                still.append(row)
                chosen.append(code)
                continue
            finish[i] = ended
            if ended == Finish.LENGTH:
                rest = watchers[i].flush()
                if rest:
                    yield i, rest
        if not still:
            break
        keep = torch.tensor(still, device=device)
        h, c = h.index_select(1, keep), c.index_select(1, keep)
        active = [active[row] for row in still]
        x = torch.tensor(chosen, device=device).view(-1, 1)
        out, (h, c) = model(x, (h, c))
        logits_b = out[:, -1].float().cpu()
    return [
        Generation(primes[i], finished_text(watchers[i].text, finish[i], settings[i]), finish[i], seeds[i],
                   dropped[i], settings[i])
        for i in range(n)
    ]


def _prime_all(
    model: CharLSTM, prompts: Sequence[str]
) -> tuple[list[str], list[int], torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Read each prompt: normalized primes, characters dropped, the next-character logits (one
    row per prompt, on the CPU) and the LSTM state (batched along dimension 1)."""
    primes, dropped, logits, hs, cs = [], [], [], [], []
    for p in prompts:
        text, lost, codes = prime_codes(p)
        last, (h, c) = _prime_state(model, codes)
        primes.append(text)
        dropped.append(lost)
        logits.append(last)
        hs.append(h)
        cs.append(c)
    return primes, dropped, torch.stack(logits).cpu(), (torch.cat(hs, dim=1), torch.cat(cs, dim=1))


def finished_text(text: str, finish: Finish, settings: SampleSettings) -> str:
    """The reply's final text: with a length target, cut back to a clean ending (:func:`clean_ending`)."""
    return clean_ending(text, finish)[0] if settings.target_chars else text


def generate(
    model: CharLSTM,
    prompts: Sequence[str],
    settings: SampleSettings | Sequence[SampleSettings] = SampleSettings(),
) -> list[Generation]:
    """Generate one reply per prompt (see :func:`stream`)."""
    run = stream(model, prompts, settings)
    for _ in run:
        pass
    return run.generations
