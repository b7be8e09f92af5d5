"""The Data Backbone service object: catalog + endpoints, built from settings.

Operations live in small modules (``staging``, ``replication``, ``maintenance``) that
take a :class:`Backbone`; this module only wires the pieces together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skybatch.errors import InputError

from .catalog import Catalog, FileInfo
from .endpoints.base import Endpoint, TapeBackedEndpoint

if TYPE_CHECKING:
    from skybatch.settings import Settings

    from .endpoints import EndpointRegistry

__all__ = ["Backbone"]


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

    # -- endpoints --------------------------------------------------------------
    def add_endpoint(
        self, name: str, kind: str, root: str, settings: Mapping[str, Any] | None = None
    ) -> Endpoint:
        """Define an endpoint (validated by its kind before anything is stored)."""
        if not name or any(c.isspace() for c in name):
            raise InputError(f"invalid endpoint name {name!r}", where="NAME", hint="no spaces")
        from .roots import check_root, endpoint_roots

        label = (
            f"the root of {'the archive endpoint' if kind == 'archive' else 'endpoint'} {name!r}"
        )
        others = endpoint_roots(self.catalog, skip=[name])
        root = str(check_root(label, root, others, where=f"root of endpoint {name!r} (--root)"))
        endpoint = self.registry.create(name, kind, Path(root), dict(settings or {}))
        self.catalog.add_endpoint(name, kind, root, dict(settings or {}))
        self._endpoints[name] = endpoint
        return endpoint

    def endpoint(self, name: str) -> Endpoint:
        if name not in self._endpoints:
            row = self.catalog.endpoint_row(name)
            self._endpoints[name] = self.registry.create(
                row.name, row.kind, Path(row.root), row.settings
            )
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
