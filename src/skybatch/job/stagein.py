"""Stage-in (seed step 11.1): make the job's inputs appear under ``workdir/datastore``.

The job datastore mirrors the logical (datastore-relative) paths of the inputs, so the
datastore records in the quantum graph, which hold those same relative paths, resolve
to the staged files once the job's butler config points its root there.

- ``symlink``: the site cache is on a shared filesystem; link to it (no bytes move).
- ``copy``: copy from the site cache to local disk (better where the shared
  filesystem is slow for random reads), verified.
- ``archive``: no shared filesystem; fetch from the central archive, verified (by
  path, or, for an archive in an object store, by its client's download).

The expected size and md5 come from the catalog (:mod:`.replicas`), or the spec. A
site replica is read only once verified: trusted unread when the catalog recorded an
md5 check since its file last changed (same mtime and size), else checksummed here. A
replica that does not match is marked corrupt in the catalog and the job reads a
verified copy fetched from the archive instead, and carries on.

Verified copies reuse the backbone's two-phase write (temp name, size + md5, rename),
so a partial copy never has a final name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.endpoints.base import FileState
from skybatch.backbone.endpoints.objectstore import ObjectStoreEndpoint, is_object_store
from skybatch.backbone.endpoints.posix import PosixEndpoint
from skybatch.backbone.errors import BackboneError, ChecksumMismatchError
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.transfer import Download, write_verified
from skybatch.errors import InputError

from .errors import JobSpecError, StageInError
from .replicas import KnownInput, known_inputs, record_checks
from .spec import FileSpec, JobSpec

__all__ = ["StageInResult", "object_store_archive", "source_root", "stage_in"]

_log = logging.getLogger(__name__)

#: Name of the job-local scratch "endpoint" in messages.
SCRATCH = "job-scratch"


@dataclass(frozen=True)
class StageInResult:
    """What stage-in did: the mode, the logical paths staged and the bytes behind them.

    ``checksummed``: site replicas whose md5 was checked here; ``trusted``: those the
    catalog had verified since their last change; ``replaced``: corrupt site replicas
    read from the archive instead.
    """

    mode: str
    paths: list[str]
    bytes: int
    checksummed: int = 0
    trusted: int = 0
    replaced: list[str] = field(default_factory=list)


def source_root(spec: JobSpec) -> Path:
    """The directory inputs come from for ``spec.stage_in``; JobSpecError if unset."""
    if spec.stage_in == "archive":
        if not spec.archive_root:
            raise JobSpecError(
                "stage_in is 'archive' but archive_root is empty",
                where="archive_root",
                hint="set archive_root to the central archive (Butler datastore) root",
            )
        root = Path(spec.archive_root)
    else:
        if not spec.site_root:
            raise JobSpecError(
                f"stage_in is {spec.stage_in!r} but no site_root is given",
                where="site_root",
                hint="set site_root to the site cache on the shared filesystem, "
                "or use stage_in='archive' where there is none",
            )
        root = Path(spec.site_root)
    if not root.is_dir():
        raise StageInError(
            f"the {spec.stage_in} source directory {root} does not exist on this host",
            where=str(root),
            hint="check that the shared filesystem is mounted on this node",
        )
    return root


def stage_in(spec: JobSpec, datastore: Path) -> StageInResult:
    """Link or copy every input of ``spec`` into ``datastore`` under its logical path.

    Raises:
        JobSpecError: the spec lacks the root the mode needs, or a path is not logical.
        StageInError: an input is missing, has the wrong size, or its copy the wrong md5.
    """
    store = object_store_archive(spec, datastore.parent / "spool")
    from_store = store if spec.stage_in == "archive" else None
    root: Path | str = from_store.location if from_store is not None else source_root(spec)
    scratch = PosixEndpoint(SCRATCH, datastore)
    staged: list[str] = []
    seen: set[str] = set()
    total = 0
    known = known_inputs(spec)
    checks = _Checks()
    for item in spec.inputs:
        if item.path in seen:  # the same file named twice (e.g. by two quanta of the job)
            continue
        seen.add(item.path)
        try:
            scratch.local_path(item.path)  # refuses absolute paths and '..'
        except InputError as exc:
            raise JobSpecError(
                f"input {item.dataset_type} has an invalid logical path: {exc.message}",
                where=f"inputs[{item.path!r}]",
                hint=exc.hint,
            ) from None
        source = Path(root) / item.path if from_store is None else f"{root}{item.path}"
        present = (
            from_store.state(item.path) is FileState.ONLINE
            if from_store is not None
            else Path(source).is_file()
        )
        if not present:
            raise StageInError(
                f"input {item.path} ({item.dataset_type}, dataset {item.dataset_id}) "
                f"is missing from {root}",
                where=str(source),
                hint=_missing_hint(spec),
            )
        expected = _expected(item, known.get(item.path))
        try:
            if from_store is not None:
                total += _download(scratch, from_store, item, expected)
            elif spec.stage_in == "archive":
                total += _copy(scratch, Path(source), item, expected)
            else:
                total += _from_site(spec, scratch, Path(source), item, expected, known, checks)
        except ChecksumMismatchError as exc:
            raise StageInError(
                f"input {item.path} ({item.dataset_type}) in {root} is corrupt: (size, md5) "
                f"expected {exc.expected}, copied {exc.actual}",
                where=str(source),
                hint="run `skybatch backbone verify` on that replica, then resubmit the job",
            ) from exc
        except (BackboneError, OSError) as exc:
            reason = exc.message if isinstance(exc, BackboneError) else str(exc)
            raise StageInError(
                f"cannot stage input {item.path} ({item.dataset_type}) from {root}: {reason}",
                where=str(source),
                hint="check the replica and the job's scratch disk, then resubmit the job",
            ) from exc
        staged.append(item.path)
    record_checks(spec, checks.verified, checks.corrupt)
    _log.info(
        "staged %d input(s), %d bytes, by %s from %s (%d checksummed, %d verified earlier, "
        "%d corrupt replaced from the archive)",
        len(staged),
        total,
        spec.stage_in,
        root,
        len(checks.verified),
        checks.trusted,
        len(checks.replaced),
    )
    return StageInResult(
        spec.stage_in, staged, total, len(checks.verified), checks.trusted, checks.replaced
    )


@dataclass
class _Checks:
    """What stage-in learned about the site replicas it read."""

    verified: list[tuple[int, int, int]] = field(default_factory=list)  # (id, mtime_ns, size)
    corrupt: list[int] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    trusted: int = 0


def _expected(item: FileSpec, known: KnownInput | None) -> tuple[int, str] | None:
    """(size, md5) the input must have: the catalog's, else the spec's, else unknown."""
    if known is not None:
        return known.size_bytes, known.md5
    if item.size_bytes is not None and item.md5 is not None:
        return item.size_bytes, item.md5
    return None


def _stat(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


def _from_site(
    spec: JobSpec,
    scratch: PosixEndpoint,
    source: Path,
    item: FileSpec,
    expected: tuple[int, str] | None,
    known: dict[str, KnownInput],
    checks: _Checks,
) -> int:
    """Stage one input from the site cache, never reading an unverified replica."""
    info = known.get(item.path)
    if info is not None and info.site_state not in (None, ReplicaState.ONLINE.value):
        return _from_archive(spec, scratch, item, expected, checks, f"it is {info.site_state}")
    if expected is None:  # nothing to check against (a file the catalog does not know)
        _log.warning("input %s is not in the catalog: its size and md5 are not checked", item.path)
        return (
            _link(scratch, source, item)
            if spec.stage_in == "symlink"
            else _copy(scratch, source, item, None)
        )
    before = _stat(source)
    if before[1] != expected[0]:
        problem = f"it has {before[1]} bytes, the catalog says {expected[0]}"
        return _corrupt(spec, scratch, item, expected, info, checks, problem)
    if info is not None and info.verified == before:  # checked since it last changed
        checks.trusted += 1
        return (
            _link(scratch, source, item)
            if spec.stage_in == "symlink"
            else _copy(scratch, source, item, expected)
        )
    try:
        if spec.stage_in == "symlink":
            got = md5_file(source)
            if got != expected:
                raise ChecksumMismatchError(
                    f"{source} does not match the catalog",
                    path=item.path,
                    expected=expected,
                    actual=got,
                    where=str(source),
                )
            size = _link(scratch, source, item)
        else:
            size = _copy(scratch, source, item, expected)
    except ChecksumMismatchError as exc:
        problem = f"(size, md5) expected {exc.expected}, found {exc.actual}"
        return _corrupt(spec, scratch, item, expected, info, checks, problem)
    if info is not None and _stat(source) == before:  # unchanged while it was read
        checks.verified.append((info.file_id, *before))
    return size


def _corrupt(
    spec: JobSpec,
    scratch: PosixEndpoint,
    item: FileSpec,
    expected: tuple[int, str],
    info: KnownInput | None,
    checks: _Checks,
    problem: str,
) -> int:
    scratch.discard(item.path)
    _log.warning(
        "site replica of input %s (%s) is corrupt: %s; reading the archive's copy instead",
        item.path,
        item.dataset_type,
        problem,
    )
    if info is not None:
        checks.corrupt.append(info.file_id)
    return _from_archive(spec, scratch, item, expected, checks, f"corrupt: {problem}")


def _from_archive(
    spec: JobSpec,
    scratch: PosixEndpoint,
    item: FileSpec,
    expected: tuple[int, str] | None,
    checks: _Checks,
    why: str,
) -> int:
    """A verified copy of the archive's file instead of a bad site replica."""
    store = object_store_archive(spec, scratch.root.parent / "spool")
    if store is not None:
        return _from_store_archive(store, scratch, item, expected, checks, why)
    archive = Path(spec.archive_root) / item.path if spec.archive_root else None
    if archive is None or not archive.is_file():
        raise StageInError(
            f"the site replica of input {item.path} ({item.dataset_type}) is unusable "
            f"({why}) and the archive has no online copy"
            + (f" at {archive}" if archive is not None else " (no archive_root)"),
            where=f"{spec.site_endpoint or 'site'}:{item.path}",
            hint="recall it (`skybatch backbone recall`) or repair the replica "
            "(`skybatch backbone verify`), then resubmit the job",
        )
    try:
        size = _copy(scratch, archive, item, expected)
    except ChecksumMismatchError as exc:
        raise StageInError(
            f"input {item.path} ({item.dataset_type}): the site replica is unusable ({why}) "
            f"and the archive's copy is corrupt too: (size, md5) expected {exc.expected}, "
            f"copied {exc.actual}",
            where=str(archive),
            hint="run `skybatch backbone verify --endpoint "
            f"{spec.archive_endpoint}` (it repairs from tape), then resubmit the job",
        ) from exc
    checks.replaced.append(item.path)
    return size


