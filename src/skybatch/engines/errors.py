"""Errors of the execution engines."""

from __future__ import annotations

from skybatch.errors import ConfigError, InputError, SkybatchError

__all__ = [
    "EngineClosedError",
    "EngineConfigError",
    "EngineError",
    "EngineSettingsError",
    "JobSpecConflictError",
]


class EngineError(SkybatchError):
    """Root of execution engine errors."""


class EngineClosedError(EngineError):
    """Jobs were submitted to an engine after :meth:`~skybatch.engines.base.Engine.close`."""


class EngineConfigError(EngineError, ConfigError):
    """An engine's settings cannot work (e.g. its runner cannot be found)."""


class EngineSettingsError(EngineConfigError):
    """Settings given for an engine do not validate against its ``settings_model``.

    Attributes:
        engine: The engine's name.
        problems: ``(field path, message)`` per problem, e.g. ``("max_workers",
            "Input should be greater than or equal to 1, got 0")``.
    """

    def __init__(
        self, engine: str, problems: list[tuple[str, str]], *, where: str, hint: str
    ) -> None:
        text = "; ".join(f"{path}: {message}" for path, message in problems)
        super().__init__(f"invalid settings for engine {engine!r}: {text}", where=where, hint=hint)
        self.engine = engine
        self.problems = problems


class JobSpecConflictError(EngineError, InputError):
    """Two active jobs would share the same spec file (same report directory and attempt)."""
