"""Bot settings: one clear line for a missing or malformed token, and the token never shown."""

from __future__ import annotations

import io
import logging
import os
import pickle
import re

import pytest

from bot.cli import main
from bot.config import ConfigError, Limits, Secret, env_number, load_config, read_env, setup_logging

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_missing_token_says_what_to_do():
    with pytest.raises(ConfigError) as err:
        load_config(None, {})
    assert "DISCORD_TOKEN is not set" in str(err.value) and ".env" in str(err.value)


@pytest.mark.parametrize("bad", ["abc", "not a token at all", "a.b.c", TOKEN.replace(".", "")])
def test_malformed_token_is_refused_without_quoting_it(bad):
    with pytest.raises(ConfigError) as err:
        load_config(None, {"DISCORD_TOKEN": bad})
    assert "does not look like a bot token" in str(err.value)
    assert bad not in str(err.value)


def test_bot_prefix_and_quotes_are_explained_or_tolerated():
    with pytest.raises(ConfigError, match="without the 'Bot ' prefix"):
        load_config(None, {"DISCORD_TOKEN": f"Bot {TOKEN}"})
    assert load_config(None, {"DISCORD_TOKEN": f' "{TOKEN}" '}).token.reveal() == TOKEN


def test_token_never_appears_in_repr_str_or_pickle():
    config = load_config(None, {"DISCORD_TOKEN": TOKEN})
    assert config.token.reveal() == TOKEN
    for shown in (repr(config), str(config), repr(config.token), f"{config.token}", str([config])):
        assert TOKEN not in shown
    assert "token=set" in repr(config)
    with pytest.raises(TypeError):
        pickle.dumps(config.token)


def test_token_is_redacted_from_every_log_line():
    config = load_config(None, {"DISCORD_TOKEN": TOKEN})
    stream = io.StringIO()
    handler = setup_logging(config, stream)
    try:
        logging.getLogger("some.library").warning("connecting with Authorization: Bot %s", TOKEN)
        try:
            raise RuntimeError(f"bad header {TOKEN}")
        except RuntimeError:
            logging.getLogger("some.library").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "connecting with Authorization: Bot [redacted]" in out
    assert TOKEN not in out


def test_env_file_is_read_and_the_environment_wins(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"DISCORD_TOKEN={TOKEN}\nCHARBOT_DB=from-file.db\nCHARBOT_ADMINS=1, 2\nCHARBOT_DEV_GUILD=42\n"
                   "CHARBOT_CORPORA=tale,faq\nCHARBOT_COOLDOWN=2.5\n")
    config = load_config(env, {"CHARBOT_DB": "from-env.db"})
    assert str(config.database) == "from-env.db"
    assert config.admin_ids == {1, 2}
    assert config.dev_guild_id == 42
    assert config.corpora == ("tale", "faq")
    assert config.limits.cooldown_s == 2.5


def test_reading_env_file_does_not_export_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    env = tmp_path / ".env"
    env.write_text(f"DISCORD_TOKEN={TOKEN}\n")
    import os

    load_config(env)
    assert "DISCORD_TOKEN" not in os.environ


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHARBOT_DEV_GUILD", "abc", "CHARBOT_DEV_GUILD must be a whole number"),
        ("CHARBOT_ADMINS", "12,bob", "comma-separated Discord user IDs"),
        ("CHARBOT_CORPORA", "tale,poems", "unknown corpus poems"),
        ("CHARBOT_COOLDOWN", "soon", "CHARBOT_COOLDOWN must be a number"),
        ("CHARBOT_MAX_LENGTH", "5000", "at most 1900"),
        ("CHARBOT_LOG_LEVEL", "LOUD", "CHARBOT_LOG_LEVEL"),
    ],
)
def test_malformed_settings_name_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"DISCORD_TOKEN": TOKEN, name: value})


def test_endpoint_overrides_only_accept_this_machine():
    config = load_config(None, {"DISCORD_TOKEN": TOKEN, "CHARBOT_DISCORD_API": "http://127.0.0.1:5000/api/v10/",
                                "CHARBOT_DISCORD_GATEWAY": "ws://localhost:5000/gateway"})
    assert config.discord_api == "http://127.0.0.1:5000/api/v10"
    assert config.discord_gateway == "ws://localhost:5000/gateway"
    with pytest.raises(ConfigError, match="only point at this machine"):
        load_config(None, {"DISCORD_TOKEN": TOKEN, "CHARBOT_DISCORD_API": "https://evil.example/api/v10"})
    with pytest.raises(ConfigError, match="ws/wss URL"):
        load_config(None, {"DISCORD_TOKEN": TOKEN, "CHARBOT_DISCORD_GATEWAY": "http://127.0.0.1:1/gateway"})


def test_local_commands_need_no_token():
    assert load_config(None, {}, require_token=False).token is None


def test_limits_are_checked():
    with pytest.raises(ConfigError, match="over the maximum"):
        Limits(default_length=600, max_length=500)


def test_secret_equality_does_not_leak():
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


