"""Downloading a corpus file into the data folder, verified before it gets its real name.

The bytes go to a temporary file beside the target and are checked against the corpus's
known downloads (sha256, or the content check of an unpinned edition); only a verified file
is renamed into place, so a wrong, truncated or interrupted download never sits under the
corpus's name and an existing good copy is never replaced by a bad one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from corpora.registry import Corpus, data_dir, find_corpus_file, get_corpus
from model import __version__
from model.checkpoint import fsync_dir

MAX_BYTES = 50_000_000  # the corpora are about 2 MB; anything far larger is not one of them
CHUNK = 1 << 16


class FetchError(ValueError):
    """A download failed or gave the wrong file; nothing was left behind under the corpus's name."""


@dataclass
class FetchResult:
    """What ``fetch`` did: where the file is, its size and sha256, and which download it matched."""

    name: str
    path: Path
    bytes: int
    sha256: str
    matched: str
    downloaded: bool
    url: str | None = None


def _pick_url(corpus: Corpus, source: str | None, url: str | None) -> str:
    """``url`` if given, else the URL of download ``source`` (default: the first)."""
    chosen = corpus.downloads[0]
    if source is not None:
        chosen = next((d for d in corpus.downloads if d.id == source), None)
        if chosen is None:
            known = ", ".join(d.id for d in corpus.downloads)
            raise FetchError(f"corpus {corpus.name!r} has no source {source!r} (sources: {known})")
    return url or chosen.url


def _download(url: str, tmp: Path, timeout: float) -> tuple[int, str]:
    """Stream ``url`` into ``tmp``; return its size and sha256."""
    request = urllib.request.Request(url, headers={"User-Agent": f"charbot/{__version__}"})
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BYTES:
                    raise FetchError(f"{url}: more than {MAX_BYTES:,} bytes; that is not this corpus")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"could not download {url}: {exc.reason} (check the address and your connection)") from None
    except TimeoutError:
        raise FetchError(f"could not download {url}: no answer within {timeout:g} s") from None
    except http.client.HTTPException as exc:
        raise FetchError(f"could not download {url}: the connection broke off ({type(exc).__name__})") from None
    except OSError as exc:
        raise FetchError(f"could not download {url}: {exc}") from None
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise FetchError(f"{url}: download incomplete ({size:,} of {int(expected):,} bytes)")
    return size, digest.hexdigest()


def fetch(
    name: str,
    *,
    source: str | None = None,
    url: str | None = None,
    force: bool = False,
    dest_dir: str | Path | None = None,
    timeout: float = 60.0,
) -> FetchResult:
    """Download corpus ``name`` into the data folder, verified; see the module docstring.

    Without ``force`` an already present, verified copy (in any searched folder) is kept and
    nothing is downloaded. ``source`` picks one of the corpus's downloads by id; ``url`` fetches
    from another address, and its bytes must still be a known edition of the corpus.
    """
    corpus = get_corpus(name)
    target_dir = Path(dest_dir) if dest_dir is not None else data_dir()
    target = target_dir / corpus.filename
    where = _pick_url(corpus, source, url)
    if not force:
        present = target if target.is_file() else find_corpus_file(name)
        if present is not None:
            raw = present.read_bytes()
            match = corpus.identify(raw)
            if match is not None:
                return FetchResult(name, present, len(raw), hashlib.sha256(raw).hexdigest(), match.id, False)
            if present == target:
                raise FetchError(f"{target} exists but is not a known edition of {name!r}; "
                                 f"use --force to replace it")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the data folder {target_dir}: {exc.strerror or exc}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{corpus.filename}.", suffix=".part", dir=target_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        size, digest = _download(where, tmp, timeout)
        match = corpus.identify(tmp.read_bytes())
        if match is None:
            known = "; ".join(f"{d.id}: sha256 {d.sha256}" if d.sha256 else f"{d.id}: recognised by content"
                              for d in corpus.downloads)
            raise FetchError(
                f"{where}: the downloaded file (sha256 {digest}, {size:,} bytes) is not a known edition of "
                f"{name!r} ({known}); it was deleted"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target_dir)
    return FetchResult(name, target, size, digest, match.id, True, where)


