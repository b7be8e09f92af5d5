"""Verified moves between endpoints: copy to a temporary name, verify, rename.

The bytes are checksummed as they are written and compared with the catalog's size
and md5 before the atomic rename; a mismatch discards the partial copy and raises.
Hard links and symlinks (when both endpoints are on this host and policy allows)
are checked by size and made under the temporary name too.

A write-once endpoint (the archive, ``Capabilities.write_once``) never has a file
replaced: the commit succeeds only if the name is free (atomically), the same content
already there is a no-op, and other content is refused with FileOverwriteError naming
the path. Only a repair of a replica known to be corrupt passes ``write_once=False``.
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

from .checksums import copy_file_then_md5, copy_with_md5, md5_file, md5_stream
from .endpoints.base import Endpoint, FileState, TapeBackedEndpoint
from .errors import ChecksumMismatchError, FileOverwriteError

__all__ = [
    "Download",
    "TransferMode",
    "TransferResult",
    "commit",
    "transfer_file",
    "write_verified",
]


class TransferMode(enum.StrEnum):
    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"
    AUTO = "auto"  # hard link when possible, else copy


@dataclass(frozen=True)
class Download:
    """A source read by downloading ``path`` from ``endpoint`` into the temp file (an
    object store's parallel download), then checksumming the local copy."""

    endpoint: Endpoint
    path: str


@dataclass(frozen=True)
class TransferResult:
    path: str
    size_bytes: int
    mode: TransferMode


def write_verified(
    opener: Callable[[], AbstractContextManager[BinaryIO]] | BinaryIO | Path | Download,
    target: Endpoint,
    path: str,
    expected: tuple[int, str] | None,
    *,
    durable: bool = True,
    write_once: bool | None = None,
) -> tuple[int, str]:
    """Write a stream (or a local file) to ``target`` under ``path``: temp, verify, commit.

    ``expected`` is the catalog's (size, md5); ``None`` accepts whatever arrives (first
    registration). Returns (size, md5) of what was committed. A local source file is
    copied in the kernel and the copy itself is checksummed. ``write_once`` (default:
    the target's capability) refuses to replace a file with other content.
    """
    temp = target.temp_path(path)
    try:
        if isinstance(opener, Download):
            opener.endpoint.download(opener.path, temp)
            got = md5_file(temp)  # the copy that landed, read back
        elif isinstance(opener, Path):
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
        commit(target, path, got, durable=durable, write_once=write_once)
    except BaseException:
        target.discard(path)
        raise
    return got


def commit(
    target: Endpoint,
    path: str,
    content: tuple[int, str],
    *,
    durable: bool = True,
    write_once: bool | None = None,
) -> None:
    """Commit the temp file of ``path`` (holding ``content``: size, md5) on ``target``.

    On a write-once target an existing file with the same content makes this a no-op
    (a nearline one is brought back on disk: a recall), other content raises
    FileOverwriteError; the temp file is the caller's to discard then.
    """
    if write_once is None:
        write_once = target.capabilities.write_once
    if not write_once:
        target.commit(path, durable=durable)
        return
    try:
        target.commit_new(path, durable=durable)
        return
    except FileExistsError:
        pass
    state = target.state(path)
    existing: tuple[int, str] | None
    if state is FileState.ONLINE:
        with target.open_read(path) as stream:
            existing = md5_stream(stream)
    elif isinstance(target, TapeBackedEndpoint):
        existing = target.tape_checksum(path)
    else:
        existing = None
    if existing is not None and tuple(existing) == tuple(content):
        if state is FileState.ONLINE:
            target.discard(path)  # the same file is already there
        else:
            target.commit(path, durable=durable)  # the same bytes back from tape
        return
    shown = existing if existing is not None else (-1, "unknown")
    raise FileOverwriteError(
        f"{target.name} already holds {path} with other content (size, md5) {shown}; "
        f"refusing to replace it with {tuple(content)}",
        path=path,
        existing=(int(shown[0]), str(shown[1])),
        new=(int(content[0]), str(content[1])),
        where=f"{target.name}:{path}",
        hint="files in the archive are written once: write the new content under a new "
        "path; if the existing file is corrupt, `skybatch backbone verify --repair` "
        "replaces it from a good copy",
    )


def transfer_file(
    source: Endpoint,
    target: Endpoint,
    path: str,
    expected: tuple[int, str],
    mode: TransferMode = TransferMode.COPY,
    *,
    durable: bool = True,
    write_once: bool | None = None,
) -> TransferResult:
    """Put a verified replica of ``path`` from ``source`` onto ``target``.

    ``write_once`` as in :func:`write_verified` (default: the target's capability).
    """
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
            try:
                commit(target, path, expected, durable=durable, write_once=write_once)
            except FileOverwriteError:
                target.discard(path)
                raise
            return TransferResult(path, size, link_mode)
        except OSError:
            target.discard(path)
            if mode is not TransferMode.AUTO:
                raise
    # Same host and an online source: copy in the kernel and checksum the copy.
    opener: Callable[[], AbstractContextManager[BinaryIO]] | Path | Download
    if source.shared_fs and target.shared_fs and source.state(path) is FileState.ONLINE:
        opener = source.local_path(path)
    elif not source.capabilities.local_files:
        opener = Download(source, path)  # from an object store: its client's download
    else:
        opener = partial(source.open_read, path)
    size, _ = write_verified(opener, target, path, expected, durable=durable, write_once=write_once)
    return TransferResult(path, size, TransferMode.COPY)
