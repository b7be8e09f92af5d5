"""Endpoint roots never overlap (seed steps 6, 8): one check wherever an endpoint is made.

A site cache rooted at the Butler repository (or inside or above the archive, or
another cache) makes the "site copies" of files the repository's own files, and the
first eviction of those copies deletes the repository's data. Every root is therefore
resolved (``realpath``: symlinks followed, ``~`` expanded) and compared with every
other endpoint's root, the archive's root and the Butler repository's root (its
datastore root): equal, inside or above is refused, naming both paths and the field or
option that set the new root.

The archive is the one exception by design: its root *is* the Butler datastore root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skybatch.errors import InputError

from .endpoints.objectstore import is_object_store, normalize_root

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = [
    "NamedRoot",
    "OverlappingRootError",
    "check_object_store_root",
    "check_root",
    "check_site_root",
    "describe_problem",
    "endpoint_roots",
    "overlap",
    "repository_roots",
    "resolve_root",
    "root_problem",
]


class OverlappingRootError(InputError):
    """An endpoint root is equal to, inside or above another protected root.

    Args:
        root: The refused root (resolved).
        other: The root it overlaps (resolved).
    """

    def __init__(
        self,
        message: str,
        *,
        root: Path,
        other: Path,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.root = root
        self.other = other


@dataclass(frozen=True)
class NamedRoot:
    """A protected directory and what it is, for messages (``the archive endpoint 'x'``)."""

    label: str
    path: Path


def resolve_root(path: str | os.PathLike[str]) -> Path:
    """The absolute, symlink-free form of ``path`` (it need not exist yet)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def overlap(root: Path, other: Path) -> str | None:
    """How resolved ``root`` overlaps resolved ``other``: a phrase, or None if apart."""
    if root == other:
        return "is the same directory as"
    if other in root.parents:
        return "lies inside"
    if root in other.parents:
        return "contains"
    return None


def root_problem(label: str, root: Path, others: Iterable[NamedRoot]) -> NamedRoot | None:
    """The first of ``others`` that resolved ``root`` overlaps, or None."""
    for other in others:
        if overlap(root, other.path) is not None:
            return other
    return None


def _message(label: str, root: Path, other: NamedRoot) -> str:
    return f"{label} {root} {overlap(root, other.path)} {other.label} {other.path}"


_HINT = (
    "give every endpoint its own directory, apart from the Butler repository, the archive "
    "and every other endpoint (not equal, not inside, not above): evicting a cached copy "
    "would otherwise delete the other's files"
)


def check_root(
    label: str, root: str | os.PathLike[str], others: Iterable[NamedRoot], *, where: str
) -> Path:
    """Return ``root`` resolved; OverlappingRootError if it overlaps one of ``others``."""
    resolved = resolve_root(root)
    other = root_problem(label, resolved, others)
    if other is not None:
        raise OverlappingRootError(
            _message(label, resolved, other),
            root=resolved,
            other=other.path,
            where=where,
            hint=_HINT,
        )
    return resolved


def check_object_store_root(
    label: str, root: str, catalog: Catalog, *, skip: Sequence[str], where: str
) -> str:
    """Return the object-store ``root`` normalized (``s3://bucket/prefix/``);
    OverlappingRootError if it equals, lies inside or contains another endpoint's."""
    normalized = normalize_root(root)
    for e in catalog.endpoints():
        if e.name in skip or not is_object_store(e.root):
            continue
        other = normalize_root(e.root)
        if normalized.startswith(other) or other.startswith(normalized):
            how = (
                "is the same location as"
                if normalized == other
                else ("lies inside" if normalized.startswith(other) else "contains")
            )
            raise OverlappingRootError(
                f"{label} {normalized} {how} the root of endpoint {e.name!r} {other}",
                root=Path(normalized),
                other=Path(other),
                where=where,
                hint=_HINT,
            )
    return normalized


def describe_problem(label: str, root: Path, other: NamedRoot) -> tuple[str, str]:
    """(message, hint) of an overlap, for checks that collect problems instead of raising."""
    return _message(label, root, other), _HINT


def endpoint_roots(catalog: Catalog, *, skip: Sequence[str] = ()) -> list[NamedRoot]:
    """The local roots of the catalog's endpoints (except those named in ``skip``; an
    object store's root is no local directory and overlaps none)."""
    return [
        NamedRoot(
            f"the root of {'the archive endpoint' if e.kind == 'archive' else 'endpoint'} "
            f"{e.name!r}",
            resolve_root(e.root),
        )
        for e in catalog.endpoints()
        if e.name not in skip and not is_object_store(e.root)
    ]


def repository_roots(repo: str | os.PathLike[str]) -> list[NamedRoot]:
    """The Butler repository's datastore root (:mod:`skybatch.repository`), and its
    directory (``<butlerRoot>``) when the datastore lies in it: a repository whose
    ``butler.yaml`` sits apart (``/etc/butler``, a home directory) protects only its
    datastore, so a cache may still live under that directory.

    The configuration is parsed once per version of the file (its inode, size and
    modification time: :func:`skybatch.run.caches.butler_config`): building a
    ``ButlerConfig`` costs ~0.15 s, and a campaign manager checks the same repository
    for every group it starts."""
    from skybatch.repository import resolve_repository

    try:
        repository = resolve_repository(repo, where=str(repo))
    except InputError:  # not a repository (checked and reported elsewhere)
        base = resolve_root(repo)
        return [NamedRoot("the Butler repository", base.parent if base.is_file() else base)]
    base, datastore = repository.butler_root, repository.datastore_root
    if datastore is None or datastore == base:  # an object store overlaps no directory
        return [NamedRoot("the Butler repository", base)]
    roots = [NamedRoot("the Butler repository's datastore root", datastore)]
    if base in datastore.parents:
        roots.insert(0, NamedRoot("the Butler repository", base))
    return roots


def check_site_root(
    catalog: Catalog,
    *,
    repo: str | os.PathLike[str],
    site: str,
    root: str | os.PathLike[str] | None,
    default_root: str | os.PathLike[str],
    where: str,
) -> None:
    """Refuse a site cache root (given, the endpoint's own, or the default) that overlaps.

    Compared with the repository (and its datastore root) and every other endpoint of
    the catalog; called before a run or campaign writes anything.
    """
    known = {e.name: e for e in catalog.endpoints()}
    if root is None:
        root = known[site].root if site in known else default_root
    others = [
        *repository_roots(repo),
        *endpoint_roots(catalog, skip=[site]),
    ]
    check_root(f"the root of site endpoint {site!r}", root, others, where=where)
