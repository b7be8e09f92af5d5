"""Tape → disk within the archive (seed step 6): release to tape, and ordered recall.

A recall groups files by tape volume and reads each volume once, front to back, so
a request of any size and order costs one mount per volume and no seeks. Every
recalled file is written under a temporary name, checked against the catalog's size
and md5, and renamed into the disk front before the catalog says it is online.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from skybatch.progress import ProgressFactory, no_bars

from .catalog import FileInfo
from .endpoints.base import FileState
from .errors import BackboneError
from .models import ReplicaState, RequestState
from .removal import release_replicas
from .service import Backbone
from .transfer import write_verified

__all__ = ["RecallReport", "recall", "release_to_tape"]


@dataclass
class RecallReport:
    files: int = 0
    bytes: int = 0
    volumes: int = 0
    mounts: int = 0
    seeks: int = 0
    already_online: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def release_to_tape(
    backbone: Backbone, files: Sequence[FileInfo], endpoint: str | None = None
) -> int:
    """Write files to tape and drop their disk copies: they become nearline."""
    name = endpoint or backbone.archive_name()
    archive = backbone.tape_endpoint(name)
    placements = {p.file.id: p for p in backbone.catalog.placements([f.id for f in files], name)}
    online = [f for f in files if f.id in placements and placements[f.id].replica.state == "online"]
    paths = [f.path for f in online]
    archive.migrate(paths)
    backbone.catalog.set_replicas([f.id for f in online], name, ReplicaState.ONLINE, on_tape=True)
    release_replicas(backbone, name, online)
    return len(online)


def recall(
    backbone: Backbone,
    files: Sequence[FileInfo],
    endpoint: str | None = None,
    progress: ProgressFactory | None = None,
    priority: int = 0,
) -> RecallReport:
    """Bring nearline files of the archive back online, one mount per tape volume."""
    name = endpoint or backbone.archive_name()
    catalog = backbone.catalog
    report = RecallReport()
    placements = {p.file.id: p for p in catalog.placements([f.id for f in files], name)}
    wanted = [
        f
        for f in files
        if f.id in placements and placements[f.id].replica.state in ("nearline", "staging")
    ]
    if not wanted:  # nothing on tape only (always so on an archive without a tape tier)
        report.already_online = len(files)
        return report
    archive = backbone.tape_endpoint(name)
    # A crashed recall may have committed files the catalog does not know yet.
    leftovers = [f for f in wanted if archive.state(f.path) is FileState.ONLINE]
    done_ids = _accept_leftovers(backbone, name, leftovers) if leftovers else set()
    todo = [f for f in wanted if f.id not in done_ids]
    report.already_online = len(files) - len(todo)
    if not todo:
        return report
    locations = archive.tape_locations([f.path for f in todo])
    lost = [f.path for f in todo if f.path not in locations]
    if lost:
        raise BackboneError(
            f"{len(lost)} nearline file(s) have no tape copy, e.g. {lost[0]}",
            where=f"{name}:{lost[0]}",
            hint="the catalog and the tape library disagree: run `skybatch backbone verify`",
        )
    by_path = {f.path: f for f in todo}
    by_volume: dict[str, list[str]] = defaultdict(list)
    for loc in sorted(locations.values(), key=lambda loc: (loc.volume, loc.position)):
        by_volume[loc.volume].append(loc.path)
    total_bytes = sum(f.size_bytes for f in todo)
    request = catalog.open_request(
        "recall", name, [f.id for f in todo], total_bytes, source=name, priority=priority
    )
    before = archive.tape_stats()
    catalog.set_replicas([f.id for f in todo], name, ReplicaState.STAGING, on_tape=True)
    bar = progress or no_bars
    try:
        with bar(f"recall from tape ({len(by_volume)} volumes)", len(todo)) as advance:
            for volume, paths in by_volume.items():
                recalled: list[int] = []

                def sink(path: str, stream: BinaryIO, recalled: list[int] = recalled) -> None:
                    f = by_path[path]
                    try:
                        write_verified(stream, archive, path, (f.size_bytes, f.md5))
                    except BackboneError as exc:
                        report.failed[path] = str(exc)
                    else:
                        recalled.append(f.id)
                        report.bytes += f.size_bytes
                    advance()

                archive.read_volume(volume, paths, sink)
                catalog.set_replicas(recalled, name, ReplicaState.ONLINE, on_tape=True)
                report.files += len(recalled)
    finally:
        failed_ids = [by_path[p].id for p in report.failed if p in by_path]
        unfinished = [
            f.id
            for f in todo
            if f.id in failed_ids or archive.state(f.path) is not FileState.ONLINE
        ]
        if unfinished:
            catalog.set_replicas(unfinished, name, ReplicaState.NEARLINE, on_tape=True)
        after = archive.tape_stats()
        report.volumes = len(by_volume)
        report.mounts = after.mounts - before.mounts
        report.seeks = after.seeks - before.seeks
        state = RequestState.FAILED if report.failed else RequestState.DONE
        catalog.close_request(request, state, "; ".join(list(report.failed.values())[:3]))
    if report.failed:
        first = next(iter(report.failed.items()))
        raise BackboneError(
            f"{len(report.failed)} of {len(todo)} file(s) failed to recall, e.g. {first[0]}: "
            f"{first[1]}",
            where=f"{name}:{first[0]}",
            hint="the tape copy may be damaged; the others were recalled",
        )
    return report


def _accept_leftovers(backbone: Backbone, name: str, files: Sequence[FileInfo]) -> set[int]:
    """Mark disk copies a crashed recall committed online when they verify; return ids.

    Copies that do not verify stay in the request and are overwritten from tape.
    """
    from .checksums import md5_stream

    archive = backbone.endpoint(name)
    good: set[int] = set()
    for f in files:
        with archive.open_read(f.path) as stream:
            if md5_stream(stream) == (f.size_bytes, f.md5):
                good.add(f.id)
    backbone.catalog.set_replicas(sorted(good), name, ReplicaState.ONLINE, on_tape=True)
    return good
