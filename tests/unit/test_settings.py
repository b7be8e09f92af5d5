"""Settings: environment names derived from the field path, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skybatch.errors import ConfigError
from skybatch.settings import Settings, env_names, load_settings


def test_defaults(_isolated_skybatch_env: Path) -> None:
    settings = load_settings()
    assert settings.home == _isolated_skybatch_env
    assert settings.db.url is None
    assert settings.db.echo is False
    assert settings.db.pool_pre_ping is True
    assert settings.log.level == "INFO"
    assert settings.log.json_format is False
    assert settings.database_url() == f"sqlite:///{_isolated_skybatch_env}/state.sqlite3"


def test_default_home_is_under_the_user_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SKYBATCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings().home == tmp_path / ".skybatch"


def test_relative_home_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKYBATCH_HOME", "relative/home")
    assert load_settings().home == tmp_path / "relative" / "home"


def test_env_names_follow_the_field_path() -> None:
    names = env_names()
    assert {
        "SKYBATCH_HOME",
        "SKYBATCH_DB",
        "SKYBATCH_DB__URL",
        "SKYBATCH_DB__ECHO",
        "SKYBATCH_DB__POOL_PRE_PING",
        "SKYBATCH_DB__BUSY_TIMEOUT_S",
        "SKYBATCH_DB__LOCK_WAIT_S",
        "SKYBATCH_LOG",
        "SKYBATCH_LOG__LEVEL",
        "SKYBATCH_LOG__JSON_FORMAT",
    } == set(names)


def test_env_sets_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB__URL", "postgresql://u@db.example/skybatch")
    monkeypatch.setenv("SKYBATCH_DB__ECHO", "yes")
    monkeypatch.setenv("SKYBATCH_LOG__LEVEL", "debug")
    monkeypatch.setenv("SKYBATCH_LOG__JSON_FORMAT", "1")
    settings = load_settings()
    assert settings.db.url == "postgresql://u@db.example/skybatch"
    assert settings.database_url() == "postgresql://u@db.example/skybatch"
    assert settings.db.echo is True
    assert settings.log.level == "DEBUG"
    assert settings.log.json_format is True


def test_group_variable_takes_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB", '{"echo": true}')
    assert load_settings().db.echo is True


def test_empty_url_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB__URL", "")
    assert load_settings().database_url().startswith("sqlite:///")


def test_overrides_win_and_merge_with_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYBATCH_DB__URL", "sqlite:///from-env.sqlite3")
    monkeypatch.setenv("SKYBATCH_DB__ECHO", "true")
    settings = load_settings(home=tmp_path, db={"url": "sqlite:///override.sqlite3"})
    assert settings.home == tmp_path
    assert settings.db.url == "sqlite:///override.sqlite3"
    assert settings.db.echo is True  # from the environment, merged


def test_none_overrides_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_LOG__LEVEL", "WARNING")
    settings = load_settings(home=None, db={"url": None}, log={"level": None})
    assert settings.log.level == "WARNING"
    assert settings.db.url is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SKYBATCH_DB__ECHO", "maybe", "boolean"),
        ("SKYBATCH_DB__POOL_PRE_PING", "often", "boolean"),
        ("SKYBATCH_LOG__LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR"),
        ("SKYBATCH_LOG__JSON_FORMAT", "jsonish", "boolean"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.where == name
    text = str(info.value)
    assert name in text
    assert repr(value) in text
    assert expected in text


def test_several_bad_values_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB__ECHO", "maybe")
    monkeypatch.setenv("SKYBATCH_LOG__LEVEL", "LOUD")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "SKYBATCH_DB__ECHO" in str(info.value)
    assert "SKYBATCH_LOG__LEVEL" in str(info.value)


def test_bad_value_inside_json_group_names_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB", '{"echo": "maybe"}')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.where == "SKYBATCH_DB"
    assert "db.echo" in str(info.value)


def test_unparsable_json_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB", "not json")
    with pytest.raises(ConfigError, match="SKYBATCH_DB"):
        load_settings()


def test_bad_override_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(log={"level": "LOUD"})
    assert info.value.where == "argument log.level"


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(colour="blue")


def test_unknown_variable_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_DB__URLL", "sqlite:///x.sqlite3")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.where == "SKYBATCH_DB__URLL"
    assert "SKYBATCH_DB__URLL" in str(info.value)
    assert info.value.hint is not None
    assert "did you mean SKYBATCH_DB__URL?" in info.value.hint
    assert "SKYBATCH_LOG__LEVEL" in info.value.hint  # lists the valid names


def test_test_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBATCH_TEST_SOMETHING", "whatever")
    load_settings()


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.home = Path("/elsewhere")
    assert isinstance(settings, Settings)
