"""charbot: character-level LSTM storytellers behind a Discord persona."""

__version__ = "0.1.0"
