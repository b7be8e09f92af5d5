"""An emulated tape library: the tape tier behind the archive's disk front.

Real HSM back ends (dCache, HPSS, CTA) would replace it behind the same
:class:`~skybatch.backbone.endpoints.base.TapeBackedEndpoint` interface; it exists so
recall ordering and mount/seek costs can be developed and tested on one machine, and it
keeps what makes tape differ from disk: files are packed into append-only *volume
files* (``volumes/VOL000001.tape``) of fixed capacity; one drive, where reading another
volume costs a mount and reading backwards a seek (counted, optionally slept); nothing
is overwritten, a forgotten file's bytes stay as waste. Writes do not move the recall
drive (HSMs migrate through their own write drives), so writing never hides a mount.

The index is SQLite (``library.sqlite3``). A write appends and fsyncs the data before it
records the rows in one transaction: a crash mid-append leaves unreferenced bytes, never
a row pointing at torn data. ``fcntl.flock`` on ``drive.lock`` serializes the drive
across threads and processes; SQLite's busy timeout covers the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Buffer

from skybatch.backbone.endpoints.base import RecallSink, TapeLocation, TapeStats
from skybatch.backbone.endpoints.posix import fsync_dir
from skybatch.backbone.errors import BackboneError, FileMissingError

__all__ = ["EmulatedTapeLibrary", "TapeSettings"]

SCHEMA_VERSION = 1
INDEX_FILENAME = "library.sqlite3"
LOCK_FILENAME = "drive.lock"
VOLUME_DIR = "volumes"
VOLUME_SUFFIX = ".tape"
COUNTERS = ("mounts", "seeks", "bytes_read", "bytes_written")
_COPY_CHUNK = 1 << 20
_BUSY_TIMEOUT_S = 60.0

# ``drive`` is the one drive's state (mounted volume, head offset), shared by processes.
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS volumes (name TEXT PRIMARY KEY, capacity_bytes INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, volume TEXT NOT NULL REFERENCES "
    "volumes(name), position INTEGER NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS files_by_volume ON files (volume, position)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS drive (id INTEGER PRIMARY KEY CHECK (id = 1), volume TEXT, "
    "head INTEGER NOT NULL)",
]


class TapeSettings(BaseModel):
    """Costs and geometry of the emulated tape library (defaults suit tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mount_time_s: float = Field(
        default=0.0, ge=0.0, description="seconds slept for each mount of another volume"
    )
    seek_time_s: float = Field(
        default=0.0, ge=0.0, description="seconds slept for each backwards seek on a volume"
    )
    read_bytes_per_s: float | None = Field(
        default=None, gt=0.0, description="read throughput limit in bytes/s; unset = unthrottled"
    )
    volume_capacity_bytes: int = Field(
        default=1 << 30,
        gt=0,
        description=(
            "bytes per volume before a new one is started; a larger file gets a volume of its own"
        ),
    )


class _BoundedReader(io.RawIOBase):
    """Reads ``size`` bytes of a volume file from ``start``, never past them.

    Shares the caller's open volume file (one mounted tape), so closing it does not
    close the volume; it counts delivered bytes and applies the throughput limit.
    """

    def __init__(
        self, volume_file: BinaryIO, start: int, size: int, bytes_per_s: float | None
    ) -> None:
        super().__init__()
        self._file = volume_file
        self._offset = start
        self._remaining = size
        self._bytes_per_s = bytes_per_s
        self.delivered = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._remaining)
        if want <= 0:
            return 0
        self._file.seek(self._offset)
        data = self._file.read(want)
        if len(data) != want:
            raise BackboneError(
                f"volume file ended {want - len(data)} bytes early at offset {self._offset}",
                where=getattr(self._file, "name", None),
                hint="The volume file was truncated outside skybatch; restore it from backup",
            )
        view[:want] = data
        self._offset += want
        self._remaining -= want
        self.delivered += want
        if self._bytes_per_s:
            time.sleep(want / self._bytes_per_s)
        return want


