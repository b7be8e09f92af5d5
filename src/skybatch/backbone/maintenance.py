"""Registering, verifying, evicting, deleting and crash recovery of replicas."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from skybatch.progress import ProgressFactory, no_bars

from .catalog import FileInfo, FileRecord, Placement
from .checksums import md5_stream
from .endpoints.base import Endpoint, FileState, TapeBackedEndpoint
from .errors import BackboneError, FileMissingError
from .models import FileRow, ReplicaState
from .removal import refuse, release_replicas, remove_replicas, unsafe_removals
from .service import Backbone
from .transfer import transfer_file, write_verified

__all__ = [
    "EvictReport",
    "VerifyReport",
    "delete",
    "evict",
    "recover",
    "register_paths",
    "verify",
]


def register_paths(
    backbone: Backbone,
    endpoint: str,
    paths: Sequence[str],
    *,
    run: str | None = None,
    dataset_type: str | None = None,
    producer: str = "register",
    progress: ProgressFactory | None = None,
) -> dict[str, int]:
    """Register files already on ``endpoint``: size and md5 from one read of each."""
    ep = backbone.endpoint(endpoint)
    known = backbone.catalog.files_by_paths(paths)
    bar = progress or no_bars

    def measure(path: str) -> FileRecord:
        with ep.open_read(path) as stream:
            size, md5 = md5_stream(stream)
        return FileRecord(path, size, md5, dataset_type=dataset_type, run=run, producer=producer)

    new_paths = [p for p in paths if p not in known]
    records: list[FileRecord] = []
    with bar("checksum", len(new_paths)) as advance, ThreadPoolExecutor(backbone.workers) as pool:
        for record in pool.map(measure, new_paths):
            records.append(record)
            advance()
    records += [FileRecord(p, known[p].size_bytes, known[p].md5) for p in paths if p in known]
    return backbone.catalog.register(records, endpoint)


@dataclass
class VerifyReport:
    endpoint: str
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: dict[str, str] = field(default_factory=dict)


def verify(
    backbone: Backbone,
    endpoint: str,
    files: Sequence[FileInfo] | None = None,
    *,
    repair: bool = True,
    progress: ProgressFactory | None = None,
) -> VerifyReport:
    """Re-checksum replicas on ``endpoint`` (online, corrupt, missing); repair bad ones.

    A replica whose size or md5 differs from the catalog is marked ``corrupt`` (a
    vanished one ``missing``) and, with ``repair``, rewritten from another online
    replica or, on the archive, from its own tape copy.
    """
    catalog = backbone.catalog
    ep = backbone.endpoint(endpoint)
    # Replicas already marked corrupt or missing are checked again (and repaired), so
    # a `verify --no-repair` can be followed by a repairing run.
    checked = (ReplicaState.ONLINE, ReplicaState.CORRUPT, ReplicaState.MISSING)
    if files is None:
        placements = catalog.replicas_on(endpoint, checked)
    else:
        placements = [
            p
            for p in catalog.placements([f.id for f in files], endpoint)
            if p.replica.state in checked
        ]
    report = VerifyReport(endpoint)
    bar = progress or no_bars

    seen: dict[int, tuple[int, int, int]] = {}

    def check(f: FileInfo) -> str | None:
        if ep.state(f.path) is not FileState.ONLINE:
            return "missing"
        before = _stat(ep, f.path)
        with ep.open_read(f.path) as stream:
            got = md5_stream(stream)
        if got != (f.size_bytes, f.md5):
            return "corrupt"
        if before is not None and before == _stat(ep, f.path):  # unchanged while read
            seen[f.id] = (f.id, *before)
        return None

    bad: list[FileInfo] = []
    with (
        bar(f"verify {endpoint}", len(placements)) as advance,
        ThreadPoolExecutor(backbone.workers) as pool,
    ):
        for p, verdict in zip(
            placements, pool.map(check, [p.file for p in placements]), strict=True
        ):
            report.checked += 1
            report.bytes += p.file.size_bytes
            if verdict == "corrupt":
                report.corrupt.append(p.file.path)
                bad.append(p.file)
            elif verdict == "missing":
                report.missing.append(p.file.path)
                bad.append(p.file)
            advance()
    good = [p.file.id for p in placements if p.file not in bad]
    catalog.set_replicas(good, endpoint, ReplicaState.ONLINE)  # refreshes verified_at
    catalog.set_verified(endpoint, [seen[i] for i in good if i in seen])
    by_verdict = {ReplicaState.CORRUPT: report.corrupt, ReplicaState.MISSING: report.missing}
    for state, paths in by_verdict.items():
        catalog.set_replicas([f.id for f in bad if f.path in paths], endpoint, state)
    if repair and bad:
        _repair(backbone, endpoint, bad, report)
    return report


def _stat(ep: Endpoint, path: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a replica's local file, or None (no local file)."""
    if not ep.capabilities.local_files:
        return None
    try:
        info = os.stat(ep.local_path(path))
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _repair(
    backbone: Backbone, endpoint: str, bad: Sequence[FileInfo], report: VerifyReport
) -> None:
    catalog = backbone.catalog
    target = backbone.endpoint(endpoint)
    placements = catalog.placements([f.id for f in bad])
    sources: dict[int, list[str]] = {}
    on_tape: set[int] = set()
    for p in placements:
        if p.endpoint != endpoint and p.replica.state == ReplicaState.ONLINE:
            sources.setdefault(p.file.id, []).append(p.endpoint)
        if p.endpoint == endpoint and p.replica.on_tape:
            on_tape.add(p.file.id)
    for f in bad:
        expected = (f.size_bytes, f.md5)
        errors: list[str] = []
        for source in sources.get(f.id, []):
            try:
                transfer_file(backbone.endpoint(source), target, f.path, expected, write_once=False)
            except (BackboneError, OSError) as exc:
                errors.append(f"{source}: {exc}")
                continue
            catalog.set_replicas([f.id], endpoint, ReplicaState.ONLINE)
            report.repaired.append(f.path)
            break
        else:
            if f.id in on_tape and isinstance(target, TapeBackedEndpoint):
                try:
                    _rewrite_from_tape(target, f)
                except (BackboneError, OSError) as exc:
                    errors.append(f"tape: {exc}")
                else:
                    catalog.set_replicas([f.id], endpoint, ReplicaState.ONLINE, on_tape=True)
                    report.repaired.append(f.path)
                    continue
            report.unrepaired[f.path] = "; ".join(errors) or "no other good replica"


