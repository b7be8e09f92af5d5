"""Logging configuration: JSON lines on request, rich otherwise, idempotent."""

from __future__ import annotations

import json
import logging

import pytest

from skybatch.logging_setup import configure_logging


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.get_name() == "skybatch"]


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=True)
    log = logging.getLogger("skybatch.test")
    log.debug("hidden")
    log.info("hello %s", "world")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [
        ("INFO", "skybatch.test", "hello world"),
        ("ERROR", "skybatch.test", "failed"),
    ]
    assert "ValueError: bad" in lines[1]["exception"]
    assert lines[0]["ts"].endswith("+00:00")


def test_idempotent_and_switchable() -> None:
    configure_logging("DEBUG", json_format=True)
    configure_logging("WARNING", json_format=False)
    handlers = _ours()
    assert len(handlers) == 1
    assert type(handlers[0]).__name__ == "RichHandler"
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("alembic").level == logging.WARNING


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD", json_format=False)
