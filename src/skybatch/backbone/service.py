"""The Data Backbone service object: catalog + endpoints, built from settings.

Operations live in small modules (``staging``, ``replication``, ``maintenance``) that
take a :class:`Backbone`; this module only wires the pieces together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skybatch.errors import InputError

from .catalog import Catalog, FileInfo
from .endpoints.base import Endpoint, TapeBackedEndpoint

if TYPE_CHECKING:
    from skybatch.settings import Settings

    from .endpoints import EndpointRegistry

__all__ = ["Backbone", "Endpoints", "SiteRequest"]


@dataclass(frozen=True)
class SiteRequest:
    """The site endpoint a run or campaign will use, as its operator gave it.

    Args:
        name: The endpoint's name.
        root: The root asked for (``--site-root``, a campaign's ``site.root``); None:
            the endpoint's own root, or ``default_root`` for a new endpoint.
        default_root: Where a new endpoint is rooted when no root is asked for.
        where: The option or field that named the site or its root, for errors.
        named: Whether the operator named the site (an unknown named site without a
            root is refused, listing the known endpoints, instead of being made).
        shared_filesystem: Whether the compute nodes see a new endpoint's directory
            (stored as the endpoint's ``shared_fs`` setting when they do not).
    """

    name: str
    root: str | Path | None
    default_root: Path
    where: str
    named: bool = True
    shared_filesystem: bool = True


@dataclass(frozen=True)
class Endpoints:
    """The archive and site endpoint names :meth:`Backbone.bootstrap` settled."""

    archive: str | None
    site: str | None


class Backbone:
    """Catalog and endpoints of one skybatch installation.

    Args:
        catalog: The file catalog.
        registry: Endpoint kinds (plugins).
        workers: Parallel transfers per operation.
    """

    def __init__(self, catalog: Catalog, registry: EndpointRegistry, workers: int = 2) -> None:
        self.catalog = catalog
        self.registry = registry
        self.workers = max(1, workers)
        self._endpoints: dict[str, Endpoint] = {}

    @classmethod
    def from_settings(cls, settings: Settings, workers: int = 2) -> Backbone:
        from skybatch.db.state import open_state_db

        from .endpoints import EndpointRegistry

        return cls(Catalog(open_state_db(settings)), EndpointRegistry.default(), workers)

    def close(self) -> None:
        """Close the state database's connections (a process that made a backbone per
        run, as a long-lived manager does, would otherwise keep each run's pool)."""
        bind = self.catalog.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()

    # -- endpoints --------------------------------------------------------------
    def add_endpoint(
        self, name: str, kind: str, root: str, settings: Mapping[str, Any] | None = None
    ) -> Endpoint:
        """Define an endpoint (validated by its kind before anything is stored)."""
        if not name or any(c.isspace() for c in name):
            raise InputError(f"invalid endpoint name {name!r}", where="NAME", hint="no spaces")
        from .endpoints.objectstore import is_object_store
        from .roots import check_object_store_root, check_root, endpoint_roots

        label = (
            f"the root of {'the archive endpoint' if kind == 'archive' else 'endpoint'} {name!r}"
        )
        where = f"root of endpoint {name!r} (--root)"
        if is_object_store(root):
            root = check_object_store_root(label, root, self.catalog, skip=[name], where=where)
        else:
            others = endpoint_roots(self.catalog, skip=[name])
            root = str(check_root(label, root, others, where=where))
        endpoint = self.registry.create(name, kind, root, dict(settings or {}))
        self.catalog.add_endpoint(name, kind, root, dict(settings or {}))
        self._endpoints[name] = endpoint
        return endpoint

    def bootstrap(
        self,
        repo: Path,
        *,
        subject: str,
        where: str,
        site: SiteRequest | None = None,
        make: bool = True,
        make_site: bool = True,
    ) -> Endpoints:
        """The archive endpoint of Butler repository ``repo`` (its directory or
        configuration file; the archive is rooted at its datastore root, see
        :mod:`skybatch.repository`) and the site endpoint ``site``, checked and made
        on first use: the one bootstrap of ``skybatch run``, ``campaign submit`` and
        ``demo run``.

        In order, before anything is written: the site's root (asked for, the
        endpoint's own, or the default) must not overlap the repository or another
        endpoint (:func:`~skybatch.backbone.roots.check_site_root`, error named by
        ``site.where``); the home's archive must be rooted at the repository's
        datastore root (error named by ``where``, the repository called ``subject``).
        Then, if ``make``, the archive is made there when there is none, and, if
        ``make_site`` too, the site endpoint when it is unknown; a known site asked
        for at another root is refused.

        Raises:
            OverlappingRootError: the site's root overlaps.
            InputError: the archive is rooted elsewhere; a known site's root differs.
            UnknownEndpointError: a named, unknown site without a root.
        """
        from skybatch.repository import resolve_repository

        repository = resolve_repository(repo, where=where)
        root = repository.archive_root
        if site is not None:
            from .roots import check_site_root

            check_site_root(  # before the endpoints are made: a cache never overlaps the repo
                self.catalog,
                repo=repository.location,
                site=site.name,
                root=site.root,
                default_root=site.default_root,
                where=site.where,
            )
        archive = self.archive_of(root, subject=subject, where=where)
        if not make:
            return Endpoints(archive, None)
        if archive is None:
            self.add_endpoint("archive", "archive", root, {})
            archive = "archive"
        if site is None or not make_site:
            return Endpoints(archive, None)
        return Endpoints(archive, self._site(site))

    def archive_of(self, root: str | Path, *, subject: str, where: str) -> str | None:
        """The archive endpoint's name (None: there is none yet); refused if it is
        rooted elsewhere than ``root`` (a repository's resolved datastore root, or the
        URI of a datastore in an object store)."""
        from .endpoints.objectstore import is_object_store, normalize_root

        def same(stored: str) -> bool:
            if is_object_store(stored) or is_object_store(root):
                remote = is_object_store(stored) and is_object_store(root)
                return remote and normalize_root(stored) == normalize_root(str(root))
            return Path(stored).resolve() == Path(root).resolve()

        for row in self.catalog.endpoints():
            if row.kind == "archive":
                if not same(row.root):
                    raise InputError(
                        f"this skybatch home already archives {row.root} (endpoint "
                        f"{row.name!r}), not the datastore of {subject} ({root})",
                        where=where,
                        hint="use a skybatch home (--home) per repository, or the "
                        "repository the home archives",
                    )
                return row.name
        return None

    def _site(self, site: SiteRequest) -> str:
        known = {e.name: e for e in self.catalog.endpoints()}
        if site.name not in known:
            if site.named and site.root is None:
                self.catalog.endpoint_row(site.name)  # raises with the known names
            root = Path(site.root).resolve() if site.root else site.default_root
            extra = {} if site.shared_filesystem else {"shared_fs": False}
            self.add_endpoint(site.name, "site", str(root), extra)
        elif (
            site.root is not None
            and Path(known[site.name].root).resolve() != Path(site.root).resolve()
        ):
            raise InputError(
                f"the site endpoint {site.name!r} is rooted at {known[site.name].root}, "
                f"not {site.root}",
                where=f"root of site {site.name}",
                hint="give the endpoint's root, leave the root unset, or name another site",
            )
        return site.name

    def endpoint(self, name: str) -> Endpoint:
        if name not in self._endpoints:
            row = self.catalog.endpoint_row(name)
            self._endpoints[name] = self.registry.create(row.name, row.kind, row.root, row.settings)
        return self._endpoints[name]

    def archive_name(self) -> str:
        """The one endpoint with a tape tier (kind ``archive``)."""
        names = [e.name for e in self.catalog.endpoints() if e.kind == "archive"]
        if len(names) != 1:
            raise InputError(
                f"expected exactly one archive endpoint, found {len(names)}: {names}",
                where="endpoints",
                hint="add one with `skybatch backbone endpoint add archive --kind archive "
                "--root REPO` or name the endpoint explicitly",
            )
        return names[0]

    def tape_endpoint(self, name: str) -> TapeBackedEndpoint:
        endpoint = self.endpoint(name)
        if not isinstance(endpoint, TapeBackedEndpoint):
            raise InputError(
                f"endpoint {name!r} has no tape tier",
                where=name,
                hint="recall and release apply to the archive endpoint",
            )
        return endpoint

    # -- selection --------------------------------------------------------------
    def select_files(
        self,
        *,
        paths: Sequence[str] = (),
        dataset_ids: Sequence[str] = (),
        run: str | None = None,
        dataset_type: str | None = None,
        path_prefix: str | None = None,
    ) -> list[FileInfo]:
        """Files named by paths or dataset ids, or matching run/type/prefix; unknown names fail."""
        from .errors import UnknownFileError

        out: dict[int, FileInfo] = {}
        if paths:
            found = self.catalog.files_by_paths(paths)
            missing = [p for p in paths if p not in found]
            if missing:
                raise UnknownFileError(
                    f"{len(missing)} path(s) not in the catalog, e.g. {missing[0]}",
                    where=missing[0],
                    hint="register them first with `skybatch backbone register`",
                )
            out.update({f.id: f for f in found.values()})
        if dataset_ids:
            by_id = self.catalog.files_by_dataset_ids(dataset_ids)
            missing = [d for d in dataset_ids if str(d) not in by_id]
            if missing:
                raise UnknownFileError(
                    f"{len(missing)} dataset id(s) not in the catalog, e.g. {missing[0]}",
                    where=str(missing[0]),
                    hint="register the Butler collection with `skybatch backbone register-butler`",
                )
            out.update({f.id: f for f in by_id.values()})
        if run is not None or dataset_type is not None or path_prefix is not None:
            for f in self.catalog.files(
                run=run, dataset_type=dataset_type, path_prefix=path_prefix
            ):
                out[f.id] = f
        return sorted(out.values(), key=lambda f: f.path)