def _rewrite_from_tape(archive: TapeBackedEndpoint, f: FileInfo) -> None:
    location = archive.tape_locations([f.path]).get(f.path)
    if location is None:
        raise FileMissingError(f"{f.path} has no tape copy", where=f.path)

    def sink(path: str, stream: BinaryIO) -> None:
        write_verified(stream, archive, path, (f.size_bytes, f.md5), write_once=False)

    archive.read_volume(location.volume, [f.path], sink)


@dataclass
class EvictReport:
    endpoint: str
    evicted: int = 0
    bytes: int = 0
    skipped_pinned: int = 0
    skipped_last_copy: int = 0


def evict(
    backbone: Backbone, endpoint: str, files: Sequence[FileInfo], *, force: bool = False
) -> EvictReport:
    """Drop replicas from a cache (or the archive's disk front when they are on tape).

    Pinned replicas are kept unless ``force``; a replica that is the last online copy
    of its file is never evicted (that is `delete`).
    """
    catalog = backbone.catalog
    ep = backbone.endpoint(endpoint)
    report = EvictReport(endpoint)
    now = datetime.now(UTC)
    placements = catalog.placements([f.id for f in files])
    online_elsewhere: dict[int, int] = {}
    mine: dict[int, Placement] = {}
    for p in placements:
        if p.endpoint == endpoint:
            mine[p.file.id] = p
        elif p.replica.state == ReplicaState.ONLINE:
            online_elsewhere[p.file.id] = online_elsewhere.get(p.file.id, 0) + 1
    nearline_elsewhere = {
        p.file.id
        for p in placements
        if p.endpoint != endpoint and p.replica.state == ReplicaState.NEARLINE
    }
    victims: list[FileInfo] = []
    for p in mine.values():
        if p.replica.state != ReplicaState.ONLINE:
            continue
        pinned = p.replica.pinned_until
        if not force and pinned is not None and pinned > now:
            report.skipped_pinned += 1
            continue
        if isinstance(ep, TapeBackedEndpoint):
            if not p.replica.on_tape:
                report.skipped_last_copy += 1
                continue
        elif not online_elsewhere.get(p.file.id) and p.file.id not in nearline_elsewhere:
            report.skipped_last_copy += 1
            continue
        victims.append(p.file)
    if isinstance(ep, TapeBackedEndpoint):
        release_replicas(backbone, endpoint, victims)
    else:
        remove_replicas(backbone, endpoint, victims)
    report.evicted = len(victims)
    report.bytes = sum(f.size_bytes for f in victims)
    return report


