"""Checking uploaded files before anything is stored: text, UTF-8, not empty, within the bounds.

A bad upload gets one answer naming the file and the limit it broke, and nothing is kept: the
checks run on the bytes alone, before the persona or its text is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.refusals import Refusal
from bot.core.sanitise import quote
from bot.personas.settings import PersonaSettings
from bot.store.personas import Upload
from model.charset import normalize
from model.finetune import MIN_CHARS

EXTENSIONS = (".txt", ".md")
# Byte-order marks of the encodings editors offer besides UTF-8 (Notepad's "Unicode" is UTF-16 LE).
_OTHER_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
               b"\xfe\xff": "UTF-16"}
_BINARY_CONTROLS = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D}  # tab, newline, form feed, return


@dataclass(frozen=True)
class File:
    """An uploaded file as received: its name and its bytes."""

    filename: str
    data: bytes


def check_count(count: int, settings: PersonaSettings) -> None:
    if count < 1:
        raise Refusal("Attach at least one .txt or .md file with the persona's text.")
    if count > settings.max_files:
        raise Refusal(f"That is {count} files; a persona takes at most {settings.max_files}. Join some of them.")


def check_declared(filename: str, size: int, settings: PersonaSettings) -> None:
    """The checks that need no bytes: the name and the declared size (so a huge file is never downloaded)."""
    if not filename.lower().endswith(EXTENSIONS):
        raise Refusal(f"{quote(filename)} is not a .txt or .md file; upload the text as plain UTF-8 text.")
    if size > settings.max_file_bytes:
        raise Refusal(f"{quote(filename)} is {size / 1e6:.1f} MB; the limit is {settings.max_file_bytes / 1e6:g} MB "
                      "per file.")


def decode(file: File, settings: PersonaSettings) -> Upload:
    """The file's text, or a Refusal saying what is wrong with it."""
    check_declared(file.filename, len(file.data), settings)
    if not file.data.strip():
        raise Refusal(f"{quote(file.filename)} is empty.")
    for bom, encoding in _OTHER_BOMS.items():  # their ASCII letters hold NUL bytes: not binary, just not UTF-8
        if file.data.startswith(bom):
            raise Refusal(f"{quote(file.filename)} is {encoding} text, not UTF-8; save it as UTF-8 and upload it "
                          "again.")
    if any(b in _BINARY_CONTROLS for b in file.data[:65536]):
        raise Refusal(f"{quote(file.filename)} looks like a binary file, not text; upload plain UTF-8 text.")
    try:
        text = file.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refusal(f"{quote(file.filename)} is not UTF-8 text (a byte at position {exc.start} is not); "
                      "save it as UTF-8 and upload it again.") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not normalize(text).text.strip():
        raise Refusal(f"{quote(file.filename)} has no letters or digits I can read.")
    return Upload(file.filename, text)


def check_uploads(files: list[File], settings: PersonaSettings, min_chars: int = MIN_CHARS) -> list[Upload]:
    """Every file's text, checked one by one and then together (enough text to train, not too much)."""
    check_count(len(files), settings)
    names = [f.filename for f in files]
    if len(set(names)) != len(names):
        raise Refusal("Two files have the same name; upload each file once.")
    uploads = [decode(f, settings) for f in files]
    chars = sum(len(normalize(u.text).text) for u in uploads)
    if chars > settings.max_chars:
        raise Refusal(f"The files hold {chars:,} characters; a persona takes at most {settings.max_chars:,}. "
                      "Upload less text.")
    if chars < min_chars:
        raise Refusal(f"The files hold {chars:,} characters; training a persona needs at least {min_chars:,}.")
    return uploads
