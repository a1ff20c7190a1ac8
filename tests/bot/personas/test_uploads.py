"""Checking uploaded files: every bad upload is refused naming the file and the limit, good ones give texts."""

from __future__ import annotations

import pytest

from bot.core.refusals import Refusal
from bot.personas.settings import PersonaSettings
from bot.personas.uploads import File, check_uploads, decode
from bot.store.personas import Upload

SETTINGS = PersonaSettings(max_files=3, max_chars=5_000, max_file_bytes=10_000)
LINE = "The ferry leaves the north pier at nine, and the harbour master rings the bell twice.\n"
TEXT = LINE * 30  # 2,580 characters: enough to train on, under the bounds


def good(name: str = "rules.txt", text: str = TEXT) -> File:
    return File(name, text.encode())


def refused(files: list[File], settings: PersonaSettings = SETTINGS, min_chars: int = 2_000) -> str:
    with pytest.raises(Refusal) as caught:
        check_uploads(files, settings, min_chars)
    assert caught.value.kind == "invalid"
    return caught.value.message


def test_good_files_give_their_names_and_texts_in_order():
    got = check_uploads([good("a.txt", TEXT[:1500]), good("notes.MD", TEXT[1500:])], SETTINGS, 2_000)
    assert got == [Upload("a.txt", TEXT[:1500]), Upload("notes.MD", TEXT[1500:])]


def test_a_byte_order_mark_and_windows_line_ends_are_taken_off():
    data = b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode()
    (got,) = check_uploads([File("win.txt", data)], SETTINGS)
    assert got.text == TEXT and "\r" not in got.text and not got.text.startswith("\ufeff")
    assert decode(File("mac.txt", b"one\rtwo\r"), SETTINGS).text == "one\ntwo\n"  # old Mac line ends too


def test_non_ascii_text_is_kept_as_written():
    text = "Café « crème » — naïve façade.\n" * 90
    assert check_uploads([good("fr.txt", text)], SETTINGS)[0].text == text


@pytest.mark.parametrize("data, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 50, "`rules.txt` looks like a binary file, not text"),
    (b"PK\x03\x04\x14\x00\x06\x00" + TEXT.encode(), "looks like a binary file"),
    ("Caf\u00e9 au lait\n".encode("latin-1") * 200, "`rules.txt` is not UTF-8 text (a byte at position 3 is not)"),
    (TEXT.encode("utf-16"), "`rules.txt` is UTF-16 text, not UTF-8; save it as UTF-8"),
    (b"", "`rules.txt` is empty."),
    (b" \n\t\r\n  ", "`rules.txt` is empty."),
    (b"\xef\xbb\xbf", "`rules.txt` has no letters or digits I can read."),
])
def test_a_bad_file_is_refused_naming_it_and_what_is_wrong(data, words):
    assert words in refused([File("rules.txt", data)])


def test_a_file_that_is_not_txt_or_md_is_refused_before_its_bytes_are_read():
    assert "`rules.pdf` is not a .txt or .md file" in refused([File("rules.pdf", TEXT.encode())])
    assert "not a .txt or .md file" in refused([File("rules", TEXT.encode())])


def test_a_file_too_big_is_refused_with_its_size_and_the_limit():
    assert "the limit is 0.01 MB per file" in refused([File("big.txt", b"a" * 10_001)])
    message = refused([File("big.txt", b"a" * 2_500_000)], PersonaSettings())
    assert message == "`big.txt` is 2.5 MB; the limit is 2 MB per file."


def test_too_many_files_or_none_is_refused_with_the_limit():
    assert refused([good(f"{i}.txt", TEXT[:900]) for i in range(4)]) == (
        "That is 4 files; a persona takes at most 3. Join some of them.")
    assert refused([]) == "Attach at least one .txt or .md file with the persona's text."


def test_the_same_file_name_twice_is_refused():
    assert "Two files have the same name" in refused([good("a.txt", TEXT[:1500]), good("a.txt", TEXT[1500:])])


def test_too_much_text_in_all_is_refused_with_the_count_and_the_limit():
    message = refused([good("a.txt", TEXT), good("b.txt", TEXT)])
    assert message == "The files hold 5,160 characters; a persona takes at most 5,000. Upload less text."


def test_too_little_text_is_refused_with_the_count_and_what_training_needs():
    message = refused([good("a.txt", LINE * 10)])
    assert message == "The files hold 860 characters; training a persona needs at least 2,000."
    assert check_uploads([good("a.txt", LINE * 10)], SETTINGS, min_chars=800)  # the fine-tune's own minimum


def test_characters_are_counted_as_the_model_reads_them():
    """Only what the model's character set keeps counts: emoji and control characters do not."""
    padded = "\U0001F600" * 2000 + TEXT[:1900]
    assert "The files hold 1,900 characters" in refused([good("a.txt", padded)])
