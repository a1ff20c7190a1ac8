"""How a corpus's replies are laid out and what its slash command calls the user's words.

It belongs to the corpus, like its frame, stop strings and temperature: a new corpus brings
its own style, and the renderer, the reply checks and the slash commands read it from
:attr:`corpora.registry.Corpus.style` instead of keeping a table of corpus names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["prose", "question"]


@dataclass(frozen=True)
class ReplyStyle:
    """How one corpus's replies are laid out.

    "prose": the prompt in bold, then the generated text; glued to it when the model continued
    the user's own words, on the next line when the words became a title or heading instead.
    "question": the question quoted in bold on its own line, then the answer.
    ``source_label`` introduces the quoted source passage under a grounded answer.
    """

    layout: Layout = "prose"
    prompt_required: bool = False
    prompt_label: str = "prompt"
    source_label: str = "Source"