def _from_store_archive(
    store: ObjectStoreEndpoint,
    scratch: PosixEndpoint,
    item: FileSpec,
    expected: tuple[int, str] | None,
    checks: _Checks,
    why: str,
) -> int:
    """:func:`_from_archive` for an archive in an object store: its object, downloaded."""
    where = f"{store.location}{item.path}"
    if store.state(item.path) is not FileState.ONLINE:
        raise StageInError(
            f"the site replica of input {item.path} ({item.dataset_type}) is unusable "
            f"({why}) and the archive has no copy at {where}",
            where=f"{store.name}:{item.path}",
            hint="repair the replica (`skybatch backbone verify`), then resubmit the job",
        )
    try:
        size = _download(scratch, store, item, expected)
    except ChecksumMismatchError as exc:
        raise StageInError(
            f"input {item.path} ({item.dataset_type}): the site replica is unusable ({why}) "
            f"and the archive's copy is corrupt too: (size, md5) expected {exc.expected}, "
            f"copied {exc.actual}",
            where=where,
            hint=f"run `skybatch backbone verify --endpoint {store.name}`, then resubmit the job",
        ) from exc
    checks.replaced.append(item.path)
    return size


def object_store_archive(spec: JobSpec, spool: Path) -> ObjectStoreEndpoint | None:
    """The archive as an endpoint when it is in an object store (``archive_root`` is a
    URI such as ``s3://bucket/repo/``), its partial copies spooled in ``spool``; None
    when it is a directory (read by path) or not given."""
    if not spec.archive_root or not is_object_store(spec.archive_root):
        return None
    return ObjectStoreEndpoint(spec.archive_endpoint, spec.archive_root, spool_dir=spool)


