"""Normalization and the fixed character set: what any user text becomes, and the round trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from model.charset import CHARS, VOCAB_SIZE, decode, encode, normalize


def test_charset_is_newline_plus_printable_ascii():
    assert VOCAB_SIZE == 96 == len(CHARS) == len(set(CHARS))
    assert CHARS[0] == "\n"
    assert all(" " <= c <= "~" for c in CHARS[1:])


def test_round_trip_of_normalized_text():
    text = normalize("Once upon a time, 3 bears ate {porridge} at 7:30 -- ~really~!\nThe end.\n").text
    codes = encode(text)
    assert codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < VOCAB_SIZE
    assert decode(codes) == text
    assert decode(codes.tolist()) == text


def test_every_character_round_trips():
    assert decode(encode(CHARS)) == CHARS
    assert encode(CHARS).tolist() == list(range(VOCAB_SIZE))


def test_curly_quotes_dashes_and_accents_are_transliterated():
    norm = normalize("\u201cCaf\u00e9\u201d \u2014 it\u2019s na\u00efve \u2013 \u00c5ngstr\u00f6m")
    assert norm.text == '"Cafe" -- it\'s naive - Angstrom'
    assert norm.dropped == 0


def test_decomposed_accents_are_composed_first():
    assert normalize("e\u0301t\u00e9").text == "ete"


def test_line_ends_and_tabs():
    assert normalize("a\r\nb\rc\nd\te").text == "a\nb\nc\nd e"


def test_control_characters_are_dropped_and_counted():
    norm = normalize("a\x00b\x07c\x1bd\x7fe\x0cf")
    assert norm.text == "abcdef"
    assert norm.dropped == 5


def test_emoji_and_untransliterable_characters_are_dropped_and_counted():
    norm = normalize("hi \U0001f600 there\U0001f44b\ue000!")
    assert norm.text == "hi  there!"
    assert norm.dropped == 3


def test_lone_surrogate_is_dropped_and_counted():
    norm = normalize("a\ud800b")
    assert (norm.text, norm.dropped) == ("ab", 1)


def test_empty_text():
    assert normalize("").text == ""
    assert normalize("").dropped == 0
    assert encode("").numel() == 0
    assert decode([]) == ""


def test_encode_refuses_text_that_was_not_normalized():
    with pytest.raises(ValueError, match="not normalized"):
        encode("caf\u00e9")
    with pytest.raises(ValueError, match="not normalized"):
        encode("a\tb")


def test_decode_refuses_codes_outside_the_set():
    with pytest.raises(ValueError, match="0..95"):
        decode([3, VOCAB_SIZE])
    with pytest.raises(ValueError, match="0..95"):
        decode(torch.tensor([-1]))


@given(st.text(alphabet=st.characters(), max_size=200))
def test_normalize_always_lands_inside_the_set(raw):
    norm = normalize(raw)
    assert set(norm.text) <= set(CHARS)
    assert norm.dropped >= 0
    assert decode(encode(norm.text)) == norm.text
    assert normalize(norm.text).text == norm.text  # normalizing twice changes nothing


@given(st.text(alphabet=st.sampled_from(CHARS), max_size=200))
def test_text_already_in_the_set_is_unchanged(text):
    assert normalize(text).text == text
    assert normalize(text).dropped == 0
