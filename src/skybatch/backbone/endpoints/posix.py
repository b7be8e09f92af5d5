"""Raw endpoint operations on a local directory tree, shared by every POSIX kind.

The archive's disk front and the site caches are both "a directory that holds files
under their logical paths"; this module does that once: path validation (a logical
path can never escape the root), two-phase writes through a deterministic temp name in
the same directory (so :func:`os.replace` is atomic), fsyncs that make a commit
durable, links, and sweeping partial files a crash left behind.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.endpoints.base import Capabilities, Endpoint, FileState
from skybatch.backbone.errors import FileMissingError
from skybatch.errors import InputError

__all__ = [
    "LINK_MODES",
    "TEMP_SUFFIX",
    "PosixEndpoint",
    "PosixSettings",
    "fsync_dir",
    "path_problem",
]

TEMP_SUFFIX = ".skybatch-part"
"""Partial copies are named ``.<basename>.skybatch-part`` beside their final name."""

LINK_MODES = ("hardlink", "symlink")
_PATH_HINT = "Logical paths are relative POSIX paths such as 'run/calexp/file.fits'"


class PosixSettings(BaseModel):
    """A plain directory tree has nothing to configure beyond its root."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PosixEndpoint(Endpoint):
    """An endpoint that stores each file at ``root / logical_path``.

    Subclasses add their kind, capabilities and settings, and may reserve internal
    directories under the root (e.g. the tape library) with :attr:`internal_dirs`:
    they are skipped by :meth:`iter_files` and no logical path may point into them.
    """

    Settings: ClassVar[type[BaseModel]] = PosixSettings
    capabilities: ClassVar[Capabilities] = Capabilities(links=True)

    def __init__(self, name: str, root: Path, **settings: Any) -> None:
        super().__init__(name, root, **settings)
        self.root.mkdir(parents=True, exist_ok=True)
        self.internal_dirs: tuple[str, ...] = ()

    # -- paths ------------------------------------------------------------------------
    def _check(self, path: str, *, what: str = "logical path") -> str:
        """Return ``path`` if it is a valid logical path here, else raise InputError."""
        reason = path_problem(path)
        if reason is None:
            for internal in self.internal_dirs:
                if path == internal or path.startswith(internal + "/"):
                    reason = f"it points into the internal directory {internal!r}"
        if reason is not None:
            raise InputError(
                f"invalid {what} {path!r}: {reason}",
                where=f"endpoint {self.name!r}",
                hint=_PATH_HINT,
            )
        return path

    def local_path(self, path: str) -> Path:
        return self.root / self._check(path)

    def temp_path(self, path: str) -> Path:
        final = self.local_path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        return _temp_of(final)

    def existing_temp_path(self, path: str) -> Path | None:
        """The partial copy of ``path`` if there is one (creates no directories)."""
        temp = _temp_of(self.local_path(path))
        return temp if os.path.lexists(temp) else None

    # -- reading ----------------------------------------------------------------------
    def state(self, path: str) -> FileState:
        return FileState.ONLINE if self.local_path(path).is_file() else FileState.MISSING

    def size(self, path: str) -> int:
        final = self.local_path(path)
        try:
            info = os.stat(final)
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise self._missing(path)
        return info.st_size

    def open_read(self, path: str) -> BinaryIO:
        final = self.local_path(path)
        try:
            return open(final, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(path) from None

    def checksum(self, path: str) -> tuple[int, str]:
        try:
            return md5_file(self.local_path(path))
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(path) from None

    def _missing(self, path: str) -> FileMissingError:
        return FileMissingError(
            f"{path!r} is not on endpoint {self.name!r}",
            where=str(self.root / path),
            hint="Check the catalog replica of this file and re-transfer it if it is lost",
        )

    def iter_files(self, prefix: str = "") -> Iterator[str]:
        """Committed files under ``prefix`` (a string prefix of the logical path).

        Lazy, in a stable order: a directory's files (sorted), then its subdirectories.
        """
        for here, filename in self._walk(prefix):
            if _is_temp_name(filename):
                continue
            full = here / filename
            logical = full.relative_to(self.root).as_posix()
            if logical.startswith(prefix) and full.is_file():
                yield logical

    def _walk(self, prefix: str) -> Iterator[tuple[Path, str]]:
        """(directory, file name) of every file that may lie under ``prefix``.

        Internal directories are pruned; ``prefix`` is validated like a logical path.
        """
        if prefix:
            self._check(prefix.rstrip("/"), what="prefix")
        start = prefix.rpartition("/")[0]
        top = self.root / start if start else self.root
        internal = {self.root / name for name in self.internal_dirs}
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if here / d not in internal)
            for filename in sorted(filenames):
                yield here, filename

    # -- writing ----------------------------------------------------------------------
    def _partial_copy(self, path: str, *, durable: bool) -> tuple[Path, Path]:
        """The final and temp paths of ``path``'s partial copy, which must exist (synced
        to disk if ``durable``), before it is committed."""
        final = self.local_path(path)
        temp = _temp_of(final)
        if not os.path.lexists(temp):
            raise FileMissingError(
                f"there is no partial copy of {path!r} to commit on endpoint {self.name!r}",
                where=str(temp),
                hint="Write the data to temp_path(path) first, then commit",
            )
        if durable and not temp.is_symlink():
            _fsync_file(temp)
        return final, temp

    def commit(self, path: str, *, durable: bool = True) -> None:
        final, temp = self._partial_copy(path, durable=durable)
        os.replace(temp, final)
        if durable:
            fsync_dir(final.parent)

    def commit_new(self, path: str, *, durable: bool = True) -> None:
        """Commit only if no file has the final name, atomically (a hard link, then the
        temp name removed); FileExistsError otherwise, the temp file kept."""
        final, temp = self._partial_copy(path, durable=durable)
        try:
            os.link(temp, final, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:  # no hard links here: check, then rename (not atomic)
            if os.path.lexists(final):
                raise FileExistsError(path) from None
            os.replace(temp, final)
        else:
            temp.unlink()
        if durable:
            fsync_dir(final.parent)

    def discard(self, path: str) -> None:
        _temp_of(self.local_path(path)).unlink(missing_ok=True)

    def remove(self, path: str) -> None:
        final = self.local_path(path)
        try:
            final.unlink()
        except FileNotFoundError:
            return
        fsync_dir(final.parent)

    def link_from(self, source: Path, path: str, mode: str) -> None:
        """Write a hard link or an (absolute) symlink to ``source`` at the temp name."""
        if mode not in LINK_MODES:
            raise InputError(
                f"unknown link mode {mode!r}",
                where=f"endpoint {self.name!r}",
                hint=f"Use one of: {', '.join(LINK_MODES)}",
            )
        if not Path(source).is_file():
            raise FileMissingError(
                f"link source {str(source)!r} for {path!r} does not exist",
                where=str(source),
                hint="Link only from a replica that is online",
            )
        temp = self.temp_path(path)
        temp.unlink(missing_ok=True)
        if mode == "hardlink":
            os.link(source, temp)
        else:
            os.symlink(os.path.abspath(source), temp)

    def sweep_temp_files(self, prefix: str = "", *, min_age_s: float = 0.0) -> list[str]:
        """Delete partial copies under ``prefix``; return the logical paths they were for.

        Partial copies are what a crashed transfer leaves behind. Only call this with
        ``min_age_s=0`` when no transfer into this endpoint is running; otherwise pass
        an age longer than any transfer takes, so live partial files are kept.
        """
        cutoff = time.time() - min_age_s
        swept: list[str] = []
        for here, filename in self._walk(prefix):
            if not _is_temp_name(filename):
                continue
            full = here / filename
            final_name = filename[1 : -len(TEMP_SUFFIX)]
            logical = (here / final_name).relative_to(self.root).as_posix()
            if not logical.startswith(prefix):
                continue
            try:
                if min_age_s and os.lstat(full).st_mtime > cutoff:
                    continue
                full.unlink()
            except FileNotFoundError:
                continue  # committed or swept by someone else meanwhile
            swept.append(logical)
        return sorted(swept)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["capabilities"] = self.capabilities.model_dump()
        return info


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a valid logical path, or None if it is."""
    if not isinstance(path, str):
        return f"it is a {type(path).__name__}, not a string"
    if not path:
        return "it is empty"
    if "\\" in path:
        return "it contains a backslash"
    if "\x00" in path:
        return "it contains a NUL character"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if any(part == ".." for part in parts):
        return "it contains '..'"
    if any(part in ("", ".") for part in parts):
        return "it has an empty or '.' component"
    if parts[-1].endswith(TEMP_SUFFIX):
        return f"names ending in {TEMP_SUFFIX!r} are reserved for partial copies"
    return None


def _is_temp_name(filename: str) -> bool:
    return (
        filename.startswith(".")
        and filename.endswith(TEMP_SUFFIX)
        and len(filename) > len(TEMP_SUFFIX) + 1
    )


def _temp_of(final: Path) -> Path:
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
