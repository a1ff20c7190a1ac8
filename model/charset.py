"""The one fixed, versioned character set and the normalization every text goes through.

Every checkpoint shares this vocabulary, so fine-tuning on any user's text can never hit a
vocabulary mismatch: text is transliterated to ASCII and whatever is still outside the set
is dropped and counted, never an assertion and never a silent wrong index.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import torch
from unidecode import unidecode

CHARSET_VERSION = 1
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(CHARS)  # 96: newline plus printable ASCII

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_OUTSIDE = re.compile(r"[^\n -~]+")

_CODE_OF_BYTE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(CHARS):
    _CODE_OF_BYTE[ord(_c)] = _i
_BYTE_OF_CODE = np.frombuffer(CHARS.encode("ascii"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Normalized:
    """Normalized text and how many characters could not be represented and were dropped."""

    text: str
    dropped: int


def normalize(text: str) -> Normalized:
    """Map any text into the character set: transliterate, unify line ends, drop the rest."""
    text = unicodedata.normalize("NFC", text)
    dropped = 0

    def transliterate(match: re.Match[str]) -> str:
        nonlocal dropped
        parts = []
        for ch in match.group():
            # lone surrogates (from broken UTF-16) have no transliteration; unidecode would warn
            ascii_form = "" if "\ud800" <= ch <= "\udfff" else unidecode(ch)
            if not ascii_form:
                dropped += 1
            parts.append(ascii_form)
        return "".join(parts)

    if not text.isascii():
        text = _NON_ASCII.sub(transliterate, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    kept_len = len(text)
    text = _OUTSIDE.sub("", text)
    dropped += kept_len - len(text)
    return Normalized(text, dropped)


def encode(text: str) -> torch.Tensor:
    """Character codes (int64) of already-normalized text; raises on characters outside the set."""
    try:
        raw = np.frombuffer(text.encode("ascii", errors="strict"), dtype=np.uint8)
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not normalized: non-ASCII character {exc.object[exc.start]!r}") from None
    codes = _CODE_OF_BYTE[raw]
    if (codes < 0).any():
        bad = sorted({chr(b) for b in raw[codes < 0]})
        raise ValueError(f"text is not normalized: characters outside the set {bad!r}")
    return torch.from_numpy(codes)


def decode(codes: torch.Tensor | list[int]) -> str:
    """Text of a sequence of character codes."""
    arr = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"character codes must be in 0..{VOCAB_SIZE - 1}, got {int(arr.min())}..{int(arr.max())}")
    return _BYTE_OF_CODE[arr].tobytes().decode("ascii")
