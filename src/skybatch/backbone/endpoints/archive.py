"""The archive: the central store, a disk front with a tape tier behind it (an HSM).

The disk front is laid out as the Butler datastore root, so a file's logical path is
its datastore path both on disk and on tape; a nearline file keeps its path and only
needs a recall (``read_volume`` into the disk front) before it can be read again. The
tape tier is an :class:`~.tape.EmulatedTapeLibrary`; a real HSM back end would replace
it behind the same :class:`~.base.TapeBackedEndpoint` methods.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from skybatch.backbone.endpoints import parse_settings
from skybatch.backbone.endpoints.base import (
    Capabilities,
    Endpoint,
    FileState,
    RecallSink,
    TapeBackedEndpoint,
    TapeLocation,
    TapeStats,
)
from skybatch.backbone.endpoints.objectstore import ObjectStoreEndpoint, is_object_store
from skybatch.backbone.endpoints.posix import PosixEndpoint, fsync_dir
from skybatch.backbone.endpoints.tape import EmulatedTapeLibrary, TapeSettings
from skybatch.backbone.errors import BackboneError, FileMissingError, NearlineError
from skybatch.errors import ConfigError

__all__ = [
    "DEFAULT_TAPE_DIR",
    "ArchiveEndpoint",
    "ArchiveSettings",
    "ObjectStoreArchiveEndpoint",
]

DEFAULT_TAPE_DIR = ".skybatch-tape"
_RECALL_HINT = "Recall it to the disk front first (stage it from tape), then read it again"


class ArchiveSettings(BaseModel):
    """Settings of the archive endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tape_root: Path | None = Field(
        default=None,
        description=(
            f"directory of the tape library; unset = <root>/{DEFAULT_TAPE_DIR}, a relative "
            "path is taken under the endpoint root"
        ),
    )
    tape: TapeSettings = Field(
        default_factory=TapeSettings,
        description="mount/seek costs, throughput and volume capacity of the tape tier",
    )
    spool_dir: Path | None = Field(
        default=None,
        description=(
            "an archive in an object store (s3://): local directory for partial copies "
            "before their upload; unset = a directory under the system's temporary directory"
        ),
    )


