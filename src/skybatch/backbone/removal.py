"""The one way a replica's file is deleted (seed steps 8, 15, 16): checked, then removed.

Every eviction, quota clean-up, release to tape, purge and leftover clean-up goes
through :func:`remove_replicas`, :func:`release_replicas` or :func:`remove_unregistered`,
which refuse, before deleting anything, to

- delete a directory entry that lies inside *another* endpoint's root (e.g. a "site
  copy" that is really the archive's file, because the site was rooted at the Butler
  repository in a home made before roots were checked), and
- delete the last copy of a file: unless told the file itself goes (``purge``),
  another endpoint must hold a copy that really is a different file on disk and is
  there now, or a tape copy.

The catalog alone cannot promise either (two replicas may name the same file on
disk), so the checks look at the filesystem: paths are compared after resolving
their directories (``realpath``), as the endpoint roots are. An object in an object
store (an endpoint without local files) is named by its URI: it lies inside no local
root, and is another file than any local one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .catalog import FileInfo, Placement
from .endpoints.base import Endpoint, FileState, TapeBackedEndpoint
from .endpoints.objectstore import is_object_store
from .errors import BackboneError
from .models import ReplicaState
from .roots import resolve_root
from .service import Backbone

__all__ = [
    "UnsafeRemovalError",
    "refuse",
    "release_replicas",
    "remove_replicas",
    "remove_unregistered",
    "unsafe_removals",
]


class UnsafeRemovalError(BackboneError):
    """A deletion would destroy another endpoint's file or the last copy of a file.

    Args:
        endpoint: The endpoint the replicas were to be deleted from.
        reasons: Logical path → why it may not be deleted.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        reasons: dict[str, str],
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.endpoint = endpoint
        self.reasons = reasons


class _Entries:
    """Directory entries with their directories resolved (the link itself stays), each
    directory resolved once per call: files share directories by the thousand."""

    def __init__(self) -> None:
        self._dirs: dict[Path, Path] = {}

    def of(self, ep: Endpoint, path: str) -> Path | str:
        """The entry holding ``path`` on ``ep``: its local file, or its object's URI."""
        if not ep.capabilities.local_files:
            return f"{ep.location.rstrip('/')}/{path}"
        return self(ep.local_path(path))

    def __call__(self, local: Path) -> Path:
        parent = local.parent
        resolved = self._dirs.get(parent)
        if resolved is None:
            resolved = self._dirs[parent] = resolve_root(parent)
        return resolved / local.name


def _foreign_roots(backbone: Backbone, endpoint: str) -> dict[str, Path]:
    return {
        e.name: resolve_root(e.root)
        for e in backbone.catalog.endpoints()
        if e.name != endpoint and not is_object_store(e.root)
    }


def _inside_other(entry: Path | str, roots: dict[str, Path]) -> str | None:
    if isinstance(entry, str):  # an object: inside no local root
        return None
    for name, root in roots.items():
        if entry == root or root in entry.parents:
            return f"{entry} lies inside the root of endpoint {name!r} ({root})"
    return None


def _has_other_copy(
    backbone: Backbone,
    f: FileInfo,
    endpoint: str,
    entry: Path | str,
    placements: Sequence[Placement],
    entries: _Entries,
) -> bool:
    """Whether another endpoint holds ``f`` on a different file, now, or on tape
    (``placements``: the file's replicas)."""
    for p in placements:
        if p.endpoint == endpoint:
            continue
        other = backbone.endpoint(p.endpoint)
        if (
            p.replica.state == ReplicaState.ONLINE
            and other.state(f.path) is FileState.ONLINE
            and entries.of(other, f.path) != entry
        ):
            return True
        if (
            p.replica.on_tape
            and isinstance(other, TapeBackedEndpoint)
            and other.tape_locations([f.path])
        ):
            return True
    return False


