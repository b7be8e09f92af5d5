"""skybatch settings: one pydantic-settings tree, environment names derived from the path.

``Settings().db.url`` is read from ``SKYBATCH_DB__URL``, ``Settings().log.level`` from
``SKYBATCH_LOG__LEVEL`` and ``Settings().home`` from ``SKYBATCH_HOME``. Build settings
with :func:`load_settings`, which turns every problem into a :class:`ConfigError`
naming the offending variable, and pass the object on explicitly.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from skybatch.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "NESTED_DELIMITER",
    "TEST_ENV_PREFIX",
    "DatabaseSettings",
    "LogSettings",
    "Settings",
    "env_names",
    "load_settings",
]

ENV_PREFIX = "SKYBATCH_"
NESTED_DELIMITER = "__"
TEST_ENV_PREFIX = "SKYBATCH_TEST_"
"""Environment variables with this prefix belong to the test suite, not to settings."""
FAULT_ENV_PREFIX = "SKYBATCH_FAULT_"
"""Fault-injection variables (:mod:`skybatch.faults`), not settings either."""

DEFAULT_DATABASE_FILENAME = "state.sqlite3"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class DatabaseSettings(BaseModel):
    """skybatch's own state database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the state database, e.g. "
            "postgresql+psycopg2://user@host/skybatch; unset means an embedded SQLite "
            f"file {{home}}/{DEFAULT_DATABASE_FILENAME}"
        ),
    )
    echo: bool = Field(default=False, description="log every SQL statement")
    pool_pre_ping: bool = Field(
        default=True, description="test pooled connections before use (survives restarts)"
    )
    busy_timeout_s: float = Field(
        default=30.0, gt=0, description="SQLite: seconds one try waits for another's write lock"
    )
    lock_wait_s: float = Field(
        default=600.0,
        ge=0,
        description="SQLite: seconds a state write keeps trying, with backoff, in all",
    )

    @field_validator("url", mode="before")
    @classmethod
    def _empty_url_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value


class LogSettings(BaseModel):
    """Logging of the skybatch processes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: LogLevel = Field(default="INFO", description="minimum level of log records shown")
    json_format: bool = Field(
        default=False, description="write JSON lines instead of human-readable logs"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        # Accept "debug"; leave invalid input untouched so errors quote what was given.
        if isinstance(value, str) and value.strip().upper() in typing.get_args(LogLevel):
            return value.strip().upper()
        return value


def _default_home() -> Path:
    return Path("~/.skybatch").expanduser()


class Settings(BaseSettings):
    """All skybatch settings; see the module docstring for the environment names."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(
        default_factory=_default_home,
        description="skybatch home directory (embedded database, caches)",
    )
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def database_url(self) -> str:
        """The state database URL: ``db.url`` or the embedded SQLite file under home."""
        if self.db.url is not None:
            return self.db.url
        return f"sqlite:///{self.home / DEFAULT_DATABASE_FILENAME}"


def _field_paths(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield ``(path, annotation)`` for every field and nested field of ``model``."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path, field.annotation
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _field_paths(annotation, path)


def _env_name(path: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part) for part in path).upper()


def env_names() -> list[str]:
    """Every environment variable that maps to a setting, sorted."""
    return sorted(_env_name(path) for path, _ in _field_paths(Settings))


def _describe_type(annotation: Any) -> str:
    """A short human description of what a setting of type ``annotation`` accepts."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_describe_type(arg) for arg in args)
    if annotation is bool:
        return "a boolean (true/false, yes/no, 1/0)"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "a filesystem path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a JSON object with keys " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", str(annotation))


def _lookup(data: Mapping[str, Any], path: tuple[str | int, ...]) -> tuple[bool, Any]:
    current: Any = data
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _find_env_source(path: tuple[str | int, ...], environ: Mapping[str, str]) -> str | None:
    """The environment variable that supplied ``path`` (itself or an enclosing object)."""
    upper_environ = {key.upper() for key in environ}
    for length in range(len(path), 0, -1):
        name = _env_name(path[:length])
        if name in upper_environ:
            return name
    return None


def _check_unknown_env(environ: Mapping[str, str]) -> None:
    valid = env_names()
    valid_set = set(valid)
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(ENV_PREFIX) or name.startswith((TEST_ENV_PREFIX, FAULT_ENV_PREFIX)):
            continue
        if name in valid_set:
            continue
        close = difflib.get_close_matches(name, valid, n=1)
        suggestion = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"unknown skybatch setting {key}",
            where=key,
            hint=(
                f"{suggestion}Unset it or use one of: {', '.join(valid)} "
                f"(variables starting with {TEST_ENV_PREFIX} are reserved for tests)"
            ),
        )


def _config_error_from_validation(
    exc: ValidationError, overrides: Mapping[str, Any], environ: Mapping[str, str]
) -> ConfigError:
    annotations = dict(_field_paths(Settings))
    problems: list[tuple[str, str, str]] = []  # (what, where, expected)
    for error in exc.errors():
        loc = tuple(error["loc"])
        field_name = ".".join(str(part) for part in loc)
        from_override, _ = _lookup(overrides, loc)
        env_source = None if from_override else _find_env_source(loc, environ)
        where = env_source or f"argument {field_name}"
        if error["type"] == "extra_forbidden":
            what = f"unknown setting {field_name}"
            expected = "one of the settings " + ", ".join(env_names())
        else:
            what = f"invalid value {error['input']!r} for setting {field_name}"
            annotation = annotations.get(tuple(str(part) for part in loc))
            expected = _describe_type(annotation) if annotation is not None else error["msg"]
        problems.append((what, where, expected))
    if len(problems) == 1:
        what, where, expected = problems[0]
        return ConfigError(what, where=where, hint=f"Expected {expected}; fix or unset {where}")
    return ConfigError(
        "invalid skybatch settings: "
        + "; ".join(
            f"{what} (at {where}), expected {expected}" for what, where, expected in problems
        ),
        where=", ".join(dict.fromkeys(where for _, where, _ in problems)),
        hint="Fix or unset these settings",
    )


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from ``SKYBATCH_*`` environment variables and ``overrides``.

    ``overrides`` take precedence over the environment and follow the field tree
    (``home=Path(...)``, ``db={"url": ...}``); nested dictionaries are merged with the
    environment. ``None`` values are dropped so callers can pass unset CLI options.

    Raises:
        ConfigError: a variable has a bad value or an unknown ``SKYBATCH_*`` name.
    """
    cleaned = _drop_none(overrides)
    environ = dict(os.environ)
    _check_unknown_env(environ)
    try:
        return Settings(**cleaned)
    except ValidationError as exc:
        raise _config_error_from_validation(exc, cleaned, environ) from exc
    except SettingsError as exc:
        # Raised by pydantic-settings when a JSON-valued variable (SKYBATCH_DB) is not JSON.
        cause = exc.__cause__
        raise ConfigError(
            f"cannot parse skybatch settings from the environment: {exc}"
            + (f" ({cause})" if cause else ""),
            where=", ".join(name for name in env_names() if name in {k.upper() for k in environ})
            or None,
            hint="Variables naming a group of settings (e.g. SKYBATCH_DB) take a JSON object",
        ) from exc


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        result[key] = _drop_none(value) if isinstance(value, Mapping) else value
    return result
