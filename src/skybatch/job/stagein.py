"""Stage-in (seed step 11.1): make the job's inputs appear under ``workdir/datastore``.

The job datastore mirrors the logical (datastore-relative) paths of the inputs, so the
datastore records in the quantum graph, which hold those same relative paths, resolve
to the staged files once the job's butler config points its root there.

- ``symlink``: the site cache is on a shared filesystem; link to it (no bytes move;
  the size is checked when the spec knows it).
- ``copy``: copy from the site cache to local disk (better where the shared
  filesystem is slow for random reads), verified.
- ``archive``: no shared filesystem; fetch from the central archive, verified.

Verified copies reuse the backbone's two-phase write (temp name, size + md5 against the
spec, rename), so a partial copy never has a final name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from skybatch.backbone.endpoints.posix import PosixEndpoint
from skybatch.backbone.errors import BackboneError, ChecksumMismatchError
from skybatch.backbone.transfer import write_verified
from skybatch.errors import InputError

from .errors import JobSpecError, StageInError
from .spec import FileSpec, JobSpec

__all__ = ["StageInResult", "source_root", "stage_in"]

_log = logging.getLogger(__name__)

#: Name of the job-local scratch "endpoint" in messages.
SCRATCH = "job-scratch"


@dataclass(frozen=True)
class StageInResult:
    """What stage-in did: the mode, the logical paths staged and the bytes behind them."""

    mode: str
    paths: list[str]
    bytes: int


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
    root = source_root(spec)
    scratch = PosixEndpoint(SCRATCH, datastore)
    staged: list[str] = []
    seen: set[str] = set()
    total = 0
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
        source = root / item.path
        if not source.is_file():
            raise StageInError(
                f"input {item.path} ({item.dataset_type}, dataset {item.dataset_id}) "
                f"is missing from {root}",
                where=str(source),
                hint=_missing_hint(spec),
            )
        try:
            if spec.stage_in == "symlink":
                total += _link(scratch, source, item)
            else:
                total += _copy(scratch, source, item)
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
    _log.info(
        "staged %d input(s), %d bytes, by %s from %s", len(staged), total, spec.stage_in, root
    )
    return StageInResult(spec.stage_in, staged, total)


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


def _copy(scratch: PosixEndpoint, source: Path, item: FileSpec) -> int:
    expected = None
    if item.size_bytes is not None and item.md5 is not None:
        expected = (item.size_bytes, item.md5)
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