def unsafe_removals(
    backbone: Backbone, endpoint: str, files: Sequence[FileInfo], *, purge: bool = False
) -> dict[str, str]:
    """Logical path → why deleting its replica on ``endpoint`` is refused (empty: all safe).

    ``purge``: every replica of the files goes (`backbone delete`, intermediates), so
    only the "inside another endpoint's root" rule applies.
    """
    if not files:
        return {}
    ep = backbone.endpoint(endpoint)
    roots = _foreign_roots(backbone, endpoint)
    by_file: dict[int, list[Placement]] = {}
    for p in [] if purge else backbone.catalog.placements([f.id for f in files]):
        by_file.setdefault(p.file.id, []).append(p)
    reasons: dict[str, str] = {}
    entries = _Entries()
    for f in files:
        entry = entries.of(ep, f.path)
        reason = _inside_other(entry, roots)
        if (
            reason is None
            and not purge
            and not _has_other_copy(backbone, f, endpoint, entry, by_file.get(f.id, []), entries)
        ):
            reason = (
                f"{entry} is the last copy of {f.path}: no other endpoint holds it "
                "online on a different file, nor on tape"
            )
        if reason is not None:
            reasons[f.path] = reason
    return reasons


def refuse(endpoint: str, reasons: dict[str, str], total: int, what: str) -> None:
    """Raise UnsafeRemovalError for ``reasons`` (path → why) if there are any."""
    if not reasons:
        return
    path, reason = next(iter(reasons.items()))
    raise UnsafeRemovalError(
        f"refusing to {what} {len(reasons)} of {total} replica(s) on {endpoint}: {reason}"
        + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""),
        endpoint=endpoint,
        reasons=reasons,
        where=f"{endpoint}:{path}",
        hint="nothing was deleted; check the endpoint roots (`skybatch backbone endpoint "
        "list`: no root may be equal to, inside or above another one or the Butler "
        "repository) and the file's replicas (`skybatch backbone locate`)",
    )


def remove_replicas(
    backbone: Backbone, endpoint: str, files: Sequence[FileInfo], *, purge: bool = False
) -> int:
    """Delete the replicas of ``files`` on ``endpoint`` and drop them from the catalog.

    All are checked first (:func:`unsafe_removals`); if any is unsafe nothing is
    deleted and UnsafeRemovalError names it. Returns the number removed.
    """
    refuse(endpoint, unsafe_removals(backbone, endpoint, files, purge=purge), len(files), "delete")
    ep = backbone.endpoint(endpoint)
    for f in files:
        ep.remove(f.path)
    backbone.catalog.drop_replicas([f.id for f in files], endpoint)
    return len(files)


def release_replicas(backbone: Backbone, endpoint: str, files: Sequence[FileInfo]) -> int:
    """Drop the disk copies of files on ``endpoint``'s tape tier: they become nearline.

    The endpoint itself refuses files without a tape copy; this refuses entries that
    lie inside another endpoint's root. Returns the number released.
    """
    archive = backbone.tape_endpoint(endpoint)
    roots = _foreign_roots(backbone, endpoint)
    entries = _Entries()
    reasons = {
        f.path: reason
        for f in files
        if (reason := _inside_other(entries.of(archive, f.path), roots)) is not None
    }
    refuse(endpoint, reasons, len(files), "release")
    archive.release([f.path for f in files])
    backbone.catalog.set_replicas([f.id for f in files], endpoint, ReplicaState.NEARLINE, True)
    return len(files)


def remove_unregistered(backbone: Backbone, endpoint: str, paths: Sequence[str]) -> int:
    """Delete files the catalog does not know on ``endpoint`` (leftovers of a failed job).

    Registered paths are skipped (their replicas go through :func:`remove_replicas`);
    a path inside another endpoint's root is refused. Returns the number deleted.
    """
    known = backbone.catalog.files_by_paths(list(paths))
    ep: Endpoint = backbone.endpoint(endpoint)
    roots = _foreign_roots(backbone, endpoint)
    todo = [p for p in dict.fromkeys(paths) if p not in known]
    entries = _Entries()
    reasons = {p: reason for p in todo if (reason := _inside_other(entries.of(ep, p), roots))}
    refuse(endpoint, reasons, len(todo), "delete")
    for p in todo:
        ep.remove(p)
    return len(todo)