def delete(backbone: Backbone, files: Sequence[FileInfo]) -> int:
    """Remove every replica of ``files`` (disk and tape) and forget them in the catalog."""
    from sqlalchemy import delete as sql_delete

    from .catalog import _chunks

    placements = backbone.catalog.placements([f.id for f in files])
    by_endpoint: dict[str, list[FileInfo]] = {}
    for p in placements:
        by_endpoint.setdefault(p.endpoint, []).append(p.file)
    for name, on_it in by_endpoint.items():  # every one checked before any is deleted
        refuse(name, unsafe_removals(backbone, name, on_it, purge=True), len(on_it), "delete")
    for name, on_it in by_endpoint.items():
        remove_replicas(backbone, name, on_it, purge=True)
    ids = [f.id for f in files]
    with backbone.catalog.sessions.begin() as session:
        for chunk in _chunks(ids):
            session.execute(sql_delete(FileRow).where(FileRow.id.in_(chunk)))
    return len(ids)


@dataclass
class RecoverReport:
    endpoint: str
    completed: int = 0
    rolled_back: int = 0
    temp_files_removed: int = 0


def recover(backbone: Backbone, endpoint: str) -> RecoverReport:
    """Settle what a crashed transfer left on ``endpoint``.

    ``staging`` replicas whose final file is present and verifies become ``online``;
    the others are dropped (a re-run copies them again). Stale temporary files are
    removed.
    """
    catalog = backbone.catalog
    ep = backbone.endpoint(endpoint)
    report = RecoverReport(endpoint)
    staging = catalog.replicas_on(endpoint, [ReplicaState.STAGING])
    good: list[int] = []
    rollback: list[int] = []
    for p in staging:
        f = p.file
        ok = False
        if ep.state(f.path) is FileState.ONLINE:
            with ep.open_read(f.path) as stream:
                ok = md5_stream(stream) == (f.size_bytes, f.md5)
        (good if ok else rollback).append(f.id)
        ep.discard(f.path)
    catalog.set_replicas(good, endpoint, ReplicaState.ONLINE)
    tape_rollback = [p.file.id for p in staging if p.file.id in rollback and p.replica.on_tape]
    if tape_rollback:
        catalog.set_replicas(tape_rollback, endpoint, ReplicaState.NEARLINE, on_tape=True)
    catalog.drop_replicas([i for i in rollback if i not in tape_rollback], endpoint)
    sweep = getattr(ep, "sweep_temp_files", None)
    if sweep is not None:
        report.temp_files_removed = len(sweep())
    report.completed, report.rolled_back = len(good), len(rollback)
    return report
