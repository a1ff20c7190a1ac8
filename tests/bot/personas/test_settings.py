"""The persona bounds from .env and the environment: read by their full names, checked with one-line errors."""

from __future__ import annotations

import pytest

from bot.personas.settings import PersonaSettings, PersonaSettingsError, load_persona_settings


def test_each_bound_is_read_from_its_setting_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("CHARBOT_PERSONA_MAX_PER_SERVER=2\nCHARBOT_PERSONA_MAX_DISK_MB=50\n")
    got = load_persona_settings(env_file, {"CHARBOT_PERSONA_MAX_PER_SERVER": "3", "CHARBOT_PERSONA_MAX_FILES": "1",
                                           "CHARBOT_PERSONA_MAX_CHARS": "5000", "CHARBOT_PERSONA_MAX_LOADED": "2",
                                           "CHARBOT_PERSONA_MAX_FILE_BYTES": "1000"})
    assert got == PersonaSettings(max_per_server=3, max_files=1, max_chars=5000, max_file_bytes=1000, max_loaded=2,
                                  max_disk_mb=50.0)
    assert load_persona_settings(None, {}) == PersonaSettings()


@pytest.mark.parametrize("name, value, words", [
    ("CHARBOT_PERSONA_MAX_FILES", "0", "CHARBOT_PERSONA_MAX_FILES must be at least 1; got 0"),
    ("CHARBOT_PERSONA_MAX_CHARS", "100", "CHARBOT_PERSONA_MAX_CHARS must be at least 2000; got 100"),
    ("CHARBOT_PERSONA_MAX_LOADED", "many", "CHARBOT_PERSONA_MAX_LOADED"),
])
def test_a_bad_bound_is_one_error_naming_it(name, value, words):
    with pytest.raises(PersonaSettingsError, match=words):
        load_persona_settings(None, {name: value})


def test_the_bounds_in_words_for_help():
    assert PersonaSettings().lines() == [
        "at most 5 personas per server, 200 MB of checkpoints per server",
        "at most 5 files per persona, 2 MB each, 300,000 characters in all",
        "8 personas loaded at once per bot process (others load on demand)",
    ]
