"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest

from model.network import CharLSTM
from tests.model.stepping import train_tiny


@pytest.fixture(scope="module")
def trained() -> CharLSTM:
    """A tiny model trained for a moment (see :func:`tests.model.stepping.train_tiny`)."""
    return train_tiny()
