"""Output files (seed step 11.6): identity, size, md5, science metadata, provenance.

The list comes from what the quantum-backed butler actually wrote (its datastore
records of the actual outputs), not from the prediction: a task may legitimately
write fewer outputs than predicted, and the records give each file's path relative
to the datastore root, which is its logical path on every endpoint. Task metadata and
log datasets are outputs like any other. Quanta that failed contribute nothing: their
partial files are left in the workdir (and the junk tarball) for diagnosis only.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from lsst.daf.butler import DatasetRef
from lsst.daf.butler.datastore.record_data import DatastoreRecordData

from skybatch.backbone.checksums import md5_file

from .errors import JobError
from .execute import ExecutedQuantum, plain_data_id
from .metadata import ExtractorRegistry
from .spec import OutputFileReport
from .stats import PhaseClock

__all__ = ["collect_outputs"]

_log = logging.getLogger(__name__)


def collect_outputs(
    executed: list[ExecutedQuantum],
    datastore: Path,
    extractors: ExtractorRegistry,
    clock: PhaseClock | None = None,
) -> list[OutputFileReport]:
    """Describe every file written by the succeeded quanta, in quantum order.

    ``clock`` gets the seconds of ``md5`` (reading every file once) and ``metadata``
    (the rest: records, science metadata, provenance lists).
    """
    clock = clock or PhaseClock()
    start = time.perf_counter()
    md5_s = 0.0
    out: list[OutputFileReport] = []
    for item in executed:
        if item.report.status != "succeeded" or item.provenance is None:
            continue
        refs: dict[uuid.UUID, DatasetRef] = {
            ref.id: ref for refs in item.quantum.outputs.values() for ref in refs
        }
        used = sorted(str(i) for i in item.provenance.actual_inputs)
        for dataset_id, info in sorted(_written_files(item), key=lambda f: str(f[1].path)):
            ref = refs.get(dataset_id)
            if ref is None:
                _log.warning("quantum %s wrote unpredicted dataset %s", item.quantum_id, dataset_id)
                continue
            path = _logical(str(info.path), datastore)
            local = datastore / path
            md5_start = time.perf_counter()
            try:
                size, md5 = md5_file(local)
            except OSError as exc:
                raise JobError(
                    f"output {ref.datasetType.name} of quantum {item.quantum_id} was recorded "
                    f"but cannot be read: {exc}",
                    where=str(local),
                    hint="the job's scratch disk may be full or failing",
                ) from exc
            md5_s += time.perf_counter() - md5_start
            component = getattr(info, "component", None)
            storage_class = _storage_class_name(info, ref)
            out.append(
                OutputFileReport(
                    dataset_id=str(dataset_id),
                    dataset_type=ref.datasetType.name + (f".{component}" if component else ""),
                    storage_class=storage_class,
                    data_id=plain_data_id(ref.dataId.required),
                    run=str(ref.run),
                    path=path,
                    size_bytes=size,
                    md5=md5,
                    metadata=extractors.extract(storage_class, local),
                    generated_by=str(item.quantum_id),
                    used=used,
                )
            )
    clock.add("md5", md5_s)
    clock.add("metadata", time.perf_counter() - start - md5_s)
    return out


def _written_files(item: ExecutedQuantum) -> list[tuple[uuid.UUID, Any]]:
    """(dataset id, stored file info) of every file the quantum's butler recorded."""
    assert item.provenance is not None
    actual = item.provenance.actual_outputs
    found: list[tuple[uuid.UUID, Any]] = []
    for serialized in item.provenance.datastore_records.values():
        records = DatastoreRecordData.from_simple(serialized).records
        for dataset_id, by_table in records.items():
            if dataset_id not in actual:
                continue
            for infos in by_table.values():
                found.extend((uuid.UUID(str(dataset_id)), info) for info in infos)
    return found


def _logical(path: str, datastore: Path) -> str:
    """The datastore-relative path of a record (relative already unless outside the root)."""
    if "://" not in path and not path.startswith("/"):
        return path
    local = Path(path.removeprefix("file://"))
    try:
        return local.resolve().relative_to(datastore.resolve()).as_posix()
    except ValueError:
        raise JobError(
            f"output {path} was written outside the job datastore {datastore}",
            where=path,
            hint="the repository's file templates must give relative paths",
        ) from None


def _storage_class_name(info: Any, ref: DatasetRef) -> str:
    storage_class = getattr(info, "storageClass", None)
    name = getattr(storage_class, "name", None)
    return str(name) if name else ref.datasetType.storageClass_name
