"""Errors of the execution engines."""

from __future__ import annotations

from skybatch.errors import ConfigError, InputError, SkybatchError

__all__ = [
    "EngineClosedError",
    "EngineConfigError",
    "EngineError",
    "JobSpecConflictError",
]


class EngineError(SkybatchError):
    """Root of execution engine errors."""


class EngineClosedError(EngineError):
    """Jobs were submitted to an engine after :meth:`~skybatch.engines.base.Engine.close`."""


class EngineConfigError(EngineError, ConfigError):
    """An engine's settings cannot work (e.g. its runner cannot be found)."""


class JobSpecConflictError(EngineError, InputError):
    """Two active jobs would share the same spec file (same report directory and attempt)."""
