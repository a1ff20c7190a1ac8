"""A training text: normalized once, with the facts a checkpoint records about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from model.charset import encode, normalize


@dataclass
class TextData:
    """Normalized text plus where it came from (name and sha256 of the raw bytes)."""

    name: str
    text: str
    source_sha256: str
    dropped: int = 0

    @classmethod
    def from_text(cls, name: str, raw: str, source_sha256: str | None = None) -> TextData:
        norm = normalize(raw)
        sha = source_sha256 or hashlib.sha256(raw.encode("utf-8")).hexdigest()
        return cls(name=name, text=norm.text, source_sha256=sha, dropped=norm.dropped)

    @classmethod
    def from_file(cls, path: str | Path) -> TextData:
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder, not a text file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
        return cls.from_text(path.name, text, hashlib.sha256(raw).hexdigest())

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("ascii")).hexdigest()

    def codes(self) -> torch.Tensor:
        return encode(self.text)

    def split(self, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Training part and the held-out last ``val_fraction`` of the text."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError("val_fraction must be between 0 and 1")
        codes = self.codes()
        cut = int(len(codes) * (1.0 - val_fraction))
        return codes[:cut], codes[cut:]
