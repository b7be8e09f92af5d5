"""Size and md5 computed in one pass over the bytes, while reading or copying."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 4 * 1024 * 1024

_local = threading.local()


def _buffer(chunk_bytes: int) -> memoryview:
    """A per-thread reusable buffer: allocating 4 MiB per small file costs more than the copy."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) != chunk_bytes:
        buffer = _local.buffer = memoryview(bytearray(chunk_bytes))
    return buffer


def md5_stream(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, str]:
    """Read ``stream`` to its end; return (size, md5 hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    view = _buffer(chunk_bytes)
    size = 0
    while n := stream.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
        size += n
    return size, digest.hexdigest()


def md5_file(path: Path | str) -> tuple[int, str]:
    with open(path, "rb", buffering=0) as stream:
        return md5_stream(stream)


def copy_with_md5(
    source: BinaryIO, target: Path, chunk_bytes: int = CHUNK_BYTES
) -> tuple[int, str]:
    """Copy ``source`` into a new file ``target``; return (size, md5) of the bytes.

    Durability is the committer's business (``Endpoint.commit``/``sync``).
    """
    digest = hashlib.md5(usedforsecurity=False)
    view = _buffer(chunk_bytes)
    size = 0
    with open(target, "wb", buffering=0) as out:
        while n := source.readinto(view):  # type: ignore[attr-defined]
            chunk = view[:n]
            digest.update(chunk)
            written = 0
            while written < n:
                written += out.write(chunk[written:])
            size += n
    return size, digest.hexdigest()


def copy_file_then_md5(
    source: Path, target: Path, chunk_bytes: int = CHUNK_BYTES
) -> tuple[int, str]:
    """Copy ``source`` to a new file ``target`` in the kernel, then checksum the *copy*.

    ``copy_file_range`` moves the bytes without passing them through Python (as ``cp``
    does); reading the new file back for its md5 verifies what actually landed on the
    target, not just what was sent. Raises OSError where the kernel cannot do it (the
    caller falls back to a streamed copy).
    """
    with open(source, "rb", buffering=0) as src, open(target, "wb", buffering=0) as out:
        remaining = os.fstat(src.fileno()).st_size
        while remaining > 0:
            n = os.copy_file_range(src.fileno(), out.fileno(), min(remaining, 1 << 30))
            if n == 0:
                break
            remaining -= n
    return md5_file(target)
