"""The three corpora: where each comes from, how to clean it, and how the bot uses it.

The raw texts are third-party and never committed. They are looked for in the data folder
(``$CHARBOT_DATA_DIR``, else the project's git-ignored ``data/``), then in ``../shared/corpora``
beside the project (where CI and the team keep them). ``charbot corpora fetch`` downloads
into the data folder.

Checksums are per download: each corpus lists the places its file can come from. The first
is a byte-exact copy of the file the shipped checkpoints were trained on, pinned to a git
commit, with its sha256. The canonical gutenberg.org file differs in bytes from those mirrors
(header, licence, BOM) and changes whenever Gutenberg regenerates it, so no sha256 can be pinned
for it; a file from there is recognised by content instead (its Gutenberg markers, the book's
first and last words, its length). A file that is neither is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corpora.clean import clean_gutenberg, clean_plain
from corpora.paths import PROJECT_ROOT, SHARED_ROOT
from corpora.prompts import conversation_prime, faq_prime, novel_prime, tale_prime
from corpora.style import ReplyStyle
from model.textdata import TextData
from model.train import TrainConfig

DATA_DIR_ENV = "CHARBOT_DATA_DIR"
SHARED_DIR = SHARED_ROOT / "corpora"


@dataclass(frozen=True)
class ContentCheck:
    """How to recognise an edition whose bytes cannot be pinned: phrases and a length range.

    Phrases are matched in the cleaned text with whitespace runs collapsed, so rewrapped lines
    or other line endings still match; the markers prove it is the Gutenberg file, not a page
    of HTML or an error message.
    """

    markers: tuple[str, ...]
    phrases: tuple[str, ...]
    min_chars: int
    max_chars: int

    def accepts(self, raw_text: str, cleaned: str) -> bool:
        if not all(m.lower() in raw_text.lower() for m in self.markers):
            return False
        flat = re.sub(r"\s+", " ", cleaned)
        return self.min_chars <= len(cleaned) <= self.max_chars and all(p in flat for p in self.phrases)


@dataclass(frozen=True)
class Download:
    """One place a corpus file can be fetched from, and how its bytes are verified."""

    id: str
    url: str
    sha256: str | None = None
    check: ContentCheck | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.check is None):
            raise ValueError(f"download {self.id!r}: give exactly one of sha256 and a content check")


@dataclass(frozen=True)
class Corpus:
    """A training text and what the bot needs to use it."""

    name: str
    title: str
    filename: str
    source: str
    downloads: tuple[Download, ...]
    clean: Callable[[str], str]
    description: str
    frame: Callable[[str], str]
    stop: tuple[str, ...] = ()
    val_fraction: float = TrainConfig.val_fraction  # training's default: the split its checkpoints held out
    default_temperature: float = 0.8
    style: ReplyStyle = ReplyStyle()
    example_prompt: str = ""
    grounded: bool = False  # replies primed with, and quoting, the best-matching passage (corpora.passages)
    best_of: int = 8  # candidates per reply while the bot is idle (fewer under load); the best is posted
    target_val_bpc: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        """Where ``charbot corpora fetch`` downloads from by default."""
        return self.downloads[0].url

    @property
    def sha256(self) -> str | None:
        """sha256 of the raw file the shipped checkpoints were trained on."""
        return self.downloads[0].sha256

    @property
    def cleaning(self) -> str:
        """One line saying what cleaning does to this corpus."""
        return (self.clean.__doc__ or self.clean.__name__).strip().splitlines()[0]

    @property
    def held_out(self) -> str:
        return f"the last {self.val_fraction:.0%} of the cleaned text"

    def prime(self, prompt: str, context: str = "") -> str:
        """How a user's words become the text the model continues (see corpora.prompts).

        ``context`` is what came before them in a conversation: the reply being continued, or
        a reply chain (:func:`corpora.prompts.conversation_prime`). A grounded corpus answers
        the question alone, since its prime is the question's passage and heading.
        """
        if context.strip() and not (self.grounded and prompt.strip()):
            return conversation_prime(context, prompt)
        return self.frame(prompt)

    def identify(self, raw: bytes) -> Download | None:
        """The download these bytes are a verified copy of, or None."""
        digest = hashlib.sha256(raw).hexdigest()
        for d in self.downloads:
            if d.sha256 == digest:
                return d
        checks = [d for d in self.downloads if d.check is not None]
        if not checks:
            return None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
        cleaned = self.clean(text)
        return next((d for d in checks if d.check.accepts(text, cleaned)), None)


_GUTENBERG_NOTE = ("the canonical file; its bytes change when Gutenberg regenerates it, so it is checked by content; "
                   "its cleaned text may differ from the mirror's, and the card's losses are measured on the mirror")

CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            name="tale",
            title="Fairy Tales of Hans Christian Andersen (H. P. Paull's translation)",
            filename="fairy-tales.txt",
            source="Project Gutenberg eBook #27200, public domain; this copy from the repository "
            "bernai/pytorch-rnn-lm (file 27200.txt, Gutenberg header and footer already removed)",
            downloads=(
                Download(
                    "mirror",
                    "https://raw.githubusercontent.com/bernai/pytorch-rnn-lm/"
                    "f52fceb18d0b977187f4fde1f98a360fad5928cb/27200.txt",
                    sha256="9cd7feb7c8133e91a15d6e91b5a8dbc23d2bf7e37dc12b65e0166d35b2f9907a",
                    note="byte-exact copy of the training file, pinned to a commit",
                ),
                Download(
                    "gutenberg",
                    "https://www.gutenberg.org/cache/epub/27200/pg27200.txt",
                    check=ContentCheck(
                        markers=("START OF", "PROJECT GUTENBERG EBOOK"),
                        phrases=("In the garden all the apple-trees were in blossom",
                                 "it is not according to the calendar"),
                        min_chars=1_800_000, max_chars=2_200_000,
                    ),
                    note=_GUTENBERG_NOTE,
                ),
            ),
            clean=clean_gutenberg,
            description="Fairy tales in the style of Hans Christian Andersen",
            frame=tale_prime,
            stop=("\n\n\n\n",),
            example_prompt="The old lighthouse",
            target_val_bpc=1.25 / math.log(2),  # issue target: <= 1.25 nats/char
            notes=("Tales are separated by four blank lines and start with a title in capitals; sections within a "
                   "tale by two. A reply ends where a tale ends.",),
        ),
        Corpus(
            name="faq",
            title="University of Wisconsin-Madison COVID-19 FAQ (spring 2021)",
            filename="covid-faq.txt",
            source="UW-Madison COVID-19 response FAQ, as collected for STAT 453 lecture 19 (repository "
            "rasbt/stat453-deep-learning-ss21); not public domain, used only to train a model, never redistributed",
            downloads=(
                Download(
                    "mirror",
                    "https://raw.githubusercontent.com/rasbt/stat453-deep-learning-ss21/"
                    "04c8b79962baccef10e8e99793b4045990281c24/L19/character-rnn/covid19-faq.txt",
                    sha256="71926f06c44cbe14baa3c837fd5689aa2a27e775895f7ad0c5d9f99f3c7c0034",
                    note="the only published copy, pinned to a commit",
                ),
            ),
            clean=clean_plain,
            description="Answers in the style of a university COVID-19 FAQ",
            frame=faq_prime,
            stop=("\n\n",),
            style=ReplyStyle(layout="question", prompt_required=True, prompt_label="question",
                             source_label="From the FAQ"),
            example_prompt="Do I need to wear a mask on campus?",
            grounded=True,
            best_of=16,  # short answers, and on-topic ones are rarer: more candidates to choose from
            target_val_bpc=1.45 / math.log(2),  # issue target: <= 1.45 nats/char
            notes=("The file holds answers only (no question marks at all); entries are separated by a blank line, "
                   "so a reply ends at the first blank line. 85 KB: a model trained on it alone overfits.",),
        ),
        Corpus(
            name="novel",
            title="Anna Karenina by Leo Tolstoy (Constance Garnett's translation)",
            filename="anna.txt",
            source="Project Gutenberg eBook #1399, public domain; this copy from the repository "
            "udacity/deep-learning-v2-pytorch (recurrent-neural-networks/char-rnn/data/anna.txt: header removed, "
            "licence footer still there)",
            downloads=(
                Download(
                    "mirror",
                    "https://raw.githubusercontent.com/udacity/deep-learning-v2-pytorch/"
                    "a6fdf852652a794dd84fb45be7282b01026f789f/recurrent-neural-networks/char-rnn/data/anna.txt",
                    sha256="568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9",
                    note="byte-exact copy of the training file, pinned to a commit",
                ),
                Download(
                    "gutenberg",
                    "https://www.gutenberg.org/cache/epub/1399/pg1399.txt",
                    check=ContentCheck(
                        markers=("START OF", "PROJECT GUTENBERG EBOOK"),
                        phrases=("Happy families are all alike", "which I have the power to put into it"),
                        min_chars=1_800_000, max_chars=2_200_000,
                    ),
                    note=_GUTENBERG_NOTE,
                ),
            ),
            clean=clean_gutenberg,
            description="Novel-like prose in the style of Anna Karenina",
            frame=novel_prime,
            stop=("\n\n\n",),
            example_prompt="Anna looked at him",
            target_val_bpc=1.25 / math.log(2),  # issue target: <= 1.25 nats/char (notebook: 1.2917)
            notes=("Paragraphs are separated by one blank line and chapters by three, so a reply runs to its length "
                   "limit or to the end of a chapter.",),
        ),
    ]
}


class CorpusMissing(FileNotFoundError):
    """A registered corpus with no usable raw file on this machine."""


class CorpusUnverified(CorpusMissing):
    """A file is there under the corpus's name, but it is no known edition of the corpus."""


