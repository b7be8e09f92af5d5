"""Butler repositories as the Butler names them (seed steps 1-2 and 6): one resolution.

A repository is given (``skybatch run --repo``, a campaign's ``repo:``, the ``demo``
commands, ``backbone register-butler``) the ways daf_butler accepts one:

- a directory holding ``butler.yaml``;
- the path of a ``butler.yaml`` (any name), or its ``file://`` URI;
- a label of the repository index (``DAF_BUTLER_REPOSITORY_INDEX`` or
  ``DAF_BUTLER_REPOSITORIES``), looked up first, as ``Butler.from_config`` does.

:func:`resolve_repository` turns any of them into a :class:`ButlerRepository`: where
its configuration is (what every Butler of the run is opened with) and its
**datastore root** as the Butler resolves it (``<butlerRoot>`` is the directory of
``butler.yaml`` unless the configuration sets ``root``). The archive endpoint of the
backbone is rooted at the datastore root, wherever ``butler.yaml`` lives: a repository
whose configuration sits apart from its files (``/etc/butler/main.yaml`` naming
``datastore.root: /data/main``) is archived at ``/data/main``.

A datastore in an object store (``datastore.root: s3://bucket/repo/``) is archived
there: :attr:`ButlerRepository.archive_root` is then its URI (the archive endpoint
works through ``lsst-resources``). The configuration itself must be a local file
(its registry is named there: a local SQLite file or a PostgreSQL server).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from skybatch.errors import InputError

__all__ = ["CONFIG_NAME", "ButlerRepository", "resolve_repository"]

#: The configuration file's name in a repository directory.
CONFIG_NAME = "butler.yaml"

_HINT = (
    "give a Butler repository: its directory, its butler.yaml (path or file:// URI), or "
    "a label of the repository index (DAF_BUTLER_REPOSITORY_INDEX); create one with "
    "`butler create` or `skybatch demo init`"
)


@dataclass(frozen=True)
class ButlerRepository:
    """A resolved Butler repository.

    Attributes:
        given: The name as given (a directory, a file, a URI or an index label).
        config_file: The repository's configuration file (absolute, local).
        butler_root: What ``<butlerRoot>`` stands for in the configuration.
        datastore_root: The file datastore's root as the Butler resolves it (absolute),
            what datastore paths are relative to; None when the datastore is in an
            object store (its URI is then :attr:`datastore_uri`).
        datastore_uri: The datastore root's URI (``file:///...`` or ``s3://...``).
    """

    given: str
    config_file: Path
    butler_root: Path
    datastore_root: Path | None
    datastore_uri: str

    @property
    def archive_root(self) -> str:
        """The archive endpoint's root: the datastore root's directory, or its URI when
        the datastore is in an object store."""
        return str(self.datastore_root) if self.datastore_root is not None else self.datastore_uri

    @property
    def location(self) -> Path:
        """How skybatch names the repository to a Butler and records it: the
        directory when the configuration is its ``butler.yaml``, else the file."""
        if self.config_file.name == CONFIG_NAME:
            return self.config_file.parent
        return self.config_file


def resolve_repository(
    given: str | os.PathLike[str], *, where: str, base_dir: Path | None = None
) -> ButlerRepository:
    """Resolve a repository named as the Butler names it (see the module docstring).

    Args:
        given: Directory, ``butler.yaml`` path or ``file://`` URI, or index label.
        where: Where it was given (``--repo``, ``campaign.yaml: repo``), for errors.
        base_dir: What a relative path is relative to (default: the working directory).

    Raises:
        InputError: it names no repository, or one skybatch cannot archive (its
            configuration or datastore is not on a local filesystem, or it has no
            single file datastore).
    """
    from lsst.daf.butler._butler_repo_index import ButlerRepoIndex
    from lsst.resources import ResourcePath

    text = os.fspath(given)
    if not text:
        raise InputError("no Butler repository given", where=where, hint=_HINT)
    uri: ResourcePath | None = None
    if isinstance(given, str) and ButlerRepoIndex.get_known_repos():
        try:  # an index label wins, as in Butler.from_config
            uri = ButlerRepoIndex.get_repo_uri(text)
        except KeyError:
            uri = None
    if uri is None:
        if "://" in text and not text.startswith("file://"):
            _not_local(text, text, where)
        if "://" in text:
            uri = ResourcePath(text)
        else:
            path = Path(text).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            uri = ResourcePath(os.path.abspath(path))
    if not uri.isLocal:
        _not_local(text, str(uri), where)
    local = Path(uri.ospath)
    config_file = local / CONFIG_NAME if local.is_dir() else local
    if not config_file.is_file():
        known = sorted(ButlerRepoIndex.get_known_repos())
        aliases = f" (repository index labels: {', '.join(known)})" if known else ""
        raise InputError(
            f"{local} is not a Butler repository (it has no {CONFIG_NAME}){aliases}"
            if local.is_dir()
            else f"no Butler repository at {text}: {local} does not exist{aliases}",
            where=where,
            hint=_HINT,
        )
    config_file = Path(os.path.abspath(config_file))  # symlinks kept: named as given
    key = _config_key(config_file)
    cached = _ROOTS.get(key) if key is not None else None
    if cached is not None:
        return ButlerRepository(text, config_file, *cached)
    try:
        config = _butler_config(config_file)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"cannot read the Butler configuration {config_file}: {first}",
            where=where,
            hint=_HINT,
        ) from None
    root = config.get("root") or config.configDir
    butler_root = Path(ResourcePath(root, forceDirectory=True).ospath).resolve()
    datastore, datastore_uri = _datastore_root(config, butler_root, config_file, where)
    if key is not None:
        if len(_ROOTS) >= _MAX_ROOTS:
            _ROOTS.clear()
        _ROOTS[key] = (butler_root, datastore, datastore_uri)
    return ButlerRepository(text, config_file, butler_root, datastore, datastore_uri)


#: (butler root, datastore root) per version of a configuration file (its path, inode,
#: size and modification time): a campaign manager resolves the same repository for
#: every group it starts, and reading the roots out of a ButlerConfig takes
#: milliseconds (building it, ~0.15 s, is cached by skybatch.run.caches).
_ROOTS: dict[tuple[str, int, int, int], tuple[Path, Path | None, str]] = {}
_MAX_ROOTS = 64


def _config_key(config_file: Path) -> tuple[str, int, int, int] | None:
    from skybatch.run.caches import config_key

    return config_key(config_file)


def _not_local(text: str, uri: str, where: str) -> NoReturn:
    raise InputError(
        f"the Butler repository {text!r} is not on a local filesystem ({uri})",
        where=where,
        hint="give a repository whose butler.yaml is a local file (a copy of it is "
        "enough when it names its registry and datastore by absolute location)",
    )


def _butler_config(config_file: Path) -> Any:
    from skybatch.run.caches import butler_config

    return butler_config(config_file)


def _datastore_root(
    config: Any, butler_root: Path, config_file: Path, where: str
) -> tuple[Path | None, str]:
    """The one file datastore root of ``config`` (also inside a chained datastore): its
    directory (None in an object store) and its URI."""
    from lsst.daf.butler.repo_relocation import replaceRoot
    from lsst.resources import ResourcePath

    datastore = config.get("datastore") or {}
    values = [datastore["root"]] if "root" in datastore else []
    for child in datastore.get("datastores", []) or []:
        if hasattr(child, "get") and child.get("root"):
            values.append(child["root"])
    roots = [ResourcePath(replaceRoot(str(v), butler_root), forceDirectory=True) for v in values]
    if len(roots) != 1:
        raise InputError(
            f"the Butler repository {config_file} has {len(roots)} datastore roots; "
            "skybatch archives a repository with one file datastore",
            where=where,
            hint="give a repository whose datastore is a single FileDatastore",
        )
    (uri,) = roots
    if not uri.isLocal:
        if uri.scheme != "s3":
            raise InputError(
                f"the datastore of the Butler repository {config_file} is at {uri}; "
                "skybatch archives datastores in a directory or in an S3 object store",
                where=where,
                hint="give a repository whose datastore root is a directory or s3://...",
            )
        return None, str(uri)
    local = Path(uri.ospath).resolve()
    return local, str(ResourcePath(local, forceDirectory=True))
