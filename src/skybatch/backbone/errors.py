"""Errors of the Data Backbone (exit code 5 unless they are input errors)."""

from __future__ import annotations

from skybatch.errors import DataError, InputError

__all__ = [
    "BackboneError",
    "ChecksumMismatchError",
    "FileMissingError",
    "FileOverwriteError",
    "NearlineError",
    "QuotaExceededError",
    "UnknownEndpointError",
    "UnknownFileError",
]


class BackboneError(DataError):
    """Root of Data Backbone errors."""


class FileMissingError(BackboneError):
    """A file expected at an endpoint is not there."""


class NearlineError(BackboneError):
    """A file is only on tape (nearline) and must be recalled before it is read."""


class ChecksumMismatchError(BackboneError):
    """Size or md5 of a copy differs from the catalog.

    Args:
        path: Logical path of the file.
        expected: ``(size, md5)`` in the catalog.
        actual: ``(size, md5)`` found.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        expected: tuple[int, str],
        actual: tuple[int, str],
        where: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, where=where, hint=hint)
        self.path = path
        self.expected = expected
        self.actual = actual


class FileOverwriteError(BackboneError):
    """A write-once endpoint (the archive) already holds a file with other content there.

    Args:
        path: Logical path of the file.
        existing: ``(size, md5)`` of the file already there.
        new: ``(size, md5)`` of the refused new content.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        existing: tuple[int, str],
        new: tuple[int, str],
        where: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, where=where, hint=hint)
        self.path = path
        self.existing = existing
        self.new = new


class QuotaExceededError(BackboneError):
    """A site cache cannot make room (everything left is pinned or the request is larger)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        needed_bytes: int,
        free_bytes: int,
        where: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, where=where, hint=hint)
        self.endpoint = endpoint
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class UnknownEndpointError(InputError):
    """An endpoint name is not defined in the catalog."""


class UnknownFileError(InputError):
    """A logical path or dataset id is not in the catalog."""