class EmulatedTapeLibrary:
    """A tape library with one drive, emulated with append-only volume files.

    Args:
        root: Library directory (created): ``volumes/``, ``library.sqlite3``,
            ``drive.lock``.
        settings: Costs and volume capacity; defaults are free and 1 GiB volumes.

    Every method opens its own SQLite connection, so one instance may be used from
    several threads and the library from several processes at once.
    """

    def __init__(self, root: Path, settings: TapeSettings | None = None) -> None:
        self.root = Path(root)
        self.settings = settings or TapeSettings()
        self.volume_dir = self.root / VOLUME_DIR
        self.volume_dir.mkdir(parents=True, exist_ok=True)
        self._index = self.root / INDEX_FILENAME
        self._lock_path = self.root / LOCK_FILENAME
        self._init_schema()

    # -- infrastructure ---------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (writers take the lock up front), then closed."""
        conn = sqlite3.connect(self._index, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextlib.contextmanager
    def _drive(self) -> Iterator[None]:
        """Hold the drive exclusively (all processes and threads using this library)."""
        with open(self._lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            yield  # closing the lock file releases the lock

    def _init_schema(self) -> None:
        with self._connect() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BackboneError(
                    f"tape library index has schema version {version}, this skybatch "
                    f"understands up to {SCHEMA_VERSION}",
                    where=str(self._index),
                    hint="Upgrade skybatch to open this tape library",
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)",
                [(name,) for name in COUNTERS],
            )
            conn.execute("INSERT OR IGNORE INTO drive (id, volume, head) VALUES (1, NULL, 0)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def volume_path(self, volume: str) -> Path:
        """The volume file holding the bytes of ``volume``."""
        return self.volume_dir / f"{volume}{VOLUME_SUFFIX}"

    @staticmethod
    def _add(conn: sqlite3.Connection, counter: str, amount: int) -> None:
        if amount:
            conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (amount, counter))

    # -- writing ----------------------------------------------------------------------
    def write_files(self, files: Sequence[tuple[str, Path]]) -> list[TapeLocation]:
        """Append the local files ``(logical path, source)`` to tape, in order.

        All data is appended and fsynced before any index row is written, and the rows
        go in one transaction: after a crash either every file is on tape or none is
        recorded. A path already on tape gets a new copy (the old one becomes waste).
        """
        if not files:
            return []
        capacity = self.settings.volume_capacity_bytes
        with self._drive():
            with self._connect(write=False) as conn:
                row = conn.execute("SELECT max(name) FROM volumes").fetchone()
            volume: str | None = row[0]
            pending: list[tuple[TapeLocation, str]] = []
            new_volumes: list[str] = []
            handle: BinaryIO | None = None
            # Bytes already in the volume file, torn appends included (never reused).
            last = self.volume_path(volume) if volume else None
            used = last.stat().st_size if last and last.exists() else 0
            try:
                for path, source in files:
                    size = os.stat(source).st_size
                    if volume is None or (used > 0 and used + size > capacity):
                        if handle is not None:
                            _fsync_close(handle)
                            handle = None
                        volume = _next_volume(volume)
                        new_volumes.append(volume)
                    if handle is None:
                        handle = open(self.volume_path(volume), "ab")  # noqa: SIM115
                        used = handle.seek(0, os.SEEK_END)
                    position = used
                    md5 = _append(handle, source, size, path)
                    used = position + size
                    pending.append((TapeLocation(volume, position, size, path), md5))
            finally:
                if handle is not None:
                    _fsync_close(handle)
            fsync_dir(self.volume_dir)
            with self._connect() as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO volumes (name, capacity_bytes) VALUES (?, ?)",
                    [(name, capacity) for name in new_volumes],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO files (path, volume, position, size, md5) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(loc.path, loc.volume, loc.position, loc.size, md5) for loc, md5 in pending],
                )
                self._add(conn, "bytes_written", sum(loc.size for loc, _ in pending))
        return [loc for loc, _ in pending]

    # -- index ------------------------------------------------------------------------
    def locations(self, paths: Sequence[str]) -> dict[str, TapeLocation]:
        """Tape location of each of ``paths`` that is on tape."""
        found: dict[str, TapeLocation] = {}
        with self._connect(write=False) as conn:
            for path in dict.fromkeys(paths):
                row = conn.execute(
                    "SELECT volume, position, size FROM files WHERE path = ?", (path,)
                ).fetchone()
                if row is not None:
                    found[path] = TapeLocation(row[0], row[1], row[2], path)
        return found

    def checksum(self, path: str) -> tuple[int, str] | None:
        """``(size, md5)`` of the tape copy of ``path`` (taken when written), or None."""
        with self._connect(write=False) as conn:
            row = conn.execute("SELECT size, md5 FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def forget(self, paths: Sequence[str]) -> None:
        """Drop the index rows of ``paths``; their bytes stay on the volume as waste."""
        with self._connect() as conn:
            conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    def volumes(self) -> list[str]:
        """Names of all volumes, oldest first."""
        with self._connect(write=False) as conn:
            rows = conn.execute("SELECT name FROM volumes ORDER BY name").fetchall()
        return [str(name) for (name,) in rows]

    # -- the drive --------------------------------------------------------------------
    def mount(self, volume: str) -> None:
        """Put ``volume`` in the drive (counted and slept only if another one was in it)."""
        with self._drive(), self._connect() as conn:
            self._mount(conn, volume)

    def _mount(self, conn: sqlite3.Connection, volume: str) -> int:
        """Mount ``volume`` (caller holds the drive); return the head position."""
        known = conn.execute("SELECT 1 FROM volumes WHERE name = ?", (volume,)).fetchone()
        if known is None or not self.volume_path(volume).is_file():
            raise BackboneError(
                f"tape volume {volume!r} does not exist (no index entry or no volume file)",
                where=str(self.volume_path(volume)),
                hint="Take volume names from tape_locations(); restore a lost volume file",
            )
        mounted, head = conn.execute("SELECT volume, head FROM drive WHERE id = 1").fetchone()
        if mounted == volume:
            return int(head)
        if self.settings.mount_time_s:
            time.sleep(self.settings.mount_time_s)
        self._add(conn, "mounts", 1)
        conn.execute("UPDATE drive SET volume = ?, head = 0 WHERE id = 1", (volume,))
        return 0

    def read_volume(self, volume: str, paths: Sequence[str], sink: RecallSink) -> None:
        """Mount ``volume`` once and stream ``paths`` to ``sink`` in the given order.

        Each stream is bounded to its file's bytes. Reading a file that starts before
        the head (where the previous read ended) costs a seek, so callers sort by
        position. The drive is held for the whole call: ``sink`` must not call back
        into this library. Counters are saved even when ``sink`` raises.
        """
        wanted = list(paths)
        locations = self.locations(wanted)
        for path in wanted:
            location = locations.get(path)
            if location is None or location.volume != volume:
                error = FileMissingError if location is None else BackboneError
                found = "has no copy on tape" if location is None else f"is on {location.volume}"
                raise error(
                    f"cannot read {path!r} from tape volume {volume}: it {found}",
                    where=str(self.root),
                    hint="Group paths by the volume of their tape_locations() before recalling",
                )
        with self._drive():
            with self._connect() as conn:
                head = self._mount(conn, volume)
            seeks = 0
            bytes_read = 0
            try:
                with open(self.volume_path(volume), "rb") as volume_file:
                    for path in wanted:
                        location = locations[path]
                        if location.position < head:
                            seeks += 1
                            if self.settings.seek_time_s:
                                time.sleep(self.settings.seek_time_s)
                        raw = _BoundedReader(
                            volume_file,
                            location.position,
                            location.size,
                            self.settings.read_bytes_per_s,
                        )
                        try:
                            with io.BufferedReader(raw, buffer_size=_COPY_CHUNK) as stream:
                                sink(path, stream)
                        finally:
                            bytes_read += raw.delivered
                            head = location.position + location.size
            finally:
                with self._connect() as conn:
                    self._add(conn, "seeks", seeks)
                    self._add(conn, "bytes_read", bytes_read)
                    conn.execute("UPDATE drive SET head = ? WHERE id = 1", (head,))

    def stats(self) -> TapeStats:
        """Mounts, seeks and bytes moved since creation (or the last reset_stats)."""
        with self._connect(write=False) as conn:
            values = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return TapeStats(**{name: int(values[name]) for name in COUNTERS})

    def reset_stats(self) -> None:
        """Zero the counters and empty the drive, so a benchmark starts cold."""
        with self._drive(), self._connect() as conn:
            conn.execute("UPDATE counters SET value = 0")
            conn.execute("UPDATE drive SET volume = NULL, head = 0 WHERE id = 1")


def _next_volume(previous: str | None) -> str:
    number = int(previous[3:]) + 1 if previous else 1
    return f"VOL{number:06d}"


def _append(handle: BinaryIO, source: Path, size: int, path: str) -> str:
    """Copy ``source`` to the end of ``handle``; return its md5. The size must hold."""
    digest = hashlib.md5(usedforsecurity=False)
    copied = 0
    with open(source, "rb") as src:
        while chunk := src.read(_COPY_CHUNK):
            handle.write(chunk)
            digest.update(chunk)
            copied += len(chunk)
    if copied != size:
        raise BackboneError(
            f"{path!r} changed size while it was written to tape ({size} -> {copied} bytes)",
            where=str(source),
            hint="Do not modify archive files while they are migrated; retry the migration",
        )
    return digest.hexdigest()


def _fsync_close(handle: BinaryIO) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()
