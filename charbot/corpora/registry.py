"""The three corpora: where each comes from, how to clean it, and how the bot uses it.

The raw texts are third-party and never committed. They are looked for in, in order:
``$CHARBOT_DATA_DIR``, the project's git-ignored ``data/`` folder, and ``../shared/corpora``
beside the project (where CI and the team keep them).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from charbot.corpora.clean import clean_gutenberg, clean_plain
from charbot.model.textdata import TextData

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Corpus:
    """A training text and what the bot needs to use it."""

    name: str
    title: str
    filename: str
    url: str
    source: str
    sha256: str
    clean: Callable[[str], str]
    description: str
    prompt_template: str = "{prompt}"
    stop: tuple[str, ...] = ()
    val_fraction: float = 0.1
    default_temperature: float = 0.8
    notes: list[str] = field(default_factory=list)

    def prime(self, prompt: str) -> str:
        """How a user's words become the text the model continues."""
        return self.prompt_template.format(prompt=prompt)


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            name="tale",
            title="Fairy Tales of Hans Christian Andersen (H. P. Paull's translation)",
            filename="fairy-tales.txt",
            url="https://www.gutenberg.org/cache/epub/27200/pg27200.txt",
            source="Project Gutenberg eBook #27200, public domain",
            sha256="9cd7feb7c8133e91a15d6e91b5a8dbc23d2bf7e37dc12b65e0166d35b2f9907a",
            clean=clean_gutenberg,
            description="Fairy tales in the style of Hans Christian Andersen",
            stop=("\n\n\n",),
        ),
        Corpus(
            name="faq",
            title="University of Wisconsin-Madison COVID-19 FAQ (spring 2021)",
            filename="covid-faq.txt",
            url="https://raw.githubusercontent.com/rasbt/stat453-deep-learning-ss21/main/L19/character-rnn/covid19-faq.txt",
            source="UW-Madison COVID-19 response FAQ, as collected for STAT 453 lecture 19; not public domain, "
            "used only to train a model, never redistributed",
            sha256="71926f06c44cbe14baa3c837fd5689aa2a27e775895f7ad0c5d9f99f3c7c0034",
            clean=clean_plain,
            description="Answers in the style of a university COVID-19 FAQ",
            prompt_template="{prompt}\n",
            stop=("\n\n",),
        ),
        Corpus(
            name="novel",
            title="Anna Karenina by Leo Tolstoy (Constance Garnett's translation)",
            filename="anna.txt",
            url="https://www.gutenberg.org/cache/epub/1399/pg1399.txt",
            source="Project Gutenberg eBook #1399, public domain",
            sha256="568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9",
            clean=clean_gutenberg,
            description="Novel-like prose in the style of Anna Karenina",
            stop=(),
        ),
    ]
}


class CorpusMissing(FileNotFoundError):
    """A registered corpus whose raw file is not on this machine."""


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("CHARBOT_DATA_DIR"):
        dirs.append(Path(os.environ["CHARBOT_DATA_DIR"]).expanduser())
    dirs.append(PROJECT_ROOT / "data")
    dirs.append(PROJECT_ROOT.parent / "shared" / "corpora")
    return dirs


def find_corpus_file(name: str) -> Path | None:
    corpus = CORPORA[name]
    for d in search_dirs():
        path = d / corpus.filename
        if path.is_file():
            return path
    return None


def load_corpus(name: str) -> TextData:
    """The cleaned, normalized text of a registered corpus, or a clear CorpusMissing."""
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})")
    corpus = CORPORA[name]
    path = find_corpus_file(name)
    if path is None:
        looked = ", ".join(str(d) for d in search_dirs())
        raise CorpusMissing(
            f"corpus {name!r} ({corpus.filename}) not found in {looked}; "
            f"get it with `charbot corpora fetch {name}` or set CHARBOT_DATA_DIR to a folder holding it"
        )
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig")
    return TextData.from_text(name, corpus.clean(text), hashlib.sha256(raw).hexdigest())