def _download(
    scratch: PosixEndpoint,
    store: ObjectStoreEndpoint,
    item: FileSpec,
    expected: tuple[int, str] | None,
) -> int:
    size, _ = write_verified(
        Download(store, item.path), scratch, item.path, expected, durable=False
    )
    return size


def _link(scratch: PosixEndpoint, source: Path, item: FileSpec) -> int:
    size = os.stat(source).st_size
    if item.size_bytes is not None and size != item.size_bytes:
        raise StageInError(
            f"{source} has {size} bytes, the spec says {item.size_bytes}",
            where=str(source),
            hint="the site replica is corrupt: run `skybatch backbone verify` on the site",
        )
    scratch.link_from(source, item.path, "symlink")
    scratch.commit(item.path, durable=False)
    return size


def _copy(
    scratch: PosixEndpoint, source: Path, item: FileSpec, expected: tuple[int, str] | None
) -> int:
    size, _ = write_verified(source, scratch, item.path, expected, durable=False)
    return size


def _missing_hint(spec: JobSpec) -> str:
    if spec.stage_in == "archive":
        return (
            "it may be nearline (tape only): recall it with `skybatch backbone recall`, "
            "then resubmit the job"
        )
    return (
        f"replicate it to the site cache ({spec.site_endpoint or 'site'}) with "
        "`skybatch backbone replicate`, then resubmit the job"
    )
