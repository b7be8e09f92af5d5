"""Endpoint kinds and the registry that builds endpoints from configuration.

Endpoint kinds are plugins: each is an :class:`~.base.Endpoint` subclass with a
``kind`` and a pydantic ``Settings`` model, published in the entry-point group
``skybatch.endpoints`` (``archive`` and ``site`` ship with skybatch). The registry is
a plain object passed to whoever needs it; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from skybatch.backbone.endpoints.base import Endpoint
from skybatch.errors import ConfigError

__all__ = ["BUILTIN_KINDS", "ENTRY_POINT_GROUP", "EndpointRegistry", "parse_settings"]

ENTRY_POINT_GROUP = "skybatch.endpoints"

BUILTIN_KINDS: dict[str, str] = {
    "archive": "skybatch.backbone.endpoints.archive:ArchiveEndpoint",
    "site": "skybatch.backbone.endpoints.site:SiteCacheEndpoint",
}
"""The kinds skybatch ships, as entry-point values (used until the group is installed)."""

M = TypeVar("M", bound=BaseModel)


def parse_settings(model: type[M], endpoint: str, settings: Mapping[str, Any]) -> M:
    """Validate ``settings`` of ``endpoint``; problems become a ConfigError naming the field."""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '<settings>'}: {error['msg']}"
            for error in exc.errors()
        ]
        first_field = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise ConfigError(
            f"invalid settings for endpoint {endpoint!r}: {'; '.join(problems)}",
            where=f"endpoint {endpoint!r} settings" + (f".{first_field}" if first_field else ""),
            hint=f"Allowed settings: {', '.join(model.model_fields) or 'none'}",
        ) from None


class EndpointRegistry:
    """Endpoint kinds by name, each checked when it is registered.

    Args:
        kinds: ``kind -> Endpoint subclass``; tests pass their own, production code
            uses :meth:`default`.
    """

    def __init__(self, kinds: Mapping[str, type[Endpoint]]) -> None:
        self._kinds: dict[str, type[Endpoint]] = {}
        self._settings: dict[str, type[BaseModel]] = {}
        for kind, cls in kinds.items():
            self._settings[kind] = _check_kind(kind, cls, where=f"endpoint kind {kind!r}")
            self._kinds[kind] = cls

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> EndpointRegistry:
        """Load every kind published in the entry-point ``group``."""
        return cls(_load_entry_points(list(entry_points(group=group))))

    @classmethod
    def default(cls) -> EndpointRegistry:
        """Installed kinds, or the built-in ones if the entry points are not installed yet."""
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        if not found:
            found = [
                EntryPoint(name=kind, value=value, group=ENTRY_POINT_GROUP)
                for kind, value in BUILTIN_KINDS.items()
            ]
        return cls(_load_entry_points(found))

    def kinds(self) -> list[str]:
        """Names of the registered kinds, sorted."""
        return sorted(self._kinds)

    def get(self, kind: str) -> type[Endpoint]:
        """The class implementing ``kind``; ConfigError if there is none."""
        try:
            return self._kinds[kind]
        except KeyError:
            raise ConfigError(
                f"unknown endpoint kind {kind!r}",
                where=f"endpoint kind {kind!r}",
                hint=(
                    f"Use one of: {', '.join(self.kinds()) or 'none installed'}, or install "
                    f"the package that provides it (entry-point group {ENTRY_POINT_GROUP})"
                ),
            ) from None

    def create(
        self, name: str, kind: str, root: str | Path, settings: Mapping[str, Any] | None = None
    ) -> Endpoint:
        """Build endpoint ``name`` of ``kind`` at ``root`` (a directory, or an object-store
        URI where the kind supports one) after validating its settings."""
        cls = self.get(kind)
        raw = dict(settings or {})
        parse_settings(self._settings[kind], name, raw)
        return cls.at(name, root, **raw)

    def settings_model(self, kind: str) -> type[BaseModel]:
        """The pydantic model of ``kind``'s settings (for help texts and validation)."""
        self.get(kind)
        return self._settings[kind]


def _check_kind(kind: str, cls: object, *, where: str) -> type[BaseModel]:
    """Refuse a plugin that is not a usable Endpoint class for ``kind``; return its Settings."""
    hint = "Fix or uninstall the package that provides this endpoint kind"
    if not (isinstance(cls, type) and issubclass(cls, Endpoint)):
        raise ConfigError(f"{cls!r} is not an Endpoint subclass", where=where, hint=hint)
    declared = getattr(cls, "kind", None)
    if declared != kind:
        raise ConfigError(
            f"{cls.__qualname__} declares kind {declared!r}, but is registered as {kind!r}",
            where=where,
            hint=hint,
        )
    model = getattr(cls, "Settings", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(
            f"{cls.__qualname__} has no pydantic Settings model", where=where, hint=hint
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(
            f"{cls.__qualname__} does not implement {missing}", where=where, hint=hint
        )
    return model


def _load_entry_points(found: list[EntryPoint]) -> dict[str, type[Endpoint]]:
    kinds: dict[str, type[Endpoint]] = {}
    origin: dict[str, str] = {}
    for ep in found:
        where = f"entry point {ep.name} = {ep.value} (group {ep.group})"
        if ep.name in kinds and origin[ep.name] != ep.value:
            raise ConfigError(
                f"endpoint kind {ep.name!r} is provided twice ({origin[ep.name]} and {ep.value})",
                where=where,
                hint="Uninstall one of the packages that provide it",
            )
        try:
            cls = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"cannot load endpoint kind {ep.name!r}: {type(exc).__name__}: {exc}",
                where=where,
                hint="Fix or uninstall the package that provides this endpoint kind",
            ) from exc
        _check_kind(ep.name, cls, where=where)
        kinds[ep.name] = cls
        origin[ep.name] = ep.value
    return kinds