@pytest.mark.parametrize("command", ["run", "sync"])
def test_cli_prints_one_line_for_a_bad_token(command, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    env = tmp_path / ".env"
    env.write_text("DISCORD_TOKEN=oops-this-is-wrong\n")
    assert main([command, "--env-file", str(env)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "does not look like a bot token" in err and "oops-this-is-wrong" not in err


def test_cli_prints_one_line_for_a_missing_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("charbot run: error: DISCORD_TOKEN is not set: put DISCORD_TOKEN=... in .env (copy it "
                           "from https://discord.com/developers/applications > your app > Bot > Reset Token)")


def test_env_example_documents_every_setting_and_loads_as_the_defaults():
    from pathlib import Path

    from bot.config import BotConfig

    example = Path(__file__).resolve().parents[2] / ".env.example"
    lines = example.read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#") or lines[i - 2].startswith("#"), f"{line!r} has no comment"
    root = example.parent
    source = "".join(p.read_text() for pkg in ("bot", "corpora", "model") for p in (root / pkg).rglob("*.py"))
    for name in names:
        assert f'"{name}"' in source, f"{name} is documented but never read"
    read = set(re.findall(r'"((?:CHARBOT|DISCORD)_[A-Z_]+)"', source)) - {"CHARBOT_DATA_DIR"}  # an environment path
    assert read <= set(names), f"settings read but not in .env.example: {sorted(read - set(names))}"
    loaded = load_config(example, {}, require_token=False)
    assert repr(loaded) == repr(BotConfig(corpora=loaded.corpora))
    from bot.jobs.settings import load_settings

    db = root / "charbot.db"
    assert load_settings(db, example, {}) == load_settings(db, None, {})
    from bot.personas.settings import PersonaSettings, load_persona_settings

    assert load_persona_settings(example, {}) == load_persona_settings(None, {}) == PersonaSettings()


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


def test_shards_are_off_by_default_and_set_by_count_ids_or_auto():
    plain = load_config(None, {}, require_token=False)
    assert plain.shard_count is None and plain.shard_ids is None and not plain.sharded
    auto = load_config(None, {"CHARBOT_SHARD_COUNT": " Auto "}, require_token=False)
    assert auto.shard_count == "auto" and auto.sharded
    some = load_config(None, {"CHARBOT_SHARD_COUNT": "4", "CHARBOT_SHARD_IDS": "3, 1,1"}, require_token=False)
    assert some.shard_count == 4 and some.shard_ids == (1, 3)


@pytest.mark.parametrize(("count", "ids", "says"), [
    ("0", "", "at least 1, or auto"),
    ("many", "", "at least 1, or auto"),
    ("", "0,1", "need a shard count that is a number"),
    ("auto", "0", "need a shard count that is a number"),
    ("2", "2", "run from 0 to 1"),
    ("2", "0;1", "comma-separated"),
])
def test_shard_settings_that_cannot_work_are_one_line_each(count, ids, says):
    with pytest.raises(ConfigError, match=says):
        load_config(None, {"CHARBOT_SHARD_COUNT": count, "CHARBOT_SHARD_IDS": ids}, require_token=False)


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_a_metrics_port_must_be_a_tcp_port(port):
    with pytest.raises(ConfigError, match="CHARBOT_METRICS_PORT"):
        load_config(None, {"CHARBOT_METRICS_PORT": port}, require_token=False)


def test_run_flags_for_shards_win_over_the_environment_and_are_checked(monkeypatch, capsys):
    import bot.discord_app.serve

    seen = []

    async def fake_serve(config, models=None):
        seen.append(config)

    monkeypatch.setattr(bot.discord_app.serve, "serve", fake_serve)
    monkeypatch.setattr("bot.config.setup_logging", lambda config: None)  # the root logger stays as the tests have it
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("CHARBOT_SHARD_COUNT", "2")
    assert main(["run", "--env-file", "/nonexistent/.env", "--shard-count", "4", "--shard-ids", "2,3"]) == 0
    assert (seen[0].shard_count, seen[0].shard_ids) == (4, (2, 3))
    assert main(["run", "--env-file", "/nonexistent/.env", "--shard-ids", "2"]) == 2
    assert "shard ids run from 0 to 1" in capsys.readouterr().err


def test_a_postgresql_database_needs_shared_storage_for_versions_and_its_password_is_never_shown():
    url = "postgresql://charbot:s3cret-pass@db.internal:5432/charbot"
    with pytest.raises(ConfigError, match="CHARBOT_STATE_DIR"):
        load_config(None, {"CHARBOT_DB": url}, require_token=False)
    config = load_config(None, {"CHARBOT_DB": url, "CHARBOT_STATE_DIR": "/srv/charbot"}, require_token=False)
    assert config.database == url  # not a Path: "postgresql://" would lose a slash
    assert "s3cret-pass" not in repr(config) and "charbot:***@db.internal" in repr(config)
    assert load_config(None, {"CHARBOT_DB": "~/bot.db"}, require_token=False).database.name == "bot.db"


@pytest.mark.parametrize("value", ["auto", "fp32", "bf16", "int8", " INT8 ", ""])
def test_every_engine_precision_is_accepted(value):
    assert load_config(None, {"CHARBOT_PRECISION": value}, require_token=False).precision == (value.strip().lower()
                                                                                                or "auto")


@pytest.mark.parametrize("value", ["fp16", "int4", "fast"])
def test_an_unknown_precision_names_the_choices(value):
    with pytest.raises(ConfigError, match="CHARBOT_PRECISION must be fp32, bf16, int8 or auto"):
        load_config(None, {"CHARBOT_PRECISION": value}, require_token=False)


def test_the_precision_cache_lives_in_the_state_folder(tmp_path):
    from pathlib import Path

    beside = load_config(None, {"CHARBOT_DB": str(tmp_path / "db" / "bot.db")}, require_token=False)
    assert beside.precision_cache == tmp_path / "db" / "charbot-state" / "precision.json"
    shared = load_config(None, {"CHARBOT_DB": "postgresql://u:p@h/db", "CHARBOT_STATE_DIR": str(tmp_path / "nfs")},
                         require_token=False)
    assert shared.precision_cache == tmp_path / "nfs" / "precision.json"
    from bot.jobs.settings import load_settings

    assert load_settings(tmp_path / "db" / "bot.db", None, {}).state_dir == beside.precision_cache.parent
    assert Path(shared.state_dir) == tmp_path / "nfs"
