"""Verified moves between endpoints: copy to a temporary name, verify, rename.

The bytes are checksummed as they are written and compared with the catalog's size
and md5 before the atomic rename; a mismatch discards the partial copy and raises.
Hard links and symlinks (when both endpoints are on this host and policy allows)
are checked by size and made under the temporary name too.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from .checksums import copy_file_then_md5, copy_with_md5
from .endpoints.base import Endpoint, FileState
from .errors import ChecksumMismatchError

__all__ = ["TransferMode", "TransferResult", "transfer_file", "write_verified"]


class TransferMode(enum.StrEnum):
    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"
    AUTO = "auto"  # hard link when possible, else copy


@dataclass(frozen=True)
class TransferResult:
    path: str
    size_bytes: int
    mode: TransferMode


def write_verified(
    opener: Callable[[], AbstractContextManager[BinaryIO]] | BinaryIO | Path,
    target: Endpoint,
    path: str,
    expected: tuple[int, str] | None,
    *,
    durable: bool = True,
) -> tuple[int, str]:
    """Write a stream (or a local file) to ``target`` under ``path``: temp, verify, commit.

    ``expected`` is the catalog's (size, md5); ``None`` accepts whatever arrives (first
    registration). Returns (size, md5) of what was committed. A local source file is
    copied in the kernel and the copy itself is checksummed.
    """
    temp = target.temp_path(path)
    try:
        if isinstance(opener, Path):
            try:
                got = copy_file_then_md5(opener, temp)
            except OSError:
                with open(opener, "rb") as stream:
                    got = copy_with_md5(stream, temp)
        elif callable(opener):
            with opener() as stream:
                got = copy_with_md5(stream, temp)
        else:
            got = copy_with_md5(opener, temp)
        if expected is not None and got != tuple(expected):
            raise ChecksumMismatchError(
                f"copy of {path} to {target.name} does not match the catalog",
                path=path,
                expected=(int(expected[0]), str(expected[1])),
                actual=got,
                where=f"{target.name}:{path}",
                hint="the source replica may be corrupt: run `skybatch backbone verify` on it",
            )
        target.commit(path, durable=durable)
    except BaseException:
        target.discard(path)
        raise
    return got


def transfer_file(
    source: Endpoint,
    target: Endpoint,
    path: str,
    expected: tuple[int, str],
    mode: TransferMode = TransferMode.COPY,
    *,
    durable: bool = True,
) -> TransferResult:
    """Put a verified replica of ``path`` from ``source`` onto ``target``."""
    mode = TransferMode(mode)
    if mode in (TransferMode.HARDLINK, TransferMode.SYMLINK, TransferMode.AUTO) and (
        target.capabilities.links and source.shared_fs
    ):
        link_mode = TransferMode.HARDLINK if mode is TransferMode.AUTO else mode
        try:
            target.link_from(source.local_path(path), path, link_mode.value)
            size = os.stat(target.temp_path(path)).st_size
            if size != expected[0]:
                target.discard(path)
                raise ChecksumMismatchError(
                    f"{source.name}:{path} has {size} bytes, the catalog says {expected[0]}",
                    path=path,
                    expected=expected,
                    actual=(size, "?"),
                    where=f"{source.name}:{path}",
                    hint="run `skybatch backbone verify` on the source",
                )
            target.commit(path, durable=durable)
            return TransferResult(path, size, link_mode)
        except OSError:
            target.discard(path)
            if mode is not TransferMode.AUTO:
                raise
    # Same host and an online source: copy in the kernel and checksum the copy.
    opener: Callable[[], AbstractContextManager[BinaryIO]] | Path
    if source.shared_fs and target.shared_fs and source.state(path) is FileState.ONLINE:
        opener = source.local_path(path)
    else:
        opener = partial(source.open_read, path)
    size, _ = write_verified(opener, target, path, expected, durable=durable)
    return TransferResult(path, size, TransferMode.COPY)
