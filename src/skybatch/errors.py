"""The skybatch exception root and the one mapping from exceptions to CLI exit codes.

Every error a user can see is a :class:`SkybatchError` carrying what was wrong
(``message``), where (``where``: a file and line, a config field or an environment
variable) and what to do about it (``hint``). Subpackages add their own ``errors.py``
with subclasses of the classes below; the CLI maps them to exit codes in one place
through :func:`exit_code_for`.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

__all__ = [
    "EXIT_DATA",
    "EXIT_DATABASE",
    "EXIT_EXTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "ConfigError",
    "DataError",
    "DatabaseError",
    "ExternalToolError",
    "InputError",
    "NotFoundError",
    "SkybatchError",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
EXIT_EXTERNAL = 4
EXIT_DATA = 5
EXIT_INTERRUPTED = 130


class SkybatchError(Exception):
    """Root of every error skybatch reports to a user.

    Args:
        message: What was wrong, as a full sentence without trailing period.
        where: Where the problem is (``"campaign.yaml:12 steps[0].pipeline"``,
            ``"SKYBATCH_DB__URL"``), if known.
        hint: What the user can do about it, if known.
    """

    exit_code: int = EXIT_UNEXPECTED

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.where:
            text += f" (at {self.where})"
        if self.hint:
            text += f". {self.hint}"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, where={self.where!r}, "
            f"hint={self.hint!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields would be lost by the default BaseException pickling
        # (multiprocessing sends exceptions between processes).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[SkybatchError], state: dict[str, object]) -> SkybatchError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return exc


class ConfigError(SkybatchError):
    """A configuration file or setting is invalid."""

    exit_code = EXIT_USAGE


class InputError(SkybatchError):
    """Input given by the user (arguments, files) is invalid."""

    exit_code = EXIT_USAGE


class NotFoundError(InputError):
    """The user named something (a campaign id, a run, a token) that does not exist
    (HTTP 404 in the service)."""


class DatabaseError(SkybatchError):
    """A database cannot be reached, migrated or queried."""

    exit_code = EXIT_DATABASE


class DataError(SkybatchError):
    """Stored data is missing, corrupt, unreachable or does not fit (quota)."""

    exit_code = EXIT_DATA


class ExternalToolError(SkybatchError):
    """An external tool or subprocess failed.

    Args:
        message: What failed.
        command: The command line that was run.
        returncode: Its exit status (``None`` if it could not be started).
        stderr: The tail of its standard error, if captured.
        where: See :class:`SkybatchError`.
        hint: See :class:`SkybatchError`.
    """

    exit_code = EXIT_EXTERNAL

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | str,
        returncode: int | None = None,
        stderr: str = "",
        where: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, where=where, hint=hint)
        self.command: tuple[str, ...] = (command,) if isinstance(command, str) else tuple(command)
        self.returncode = returncode
        self.stderr = stderr

    def __str__(self) -> str:
        text = super().__str__()
        status = "could not start" if self.returncode is None else f"exit {self.returncode}"
        text += f" [command: {' '.join(self.command)}; {status}]"
        tail = self.stderr.strip()
        if tail:
            text += f"\n{tail[-2000:]}"
        return text


def exit_code_for(exc: BaseException) -> int:
    """Return the process exit code for ``exc``; the one mapping used by the CLI."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_UNEXPECTED
    if isinstance(exc, SkybatchError):
        return exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        return EXIT_INTERRUPTED
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_UNEXPECTED
