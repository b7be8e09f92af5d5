"""Logging configuration for skybatch processes (stdlib logging, rich or JSON lines)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["JsonLinesFormatter", "configure_logging"]

_HANDLER_NAME = "skybatch"

_CHATTY_LOGGERS = ("alembic",)
"""Libraries whose INFO records are noise for operators; shown only at DEBUG."""

MIDDLEWARE_LOGGERS = ("lsst",)
"""The LSST middleware (pipe_base, daf_butler, ctrl_mpexec, ...): its INFO records go
to a run's log file (:mod:`skybatch.run.runlog`), to the terminal only on request."""


class _QuietMiddleware(logging.Filter):
    """Drop the middleware's records below WARNING (from a console handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(
            record.name == name or record.name.startswith(name + ".") for name in MIDDLEWARE_LOGGERS
        )


class JsonLinesFormatter(logging.Formatter):
    """Format each record as one JSON object: ts, level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str, json_format: bool, middleware: bool = False) -> None:
    """Send log records of ``level`` and above to stderr, as JSON lines or via rich.

    The LSST middleware's records (:data:`MIDDLEWARE_LOGGERS`) below WARNING reach
    stderr only with ``middleware`` (the user asked for a level); a run keeps them in
    its log file either way. The handler itself has ``level``, so a run's log file
    that lowers the root logger's level does not make the terminal chattier.

    Idempotent: calling it again replaces the handler installed by a previous call
    and leaves handlers installed by others alone.
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    handler: logging.Handler
    if json_format:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLinesFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True),
            show_path=numeric_level <= logging.DEBUG,
            rich_tracebacks=True,
            markup=False,
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(numeric_level)
    if not middleware:
        handler.addFilter(_QuietMiddleware())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if numeric_level <= logging.DEBUG else logging.WARNING
        )
