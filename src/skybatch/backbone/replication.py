"""Replicas onto other endpoints (seed steps 8 and 14): site caches and stage-back.

Crash safety comes from an intent log in the catalog: replicas are recorded as
``staging`` *before* any byte moves, every file is written under a temporary name,
verified and renamed, and only then is its replica marked ``online`` (in batches).
So no file ever sits at its final name without a catalog row, no ``online`` row
points to a missing or partial file, and re-running the same request finishes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from skybatch.progress import ProgressFactory, no_bars

from .catalog import FileInfo
from .endpoints.base import Endpoint
from .errors import BackboneError, FileMissingError, QuotaExceededError
from .models import ReplicaState, RequestState
from .removal import remove_replicas, unsafe_removals
from .service import Backbone
from .transfer import TransferMode, TransferResult, transfer_file

__all__ = ["ReplicateReport", "ensure_space", "replicate", "stage_back"]

#: Replicas are marked online in batches of this many files (or at the end).
COMMIT_EVERY = 256


@dataclass
class ReplicateReport:
    target: str
    files: int = 0
    bytes: int = 0
    already_there: int = 0
    linked: int = 0
    recalled: int = 0
    evicted: int = 0
    evicted_bytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def ensure_space(
    backbone: Backbone, target: str, needed_bytes: int, keep_ids: set[int]
) -> tuple[int, int]:
    """Make room for ``needed_bytes`` on a quota endpoint by evicting LRU, unpinned replicas.

    Replicas of ``keep_ids`` (the request itself) and pinned ones are never evicted.
    Raises QuotaExceededError, having evicted nothing, when room cannot be made.
    Returns (files evicted, bytes freed).
    """
    endpoint = backbone.endpoint(target)
    quota = getattr(endpoint, "quota_bytes", None)
    if quota is None:
        return 0, 0
    catalog = backbone.catalog
    used = catalog.bytes_on(target, [ReplicaState.ONLINE, ReplicaState.STAGING])
    in_flight = sum(
        p.file.size_bytes
        for p in catalog.placements(sorted(keep_ids), target)
        if p.replica.state == ReplicaState.STAGING
    )
    free = quota - (used - in_flight)
    if needed_bytes <= free:
        return 0, 0
    now = datetime.now(UTC)
    victims: list[FileInfo] = []
    freed = 0
    candidates = [
        p.file
        for p in catalog.replicas_on(target, [ReplicaState.ONLINE])
        if p.file.id not in keep_ids
        and (p.replica.pinned_until is None or p.replica.pinned_until <= now)
    ]
    # Least recently used first, a batch at a time; the last copy of a file (e.g. an
    # output not staged back yet) is never a victim.
    for start in range(0, len(candidates), COMMIT_EVERY):
        batch = candidates[start : start + COMMIT_EVERY]
        unsafe = unsafe_removals(backbone, target, batch)
        for f in batch:
            if f.path in unsafe:
                continue
            victims.append(f)
            freed += f.size_bytes
            if needed_bytes <= free + freed:
                break
        if needed_bytes <= free + freed:
            break
    if needed_bytes > free + freed:
        raise QuotaExceededError(
            f"site cache {target} cannot hold {needed_bytes:,} more bytes: {free:,} free of "
            f"{quota:,} and only {freed:,} evictable (the rest is pinned, requested or a "
            "last copy)",
            endpoint=target,
            needed_bytes=needed_bytes,
            free_bytes=free,
            where=target,
            hint="raise the quota, unpin or evict files (`skybatch backbone evict`), "
            "or replicate fewer files at a time; nothing was copied",
        )
    remove_replicas(backbone, target, victims)
    return len(victims), freed


def replicate(
    backbone: Backbone,
    files: Sequence[FileInfo],
    target: str,
    *,
    source: str | None = None,
    mode: TransferMode = TransferMode.COPY,
    pin_until: datetime | None = None,
    progress: ProgressFactory | None = None,
    priority: int = 0,
    kind: str = "replicate",
) -> ReplicateReport:
    """Put verified replicas of ``files`` on ``target`` (recalling from tape if needed)."""
    catalog = backbone.catalog
    target_ep = backbone.endpoint(target)
    mode = TransferMode(mode)
    report = ReplicateReport(target=target)
    ids = [f.id for f in files]
    by_file: dict[int, dict[str, str]] = {}
    for p in catalog.placements(ids):
        by_file.setdefault(p.file.id, {})[p.endpoint] = p.replica.state
    todo = [f for f in files if by_file.get(f.id, {}).get(target) != ReplicaState.ONLINE]
    report.already_there = len(files) - len(todo)
    if not todo:
        _pin(backbone, ids, target, pin_until)
        return report
    damaged = {
        f.id
        for f in todo
        if by_file.get(f.id, {}).get(target) in (ReplicaState.CORRUPT, ReplicaState.MISSING)
    }
    sources, to_recall = _choose_sources(backbone, todo, by_file, target, source)
    needed = sum(f.size_bytes for f in todo)
    # Room on the target first: a refused request must not have paid for a recall.
    report.evicted, report.evicted_bytes = ensure_space(
        backbone, target, needed, {f.id for f in files}
    )
    if to_recall:
        from .staging import recall

        report.recalled = recall(backbone, to_recall, sources[to_recall[0].id], progress).files
    request = catalog.open_request(kind, target, [f.id for f in todo], needed, priority=priority)
    catalog.set_replicas([f.id for f in todo], target, ReplicaState.STAGING)
    done: list[int] = []
    verified: list[tuple[int, int, int] | None] = []
    bar = progress or no_bars
    try:
        with (
            bar(f"{kind} → {target}", len(todo)) as advance,
            ThreadPoolExecutor(max_workers=backbone.workers) as pool,
        ):
            pending: dict[Future[TransferResult], FileInfo] = {}
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < 2 * backbone.workers:
                    f = queue.pop(0)
                    src = backbone.endpoint(sources[f.id])
                    future = pool.submit(
                        transfer_file,
                        src,
                        target_ep,
                        f.path,
                        (f.size_bytes, f.md5),
                        mode,
                        durable=False,
                        # a replica known to be bad may be replaced, even in the archive
                        write_once=False if f.id in damaged else None,
                    )
                    pending[future] = f
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    f = pending.pop(future)
                    try:
                        result = future.result()
                    except (BackboneError, OSError) as exc:
                        report.failed[f.path] = str(exc)
                    else:
                        done.append(f.id)
                        report.bytes += f.size_bytes
                        report.linked += result.mode is not TransferMode.COPY
                        if result.mode is TransferMode.COPY:  # the copy's md5 was checked
                            verified.append(_stat(target_ep, f))
                    advance()
                if len(done) >= COMMIT_EVERY:
                    target_ep.sync()  # the batch is durable before the catalog says so
                    catalog.set_replicas(done, target, ReplicaState.ONLINE)
                    catalog.set_verified(target, [v for v in verified if v is not None])
                    report.files += len(done)
                    done, verified = [], []
    finally:
        if done:
            target_ep.sync()
            catalog.set_replicas(done, target, ReplicaState.ONLINE)
            catalog.set_verified(target, [v for v in verified if v is not None])
            report.files += len(done)
        failed_ids = [f.id for f in todo if f.path in report.failed]
        if failed_ids:
            catalog.drop_replicas(failed_ids, target)
        state = RequestState.FAILED if report.failed else RequestState.DONE
        catalog.close_request(request, state, "; ".join(list(report.failed.values())[:3]))
    _pin(backbone, ids, target, pin_until)
    if report.failed:
        path, reason = next(iter(report.failed.items()))
        raise BackboneError(
            f"{len(report.failed)} of {len(todo)} file(s) could not be replicated to {target}, "
            f"e.g. {path}: {reason}",
            where=f"{target}:{path}",
            hint=f"{report.files} others were replicated; fix the cause and re-run",
        )
    return report


def _stat(endpoint: Endpoint, f: FileInfo) -> tuple[int, int, int] | None:
    """``(file id, mtime_ns, size)`` of a replica just written and verified."""
    if not (endpoint.shared_fs and endpoint.capabilities.local_files):
        return None
    try:
        info = os.stat(endpoint.local_path(f.path))
    except OSError:
        return None
    return f.id, info.st_mtime_ns, info.st_size


def _pin(backbone: Backbone, ids: Sequence[int], target: str, until: datetime | None) -> None:
    if until is not None:
        backbone.catalog.pin(ids, target, until)


def _choose_sources(
    backbone: Backbone,
    todo: Sequence[FileInfo],
    by_file: dict[int, dict[str, str]],
    target: str,
    source: str | None,
) -> tuple[dict[int, str], list[FileInfo]]:
    """An online source replica per file, and the archive files to recall first.

    Raises FileMissingError, before anything moves, for a file with neither.
    """
    archive = next((e.name for e in backbone.catalog.endpoints() if e.kind == "archive"), None)
    chosen: dict[int, str] = {}
    to_recall: list[FileInfo] = []
    for f in todo:
        states = {ep: st for ep, st in by_file.get(f.id, {}).items() if ep != target}
        candidates = [source] if source else sorted(states, key=lambda ep: ep != archive)
        online = [ep for ep in candidates if states.get(ep) == ReplicaState.ONLINE]
        if online:
            chosen[f.id] = online[0]
        elif archive in candidates and states.get(archive) == ReplicaState.NEARLINE:
            assert archive is not None
            chosen[f.id] = archive
            to_recall.append(f)
        else:
            raise FileMissingError(
                f"{f.path} has no online or nearline replica" + (f" on {source}" if source else ""),
                where=f.path,
                hint="run `skybatch backbone locate` to see its replicas; nothing was copied",
            )
    return chosen, to_recall


def stage_back(
    backbone: Backbone,
    site: str,
    run: str,
    target: str | None = None,
    progress: ProgressFactory | None = None,
) -> ReplicateReport:
    """Copy a run's outputs from a site cache to the archive, verified (seed step 14)."""
    target = target or backbone.archive_name()
    on_site = {
        p.file.id: p.file
        for p in backbone.catalog.replicas_on(site, [ReplicaState.ONLINE])
        if p.file.run == run
    }
    if not on_site:
        from skybatch.errors import InputError

        raise InputError(
            f"no online files of run {run!r} on {site}",
            where=run,
            hint="check the run name with `skybatch backbone usage --by run`",
        )
    files = sorted(on_site.values(), key=lambda f: f.path)
    return replicate(backbone, files, target, source=site, progress=progress, kind="stage-back")
