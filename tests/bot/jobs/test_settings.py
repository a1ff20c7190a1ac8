"""Fine-tuning settings: safe defaults beside the database, one-line errors for bad values."""

from __future__ import annotations

import pytest

from bot.jobs.settings import SettingsError, load_settings


def test_defaults_keep_versions_beside_the_database_and_the_job_gentle(tmp_path):
    s = load_settings(tmp_path / "charbot.db", env_file=None, environ={})
    assert s.state_dir == tmp_path / "charbot-state"
    assert s.jobs_dir == tmp_path / "charbot-state" / "finetune-jobs"
    assert (s.threads, s.nice, s.max_running, s.keep_versions, s.min_chars) == (1, 10, 1, 5, 2000)
    assert (s.replay, s.max_corpus_rise) == (0.75, 0.05)  # learn without forgetting, and check it


def test_environment_overrides(tmp_path):
    env = {"CHARBOT_STATE_DIR": str(tmp_path / "elsewhere"), "CHARBOT_KEEP_VERSIONS": "2",
           "CHARBOT_FINETUNE_MINUTES": "3", "CHARBOT_FINETUNE_THREADS": "2", "CHARBOT_FINETUNE_NICE": "0"}
    s = load_settings(tmp_path / "charbot.db", env_file=None, environ=env)
    assert (s.state_dir, s.keep_versions, s.default_minutes, s.threads, s.nice) == (tmp_path / "elsewhere", 2, 3.0,
                                                                                    2, 0)


@pytest.mark.parametrize("name, value, message", [
    ("CHARBOT_KEEP_VERSIONS", "0", "at least 1"),
    ("CHARBOT_KEEP_VERSIONS", "many", "must be a whole number"),
    ("CHARBOT_FINETUNE_NICE", "40", "from 0 to 19"),
    ("CHARBOT_FINETUNE_MINUTES", "90", "default <= maximum"),
    ("CHARBOT_FINETUNE_MIN_CHARS", "10", "at least 200"),
    ("CHARBOT_FINETUNE_REPLAY", "1.5", "from 0 \\(off\\) to 0.9"),
    ("CHARBOT_FINETUNE_MAX_CORPUS_RISE", "-0.1", "0 or more"),
    ("CHARBOT_FINETUNE_MAX_CORPUS_RISE", "a lot", "must be a number"),
])
def test_bad_values_are_named(tmp_path, name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path / "charbot.db", env_file=None, environ={name: value})
