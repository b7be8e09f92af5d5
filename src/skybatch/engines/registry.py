"""Execution engines as plugins, and building one from its name and settings.

An engine is an :class:`~skybatch.engines.base.Engine` subclass with a pydantic
``settings_model``, published in the entry-point group ``skybatch.engines`` (``local``
ships with skybatch). The registry is a plain object passed to whoever needs it;
nothing here is global.

Engines are imported when first asked for, not when the registry is made, so a
broken or half-installed engine package only fails the runs that use it (with an
:class:`~skybatch.engines.errors.EngineConfigError` saying which entry point and
why), never ``skybatch run --engine local``. Each class is checked once, when it is
loaded: an Engine subclass implementing every abstract method, whose ``name`` is the
one it is registered under, with a pydantic ``settings_model``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from .base import Engine
from .errors import EngineConfigError, EngineSettingsError

__all__ = [
    "BUILTIN_ENGINES",
    "ENTRY_POINT_GROUP",
    "EngineRegistry",
    "settings_problems",
]

ENTRY_POINT_GROUP = "skybatch.engines"

BUILTIN_ENGINES: dict[str, str] = {"local": "skybatch.engines.local:LocalEngine"}
"""The engines skybatch always has, as entry-point values (used until the group is
installed, e.g. in a source tree that was never ``pip install``-ed)."""


def settings_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """``(dotted field path, message)`` of every error of a settings validation."""
    out = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "<settings>"
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown setting"
        elif kind == "missing":
            message = "missing required setting"
        else:
            message = str(error["msg"])
            value = error.get("input")
            if isinstance(value, str | int | float | bool) or value is None:
                message += f", got {value!r}"
        out.append((path, message))
    return out


class EngineRegistry:
    """Engines by name; each is loaded and checked the first time it is asked for.

    Args:
        engines: ``name -> Engine subclass`` (checked at once) or ``name ->
            EntryPoint`` (loaded and checked on first use); tests pass their own,
            production code uses :meth:`default`.
    """

    def __init__(self, engines: Mapping[str, type[Engine] | EntryPoint]) -> None:
        self._entry_points: dict[str, EntryPoint] = {}
        self._classes: dict[str, type[Engine]] = {}
        for name, item in engines.items():
            if isinstance(item, EntryPoint):
                self._entry_points[name] = item
            else:
                self._classes[name] = _check_engine(name, item, where=f"engine {name!r}")

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> EngineRegistry:
        """Every engine published in the entry-point ``group`` (not imported yet)."""
        return cls(_by_name(list(entry_points(group=group))))

    @classmethod
    def default(cls) -> EngineRegistry:
        """The installed engines, or the built-in ones if the group is not installed."""
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        if not found:
            found = [
                EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
                for name, value in BUILTIN_ENGINES.items()
            ]
        return cls(_by_name(found))

    def names(self) -> list[str]:
        """Names of the registered engines, sorted (nothing is imported)."""
        return sorted({*self._entry_points, *self._classes})

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._entry_points

    def get(self, name: str) -> type[Engine]:
        """The class of engine ``name``, loaded and checked.

        Raises:
            EngineConfigError: no such engine, or its plugin cannot be loaded or is
                not a usable Engine.
        """
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        ep = self._entry_points.get(name)
        if ep is None:
            close = difflib.get_close_matches(name, self.names(), n=1)
            raise EngineConfigError(
                f"unknown engine {name!r}",
                where=f"engine {name!r}",
                hint=(
                    (f"did you mean {close[0]!r}? " if close else "")
                    + "use one of the installed engines: "
                    f"{', '.join(self.names()) or 'none'}, or install the package that "
                    f"provides it (entry-point group {ENTRY_POINT_GROUP})"
                ),
            )
        where = f"entry point {ep.name} = {ep.value} (group {ep.group})"
        try:
            loaded = ep.load()
        except Exception as exc:
            raise EngineConfigError(
                f"cannot load engine {name!r}: {type(exc).__name__}: {exc}",
                where=where,
                hint="fix or reinstall the package that provides this engine, or use "
                f"another one ({', '.join(n for n in self.names() if n != name) or 'none'})",
            ) from exc
        cls = _check_engine(name, loaded, where=where)
        self._classes[name] = cls
        self._entry_points.pop(name, None)
        return cls

    def settings_model(self, name: str) -> type[BaseModel]:
        """The pydantic model of engine ``name``'s settings (help texts, validation)."""
        model: type[BaseModel] = self.get(name).settings_model
        return model

    def parse_settings(
        self, name: str, settings: Mapping[str, Any] | None, *, where: str | None = None
    ) -> BaseModel:
        """Validate ``settings`` of engine ``name`` against its ``settings_model``.

        Args:
            name: The engine.
            settings: The raw settings (from a campaign file or the command line).
            where: Where the settings were given, for the error (default
                ``engine NAME settings``); the first bad field is appended.

        Raises:
            EngineConfigError: no such engine (see :meth:`get`).
            EngineSettingsError: a setting is unknown or invalid; names every field.
        """
        model = self.settings_model(name)
        try:
            return model.model_validate(dict(settings or {}))
        except ValidationError as exc:
            problems = settings_problems(exc)
            base = where or f"engine {name!r} settings"
            fields = list(model.model_fields)
            unknown = [path for path, message in problems if message == "unknown setting"]
            close = difflib.get_close_matches(unknown[0], fields, n=1) if unknown else []
            raise EngineSettingsError(
                name,
                problems,
                where=f"{base}.{problems[0][0]}",
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + f"settings of engine {name!r}: {', '.join(fields) or 'none'}",
            ) from None

    def normalize_settings(self, name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
        """``settings`` validated, as JSON-ready values, with only the fields given.

        What a run stores in its options: defaults stay out (a later skybatch may
        change them), values are the model's (``"4"`` given for an int is ``4``).
        """
        model = self.parse_settings(name, settings)
        dumped: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
        return dumped

    def create(self, name: str, settings: Mapping[str, Any] | None = None) -> Engine:
        """Build engine ``name`` from its raw settings (validated first, see
        :meth:`parse_settings`); the engine's own checks may raise EngineConfigError."""
        cls = self.get(name)
        return cls(self.parse_settings(name, settings))  # type: ignore[call-arg]


def _check_engine(name: str, cls: object, *, where: str) -> type[Engine]:
    """Refuse a plugin that is not a usable Engine class for ``name``."""
    hint = "fix or uninstall the package that provides this engine"
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise EngineConfigError(
            f"engine {name!r} is {cls!r}, not a subclass of skybatch.engines.base.Engine",
            where=where,
            hint=hint,
        )
    declared = getattr(cls, "name", None)
    if declared != name:
        raise EngineConfigError(
            f"{cls.__qualname__} declares name {declared!r}, but is registered as {name!r}",
            where=where,
            hint=hint,
        )
    model = getattr(cls, "settings_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise EngineConfigError(
            f"{cls.__qualname__} has no settings_model (a pydantic BaseModel class)",
            where=where,
            hint=hint,
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise EngineConfigError(
            f"{cls.__qualname__} does not implement {missing}", where=where, hint=hint
        )
    return cls


def _by_name(found: list[EntryPoint]) -> dict[str, type[Engine] | EntryPoint]:
    """Entry points by name; the same name from two different values is refused."""
    out: dict[str, type[Engine] | EntryPoint] = {}
    origin: dict[str, str] = {}
    for ep in found:
        if ep.name in origin and origin[ep.name] != ep.value:
            raise EngineConfigError(
                f"engine {ep.name!r} is provided twice ({origin[ep.name]} and {ep.value})",
                where=f"entry point {ep.name} (group {ep.group})",
                hint="uninstall one of the packages that provide it",
            )
        out[ep.name] = ep
        origin[ep.name] = ep.value
    return out
