"""Small helpers the sub-commands share: errors, JSON output, resolving texts by name or path."""

from __future__ import annotations

import json
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback."""


def emit(args, payload: dict, human: str) -> None:  # noqa: ANN001
    """Print ``payload`` as JSON with ``--json``, else the human-readable text."""
    if getattr(args, "json", False):
        print(json.dumps(payload))
    else:
        print(human)


def add_json_flag(parser) -> None:  # noqa: ANN001
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def load_text(name_or_path: str):  # noqa: ANN201
    """A TextData from a file path, or from a registered corpus name (cleaned)."""
    from model.textdata import TextData

    path = Path(name_or_path)
    if path.exists():  # a folder too: from_file says what is wrong with it
        return TextData.from_file(path)
    try:
        from corpora.registry import CORPORA, load_corpus
    except ImportError:  # pragma: no cover - the registry ships with charbot
        CORPORA, load_corpus = {}, None
    if name_or_path in CORPORA:
        return load_corpus(name_or_path)
    known = ", ".join(sorted(CORPORA)) or "none"
    raise UserError(f"{name_or_path}: no such file, and not a corpus name (corpora: {known})")


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
