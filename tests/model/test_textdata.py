"""A training text: read as UTF-8, normalized once, split into training and held-out parts."""

from __future__ import annotations

import hashlib

import pytest
import torch

from model.charset import encode
from model.textdata import TextData


def test_from_file_normalizes_and_records_the_raw_checksum(tmp_path):
    raw = "\ufeffCaf\u00e9 \u201cq\u201d\r\nline two\t\U0001f600\n".encode()
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    data = TextData.from_file(path)
    assert data.name == "t.txt"
    assert data.text == 'Cafe "q"\nline two \n'
    assert data.dropped == 1
    assert data.source_sha256 == hashlib.sha256(raw).hexdigest()
    assert data.text_sha256 == hashlib.sha256(data.text.encode()).hexdigest()
    assert torch.equal(data.codes(), encode(data.text))


def test_split_keeps_the_tail_for_validation():
    data = TextData.from_text("x", "abcdefghij" * 10)
    train, val = data.split(0.1)
    assert len(train) == 90 and len(val) == 10
    assert torch.equal(torch.cat([train, val]), data.codes())
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.split(0.0)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        TextData.from_file(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        TextData.from_file(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8 text \\(bad byte at offset 3\\)"):
        TextData.from_file(bad)
