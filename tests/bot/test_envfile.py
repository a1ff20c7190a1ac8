from __future__ import annotations

import os

import pytest

from bot.envfile import env_number, read_env


def test_the_environment_wins_over_the_file_and_the_file_does_not_leak_into_os_environ(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("CHARBOT_A=1\nCHARBOT_B=file\n")
    monkeypatch.delenv("CHARBOT_A", raising=False)
    env = read_env(env_file, {"CHARBOT_B": "process"})
    assert env["CHARBOT_A"] == "1" and env["CHARBOT_B"] == "process"
    assert "CHARBOT_A" not in os.environ
    assert read_env(tmp_path / "missing.env", {}) == {}


class Custom(ValueError):
    pass


def test_numbers_default_when_blank_and_bad_ones_name_the_variable_with_the_callers_error():
    env = {"N": " 12 ", "F": "0.5", "BLANK": "  ", "BAD": "twelve"}
    assert env_number(env, "N", 3, int) == 12
    assert env_number(env, "F", 1.0) == 0.5
    assert env_number(env, "BLANK", 7, int) == 7
    assert env_number(env, "UNSET", None, int) is None
    with pytest.raises(Custom, match="BAD must be a whole number, got 'twelve'"):
        env_number(env, "BAD", 1, int, Custom)
    with pytest.raises(Custom, match="F must be a whole number"):
        env_number(env, "F", 1, int, Custom)