class ArchiveEndpoint(PosixEndpoint, TapeBackedEndpoint):
    """The central archive: POSIX disk front plus an emulated tape library."""

    kind: ClassVar[str] = "archive"
    capabilities: ClassVar[Capabilities] = Capabilities(tape=True, links=True, write_once=True)
    Settings: ClassVar[type[BaseModel]] = ArchiveSettings

    def __init__(self, name: str, root: Path, **settings: Any) -> None:
        super().__init__(name, root)
        self.settings = parse_settings(ArchiveSettings, name, settings)
        if self.settings.spool_dir is not None:
            raise ConfigError(
                f"the archive endpoint {name!r} is a directory ({root}): it has no spool",
                where=f"endpoint {name!r} settings.spool_dir",
                hint="spool_dir applies to an archive in an object store; remove it",
            )
        tape_root = self.settings.tape_root or Path(DEFAULT_TAPE_DIR)
        self.tape_root = tape_root if tape_root.is_absolute() else self.root / tape_root
        self.tape_root.mkdir(parents=True, exist_ok=True)
        try:
            inside = self.tape_root.resolve().relative_to(self.root.resolve())
        except ValueError:
            inside = None
        if inside is not None:
            if not inside.parts:
                raise BackboneError(
                    "the tape library cannot live at the archive root itself",
                    where=f"endpoint {name!r} settings.tape_root",
                    hint=f"Leave tape_root unset (it defaults to <root>/{DEFAULT_TAPE_DIR})",
                )
            self.internal_dirs = (inside.as_posix(),)
        self.library = EmulatedTapeLibrary(self.tape_root, self.settings.tape)

    @classmethod
    def at(cls, name: str, root: str | Path, **settings: Any) -> Endpoint:
        """The archive at a directory, or in an object store when ``root`` is a URI."""
        if is_object_store(root):
            return ObjectStoreArchiveEndpoint(name, str(root), **settings)
        return cls(name, Path(root), **settings)

    # -- reading ----------------------------------------------------------------------
    def state(self, path: str) -> FileState:
        if self.local_path(path).is_file():
            return FileState.ONLINE
        if self.library.locations([path]):
            return FileState.NEARLINE
        return FileState.MISSING

    def size(self, path: str) -> int:
        try:
            return super().size(path)
        except FileMissingError:
            self._raise_if_nearline(path)
            raise

    def open_read(self, path: str) -> BinaryIO:
        try:
            return super().open_read(path)
        except FileMissingError:
            self._raise_if_nearline(path)
            raise

    def _raise_if_nearline(self, path: str) -> None:
        if self.library.locations([path]):
            raise NearlineError(
                f"{path!r} is nearline (on tape only) on endpoint {self.name!r}",
                where=str(self.local_path(path)),
                hint=_RECALL_HINT,
            )

    # -- writing ----------------------------------------------------------------------
    def commit(self, path: str, *, durable: bool = True) -> None:
        """Commit like any POSIX endpoint, and forget a tape copy the new data replaces.

        A recall commits the same bytes back, which keeps the tape copy; any other
        content would make the tape copy stale, and releasing the disk copy later would
        silently bring the old data back, so the stale copy is forgotten first.
        """
        temp = self.existing_temp_path(path)
        if temp is not None:
            on_tape = self.library.checksum(path)
            if on_tape is not None and (
                on_tape[0] != os.stat(temp).st_size or on_tape != _checksum(temp)
            ):
                self.library.forget([path])
        super().commit(path, durable=durable)

    def commit_new(self, path: str, *, durable: bool = True) -> None:
        """Commit a new file; FileExistsError if ``path`` is on disk *or* on tape."""
        if self.library.checksum(path) is not None and not self.local_path(path).exists():
            raise FileExistsError(path)
        super().commit_new(path, durable=durable)

    def tape_checksum(self, path: str) -> tuple[int, str] | None:
        """``(size, md5)`` of the tape copy of ``path``, or None."""
        return self.library.checksum(self._check(path))

    def remove(self, path: str) -> None:
        """Delete the disk copy and forget the tape copy (its bytes stay as waste)."""
        super().remove(path)
        self.library.forget([path])

    # -- tape tier --------------------------------------------------------------------
    def migrate(self, paths: Sequence[str]) -> list[TapeLocation]:
        """Write online files to tape in the given order; return every path's location."""
        wanted = [self._check(path) for path in dict.fromkeys(paths)]
        found = self.library.locations(wanted)
        todo = [path for path in wanted if path not in found]
        absent = [path for path in todo if not self.local_path(path).is_file()]
        if absent:
            raise FileMissingError(
                f"cannot migrate {len(absent)} file(s) that are not on the disk front of "
                f"{self.name!r}: {_sample(absent)}",
                where=str(self.root),
                hint="Migrate only files that are online; nothing was written to tape",
            )
        written = self.library.write_files([(path, self.local_path(path)) for path in todo])
        found.update((location.path, location) for location in written)
        return [found[path] for path in wanted]

    def release(self, paths: Sequence[str]) -> None:
        """Delete the disk copies of files on tape; all are checked before any is deleted."""
        wanted = [self._check(path) for path in dict.fromkeys(paths)]
        found = self.library.locations(wanted)
        untaped = [path for path in wanted if path not in found]
        if untaped:
            raise BackboneError(
                f"cannot release {len(untaped)} file(s) without a tape copy on "
                f"{self.name!r}: {_sample(untaped)}",
                where=str(self.tape_root),
                hint="Migrate them to tape first; nothing was released",
            )
        differing = [
            path
            for path in wanted
            if self.local_path(path).is_file()
            and os.stat(self.local_path(path)).st_size != found[path].size
        ]
        if differing:
            raise BackboneError(
                f"cannot release {len(differing)} file(s) whose disk copy differs in size "
                f"from the tape copy on {self.name!r}: {_sample(differing)}",
                where=str(self.root),
                hint="Migrate them again after checking which copy is right; nothing was released",
            )
        parents: set[Path] = set()
        for path in wanted:
            local = self.local_path(path)
            if os.path.lexists(local):
                local.unlink()
                parents.add(local.parent)
        for parent in parents:
            fsync_dir(parent)

    def tape_locations(self, paths: Sequence[str]) -> dict[str, TapeLocation]:
        return self.library.locations([self._check(path) for path in paths])

    def read_volume(self, volume: str, paths: Sequence[str], sink: RecallSink) -> None:
        self.library.read_volume(volume, [self._check(path) for path in paths], sink)

    def tape_stats(self) -> TapeStats:
        return self.library.stats()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["tape_root"] = str(self.tape_root)
        info["tape"] = self.settings.tape.model_dump()
        return info


class ObjectStoreArchiveEndpoint(ObjectStoreEndpoint):
    """The archive when the Butler datastore is in an object store (``s3://``).

    Files are written once, as on the POSIX archive. There is no emulated tape tier:
    every object is online, and an object store's own cold tier (e.g. S3 Glacier) plays
    the tape's part outside skybatch (README, "Using your own repository").
    """

    kind: ClassVar[str] = "archive"
    capabilities: ClassVar[Capabilities] = Capabilities(
        shared_fs=False, local_files=False, write_once=True
    )
    Settings: ClassVar[type[BaseModel]] = ArchiveSettings

    def __init__(self, name: str, root: str, **settings: Any) -> None:
        parsed = parse_settings(ArchiveSettings, name, settings)
        if parsed.tape_root is not None:
            raise ConfigError(
                f"the archive endpoint {name!r} is in an object store ({root}): it has no "
                "emulated tape library",
                where=f"endpoint {name!r} settings.tape_root",
                hint="remove tape_root; the store's own cold tier stands for tape",
            )
        super().__init__(name, root, spool_dir=parsed.spool_dir)
        self.settings = parsed


def _checksum(path: Path) -> tuple[int, str]:
    """(size, md5) of a local file, comparable with the tape index."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _sample(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(path) for path in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
