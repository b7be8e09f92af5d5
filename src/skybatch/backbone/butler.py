"""Butler integration: register the file artifacts of Butler datasets in the catalog.

Every file of the given collections is registered on the archive endpoint (whose root
is the Butler datastore root, so the logical path is the datastore path) with its
dataset id, dataset type, data id and run. Files already in the catalog are skipped
without being read again, so re-running is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skybatch.errors import InputError
from skybatch.progress import ProgressFactory, no_bars

from .catalog import FileRecord
from .models import EdgeRelation
from .service import Backbone

if TYPE_CHECKING:
    from lsst.daf.butler import Butler, DatasetRef

__all__ = ["RegisterButlerReport", "register_butler", "register_refs"]


@dataclass
class RegisterButlerReport:
    datasets: int = 0
    registered: int = 0
    already_known: int = 0
    bytes: int = 0


def register_butler(
    backbone: Backbone,
    repo: str | Path,
    collections: Sequence[str],
    *,
    endpoint: str | None = None,
    dataset_types: Sequence[str] | str = "*",
    progress: ProgressFactory | None = None,
) -> RegisterButlerReport:
    """Register every file artifact of ``collections`` in ``repo`` on ``endpoint``."""
    from lsst.daf.butler import Butler
    from lsst.daf.butler.registry import MissingCollectionError

    with Butler.from_config(str(repo)) as butler:
        try:
            refs = butler.query_all_datasets(
                collections, name=dataset_types, find_first=False, limit=None
            )
        except MissingCollectionError as exc:
            raise InputError(
                str(exc),
                where=", ".join(collections),
                hint=f"list collections with `butler query-collections {repo}`",
            ) from None
        return register_refs(
            backbone, butler, refs, endpoint=endpoint, producer="register-butler", progress=progress
        )


def register_refs(
    backbone: Backbone,
    butler: Butler,
    refs: Sequence[DatasetRef],
    *,
    endpoint: str | None = None,
    producer: str = "butler",
    activity_id: int | None = None,
    progress: ProgressFactory | None = None,
) -> RegisterButlerReport:
    """Register the files of ``refs`` (datastore paths) on ``endpoint`` (the archive).

    With ``activity_id`` the new files get a ``wasGeneratedBy`` edge to that activity.
    """
    name = endpoint or backbone.archive_name()
    ep = backbone.endpoint(name)
    root = ep.root.resolve() if ep.capabilities.local_files else None
    report = RegisterButlerReport(datasets=len(refs))
    known = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
    report.already_known = len(known)
    new_refs = [r for r in refs if str(r.id) not in known]
    if not new_refs:
        return report
    uris = butler.get_many_uris(new_refs)
    # A disassembled composite has one file per component: the dataset id (unique in
    # the catalog) goes with the primary file, components are typed "type.component".
    items: list[tuple[DatasetRef, str | None, str]] = []
    for ref in new_refs:
        location = uris[ref]
        artifacts: list[tuple[str | None, Any]] = (
            [(None, location.primaryURI)] if location.primaryURI else []
        )
        artifacts += list(location.componentURIs.items())
        for component, uri in artifacts:
            relative = _relative(uri, root, ep.location)
            if relative is None:
                shown = uri.ospath if uri.isLocal else str(uri)
                raise InputError(
                    f"{shown} of dataset {ref.datasetType.name} is outside endpoint {name} "
                    f"({root or ep.location})",
                    where=shown,
                    hint="register the Butler datastore root as the archive endpoint",
                )
            items.append((ref, component, relative))
    bar = progress or no_bars

    def measure(item: tuple[DatasetRef, str | None, str]) -> FileRecord:
        ref, component, path = item
        size, md5 = ep.checksum(path)
        data_id: dict[str, Any] = dict(ref.dataId.required)
        name = ref.datasetType.name
        return FileRecord(
            path=path,
            size_bytes=size,
            md5=md5,
            dataset_id=str(ref.id) if component is None else None,
            dataset_type=name if component is None else f"{name}.{component}",
            data_id=data_id,
            run=ref.run,
            producer=producer,
        )

    records: list[FileRecord] = []
    with bar("register", len(items)) as advance, ThreadPoolExecutor(backbone.workers) as pool:
        for record in pool.map(measure, items):
            records.append(record)
            report.bytes += record.size_bytes
            advance()
    ids = backbone.catalog.register(records, name)
    report.registered = len(records)
    if activity_id is not None:
        backbone.catalog.add_edges(
            EdgeRelation.WAS_GENERATED_BY, list(ids.values()), activity_id=activity_id
        )
    return report


def _relative(uri: Any, root: Path | None, location: str) -> str | None:
    """The logical path of a datastore artifact on an endpoint rooted at local ``root``
    (resolved) or, for an object store (``root`` None), at the URI ``location``."""
    if root is not None:
        if not uri.isLocal:
            return None
        try:
            return Path(uri.ospath).resolve().relative_to(root).as_posix()
        except ValueError:
            return None
    text, base = str(uri), location if location.endswith("/") else location + "/"
    return text[len(base) :] if text.startswith(base) and len(text) > len(base) else None
