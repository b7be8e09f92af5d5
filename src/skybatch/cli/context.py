"""The object click passes to every skybatch command (``ctx.obj``)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from skybatch.settings import Settings

__all__ = ["CliContext", "pass_cli_context"]


@dataclass(frozen=True)
class CliContext:
    """What every command needs: the settings loaded once by the ``skybatch`` group."""

    settings: Settings


pass_cli_context = click.make_pass_decorator(CliContext)
"""Decorator passing the :class:`CliContext` as a command's first argument."""
