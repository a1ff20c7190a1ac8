"""Numbered checkpoint versions on disk: ``<state dir>/versions/<corpus>/v0003.safetensors``.

A version file is written once, atomically, under a number never used before, and never
changed afterwards; which version is served is recorded in the database, not here, so a
crash between writing a file and recording it leaves an unused file and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model.checkpoint import FILE_MODE, fsync_dir

_NAME = re.compile(r"^v(\d{4,})\.safetensors$")


@dataclass(frozen=True)
class VersionDir:
    """The version files of one corpus."""

    root: Path

    @classmethod
    def of(cls, state_dir: str | Path, corpus: str) -> VersionDir:
        if not re.fullmatch(r"[a-z0-9_-]+", corpus):
            raise ValueError(f"corpus name {corpus!r} is not usable as a folder name")
        return cls(Path(state_dir) / "versions" / corpus)

    def path(self, number: int) -> Path:
        if number < 1:
            raise ValueError("version numbers start at 1")
        return self.root / f"v{number:04d}.safetensors"

    def on_disk(self) -> list[int]:
        """Version numbers that have a file, ascending."""
        if not self.root.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def install(self, source: str | Path, number: int) -> Path:
        """Copy ``source`` in as version ``number``: a temporary file, fsync, then rename, so the
        version name only ever holds a complete file. Refuses to overwrite an existing version."""
        dest = self.path(number)
        self.root.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            raise FileExistsError(f"{dest}: version {number} already exists")
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                os.fchmod(out.fileno(), FILE_MODE)  # mkstemp makes 0600; a checkpoint is an ordinary file
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, dest)  # unlike rename, never replaces: two installers cannot take the same number
        except FileExistsError:
            raise FileExistsError(f"{dest}: version {number} already exists") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        fsync_dir(self.root)
        return dest

    def remove(self, number: int) -> None:
        """Delete version ``number`` and what lies beside it (the texts it learned, for grounding)."""
        path = self.path(number)
        path.unlink(missing_ok=True)
        path.with_name(path.name.removesuffix(".safetensors") + ".learned.json").unlink(missing_ok=True)

    def remove_temporaries(self) -> int:
        """Delete half-copied files a crash left behind; returns how many."""
        if not self.root.is_dir():
            return 0
        stale = [p for p in self.root.iterdir() if p.name.startswith(".v") and p.name.endswith(".tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


def versions_to_prune(numbers: list[int], keep: int, protected: set[int]) -> list[int]:
    """The versions beyond the newest ``keep``, except protected ones (the served one)."""
    if keep < 1:
        raise ValueError("keep at least one version")
    newest = set(sorted(numbers)[-keep:])
    return [n for n in sorted(numbers) if n not in newest and n not in protected]
