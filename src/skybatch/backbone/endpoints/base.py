"""The endpoint interface: where file replicas live.

Endpoints implement raw, path-level operations on *logical paths* (POSIX-style paths
relative to the endpoint root, identical on every endpoint, e.g. the Butler datastore
path ``run/calexp/.../calexp_....fits``). Verification, catalog updates, quotas and
pins are the managed layer's business (``skybatch.backbone.transfer`` and
``operations``), so every endpoint behaves the same there.

Writes are two-phase: data goes to :meth:`Endpoint.temp_path` (never the final name,
same filesystem), and :meth:`Endpoint.commit` renames it atomically into place. A
crash therefore never leaves a partial file under a final name.

Optional features are declared in :class:`Capabilities`; an endpoint with
``tape=True`` also implements :class:`TapeBackedEndpoint`.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Capabilities",
    "Endpoint",
    "FileState",
    "RecallSink",
    "TapeBackedEndpoint",
    "TapeLocation",
    "TapeStats",
]


class Capabilities(BaseModel):
    """Optional features of an endpoint kind."""

    model_config = ConfigDict(frozen=True)

    tape: bool = False
    """Files may be nearline (tape only); the kind implements TapeBackedEndpoint."""
    quota: bool = False
    """The endpoint has a size quota, kept by LRU eviction of unpinned replicas."""
    links: bool = False
    """Replicas may be hard links or symlinks to a source on the same host."""
    shared_fs: bool = True
    """Files have local paths that jobs can open directly."""
    local_files: bool = True
    """Files are in a directory on this host (:meth:`Endpoint.local_path`); False for an
    object store, whose files are read and written only through the endpoint."""
    write_once: bool = False
    """A file, once written, is never replaced by other content (the archive): managed
    writes commit with :meth:`Endpoint.commit_new` and refuse a different file."""


class FileState(enum.StrEnum):
    """What an endpoint itself says about one of its files."""

    ONLINE = "online"  # readable now
    NEARLINE = "nearline"  # on tape only; recall first
    MISSING = "missing"  # not there at all


@dataclass(frozen=True, order=True)
class TapeLocation:
    """Where a file sits in the tape library: volume and byte position on it."""

    volume: str
    position: int
    size: int
    path: str


@dataclass(frozen=True)
class TapeStats:
    """Counters of the tape library since it was created."""

    mounts: int
    bytes_read: int
    bytes_written: int
    seeks: int


#: Receives each recalled file as a bounded binary stream positioned at its first byte.
RecallSink = Callable[[str, BinaryIO], None]


class Endpoint(ABC):
    """A place that holds file replicas under logical paths.

    Args:
        name: Endpoint name in the catalog (``archive``, ``site:ncsa``).
        root: Root directory of the endpoint on this host.
        settings: Kind-specific settings (validated by the kind's ``Settings`` model).
    """

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Pydantic model validating the kind's settings (checked by the registry at load).
    Settings: ClassVar[type[BaseModel]]

    def __init__(self, name: str, root: Path, **settings: Any) -> None:
        self.name = name
        self.root = Path(root)
        #: Whether jobs see this endpoint's files in place; a site may override it.
        self.shared_fs: bool = self.capabilities.shared_fs

    @classmethod
    def at(cls, name: str, root: str | Path, **settings: Any) -> Endpoint:
        """Build endpoint ``name`` of this kind at ``root`` (a directory, or a URI for a
        kind that also lives in an object store: it picks its implementation here)."""
        from skybatch.errors import ConfigError

        from .objectstore import is_object_store

        if is_object_store(root):
            raise ConfigError(
                f"endpoint {name!r} of kind {cls.kind!r} cannot be rooted in an object "
                f"store ({root})",
                where=f"root of endpoint {name!r}",
                hint="give a directory; only the archive may be in an object store (s3://)",
            )
        return cls(name, Path(root), **settings)

    @property
    def location(self) -> str:
        """Where the files are, for messages and the catalog: the root directory, or
        the URI of an object-store root."""
        return str(self.root)

    # -- reading ----------------------------------------------------------------
    @abstractmethod
    def state(self, path: str) -> FileState:
        """Whether ``path`` is online, nearline or missing here."""

    @abstractmethod
    def size(self, path: str) -> int:
        """Size in bytes; FileMissingError if absent, NearlineError if only on tape."""

    @abstractmethod
    def open_read(self, path: str) -> BinaryIO:
        """Open for reading; FileMissingError if absent, NearlineError if only on tape."""

    def checksum(self, path: str) -> tuple[int, str]:
        """``(size, md5)`` of ``path`` from one read; FileMissingError if absent."""
        from skybatch.backbone.checksums import md5_stream

        with self.open_read(path) as stream:
            return md5_stream(stream)

    def download(self, path: str, local: Path) -> None:
        """Copy the bytes of ``path`` into the new local file ``local`` (no checks: the
        managed layer checksums the copy). An object store overrides this with its
        client's parallel download; the base streams :meth:`open_read`."""
        import shutil

        with self.open_read(path) as stream, open(local, "wb") as out:
            shutil.copyfileobj(stream, out, 4 << 20)

    @abstractmethod
    def local_path(self, path: str) -> Path:
        """The final local filesystem path of ``path`` (whether or not it exists)."""

    @abstractmethod
    def iter_files(self, prefix: str = "") -> Iterator[str]:
        """Logical paths of committed, online files under ``prefix`` (no temp files)."""

    # -- writing (two-phase) ------------------------------------------------------
    @abstractmethod
    def temp_path(self, path: str) -> Path:
        """A local path for the partial copy of ``path``: same filesystem, never final.

        Deterministic for a given ``path`` so a re-run overwrites what a crash left.
        Parent directories are created.
        """

    @abstractmethod
    def commit(self, path: str, *, durable: bool = True) -> None:
        """Atomically move the temp file of ``path`` to its final name.

        ``durable`` syncs the data and the rename to stable storage before returning.
        Bulk transfers pass ``durable=False`` and call :meth:`sync` once per batch
        before the catalog records the batch, which is as safe and far cheaper.
        """

    def commit_new(self, path: str, *, durable: bool = True) -> None:
        """Like :meth:`commit`, but FileExistsError (temp file kept) if ``path`` exists.

        The base version checks, then commits; POSIX endpoints do it atomically.
        """
        if self.state(path) is not FileState.MISSING:
            raise FileExistsError(path)
        self.commit(path, durable=durable)

    def sync(self) -> None:
        """Make every commit so far durable (one filesystem sync)."""
        os.sync()

    @abstractmethod
    def discard(self, path: str) -> None:
        """Remove the temp file of ``path`` if there is one (idempotent)."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete ``path`` (and any tape copy); idempotent."""

    def link_from(self, source: Path, path: str, mode: str) -> None:
        """Make ``path`` a ``"hardlink"`` or ``"symlink"`` to ``source`` (capability links).

        Writes the link under the temp name; the caller commits. Raises OSError when
        the filesystem refuses (e.g. a hard link across devices).
        """
        raise OSError(f"endpoint kind {self.kind!r} does not support links")

    def describe(self) -> dict[str, Any]:
        """Settings worth showing to an operator."""
        return {"name": self.name, "kind": self.kind, "root": str(self.root)}


class TapeBackedEndpoint(Endpoint):
    """An endpoint with a tape tier behind its disk front (an HSM)."""

    capabilities: ClassVar[Capabilities] = Capabilities(tape=True)

    @abstractmethod
    def migrate(self, paths: Sequence[str]) -> list[TapeLocation]:
        """Copy online files to tape (they stay online); already-migrated ones are kept."""

    @abstractmethod
    def release(self, paths: Sequence[str]) -> None:
        """Drop the disk copy of files that are on tape: they become nearline.

        Raises BackboneError for a file that has no tape copy (nothing is released then).
        """

    @abstractmethod
    def tape_locations(self, paths: Sequence[str]) -> dict[str, TapeLocation]:
        """Tape location of each path that has a tape copy."""

    @abstractmethod
    def read_volume(self, volume: str, paths: Sequence[str], sink: RecallSink) -> None:
        """Mount ``volume`` once and stream ``paths`` (on it) to ``sink`` in the given order.

        The caller orders paths by position; reading backwards costs a seek.
        """

    @abstractmethod
    def tape_stats(self) -> TapeStats:
        """Mounts, seeks and bytes moved since the library was created."""

    def tape_checksum(self, path: str) -> tuple[int, str] | None:
        """``(size, md5)`` of the tape copy of ``path`` if known (None: unknown or none)."""
        return None