def data_dir() -> Path:
    """Where ``charbot corpora fetch`` writes: ``$CHARBOT_DATA_DIR``, else the project's ``data/``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"


def search_dirs() -> list[Path]:
    """Folders searched for corpus files, first match wins."""
    return [data_dir(), SHARED_DIR]


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``, or a KeyError listing the known names."""
    try:
        return CORPORA[name]
    except KeyError:
        raise KeyError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})") from None


def find_corpus_file(name: str) -> Path | None:
    """The first file named like the corpus in :func:`search_dirs`, verified or not."""
    corpus = get_corpus(name)
    for d in search_dirs():
        path = d / corpus.filename
        if path.is_file():
            return path
    return None


def missing_message(name: str) -> str:
    corpus = get_corpus(name)
    looked = ", ".join(str(d) for d in search_dirs())
    return (f"corpus {name!r} ({corpus.filename}) is not on this machine (looked in {looked}); "
            f"get it with `charbot corpora fetch {name}`, or set {DATA_DIR_ENV} to a folder holding it")


def load_corpus(name: str) -> TextData:
    """The cleaned, normalized text of a registered corpus; CorpusMissing if there is no verified copy."""
    corpus = get_corpus(name)
    path = find_corpus_file(name)
    if path is None:
        raise CorpusMissing(missing_message(name))
    raw = path.read_bytes()
    if corpus.identify(raw) is None:
        raise CorpusUnverified(
            f"{path}: not a known edition of corpus {name!r} (sha256 {hashlib.sha256(raw).hexdigest()[:16]}...); "
            f"replace it with `charbot corpora fetch {name} --force`, or train on it as a file path"
        )
    text = raw.decode("utf-8-sig")
    return TextData.from_text(name, corpus.clean(text), hashlib.sha256(raw).hexdigest())

