"""Register a run's outputs in the central Butler (seed step 12).

Jobs write through quantum-backed butlers, which touch no registry. Once the files are
in the archive (the datastore root) at their template paths, a quantum-backed butler
over the repository reads them in place and ``Butler.transfer_from`` records them in
the registry with their original dataset ids, without copying a byte. Datasets
already registered (a resumed run) are skipped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

__all__ = ["OutputRef", "ingest_outputs", "init_output_refs", "write_init_outputs"]


@dataclass(frozen=True)
class OutputRef:
    dataset_id: str
    dataset_type: str
    data_id: dict[str, Any]
    run: str
    path: str | None = None  # logical (datastore-relative) path, when known


def _open_init(qgraph: Any) -> Any:
    """The graph's pipeline and init quanta: read from a ``.qg`` path, or the graph
    object itself when the caller already holds it in memory."""
    if not isinstance(qgraph, str | Path):
        return qgraph
    from lsst.pipe.base.pipeline_graph import TaskImportMode
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

    with PredictedQuantumGraph.open(
        qgraph, import_mode=TaskImportMode.ASSUME_CONSISTENT_EDGES
    ) as reader:
        reader.read_init_quanta()
    return reader.finish()


def write_init_outputs(qgraph: Any, butler_config: str) -> list[OutputRef]:
    """Write configs, packages and task init-outputs of the run (pre-exec init).

    ``packages`` lists the environment's distributions (:mod:`.packages`), the same for
    every run of one installation.

    They go straight to the repository's datastore (small files written once per run)
    and are registered in the Butler with the other outputs at the end.
    """
    from skybatch.run.caches import butler_config as parsed_config

    from .packages import write_packages

    qg = _open_init(qgraph)
    with qg.make_init_qbb(parsed_config(butler_config)) as qbb:
        # pipe_base's init_output_run, but with the environment's packages.
        qg.write_configs(qbb, compare_existing=True)
        write_packages(qg, qbb)
        qg.write_init_outputs(qbb, skip_existing=True)
    return init_output_refs(qg)


def init_output_refs(qg: Any) -> list[OutputRef]:
    out: list[OutputRef] = []
    for label in ["", *qg.pipeline_graph.tasks]:
        for ref in qg.get_init_outputs(label).values():
            out.append(
                OutputRef(str(ref.id), ref.datasetType.name, dict(ref.dataId.required), ref.run)
            )
    return out


def ingest_outputs(
    repo: Path, butler_config: str, qgraph: Any, outputs: Iterable[OutputRef]
) -> int:
    """Record output files already in the datastore in the registry; return how many.

    ``repo`` is the repository's directory or configuration file; the outputs' paths
    are relative to its datastore root (:mod:`skybatch.repository`).
    """
    from lsst.daf.butler import DataCoordinate, DatasetRef, FileDataset, QuantumBackedButler

    from skybatch.repository import resolve_repository
    from skybatch.run.caches import butler_config as parsed_config
    from skybatch.run.caches import repository_butler

    qg = _open_init(qgraph)
    dataset_types = {d.name: d.dataset_type for d in qg.pipeline_graph.dataset_types.values()}
    wanted = list({o.dataset_id: o for o in outputs}.values())
    with repository_butler(repo, writeable=True) as butler:
        qg.pipeline_graph.register_dataset_types(butler)
        runs = {o.run for o in wanted}
        known: set[str] = set()
        for run in runs:
            butler.collections.register(run)
            known.update(
                str(r.id) for r in butler.query_all_datasets(run, find_first=False, limit=None)
            )
        todo = [o for o in wanted if o.dataset_id not in known]
        if not todo:
            return 0

        def ref_of(o: OutputRef) -> DatasetRef:
            dataset_type = dataset_types.get(o.dataset_type) or butler.get_dataset_type(
                o.dataset_type
            )
            data_id = DataCoordinate.standardize(
                o.data_id, dimensions=dataset_type.dimensions, universe=butler.dimensions
            )
            return DatasetRef(dataset_type, data_id, run=o.run, id=uuid.UUID(o.dataset_id))

        # Files whose path the job reported are ingested in place under that path,
        # except those the datastore still holds under the same id without a registry
        # entry: removed by an interrupted prune (in its trash), not to be revived.
        path_refs = [(o, ref_of(o)) for o in todo if o.path]
        trashed = {
            ref.id
            for ref, held in butler._datastore.knows_these([ref for _, ref in path_refs]).items()
            if held
        }
        if trashed:
            _log.warning(
                "not ingesting %d dataset(s) the datastore holds in its trash (being removed)",
                len(trashed),
            )
        with_path = [(o, ref) for o, ref in path_refs if ref.id not in trashed]
        if with_path:
            repository = resolve_repository(repo, where=str(repo))
            local = repository.datastore_root
            paths = (  # an object's URI when the datastore is in an object store
                [str(local / str(o.path)) for o, _ in with_path]
                if local is not None
                else [repository.datastore_uri + str(o.path) for o, _ in with_path]
            )
            butler.ingest(
                *[
                    FileDataset(path=path, refs=[ref])
                    for path, (_, ref) in zip(paths, with_path, strict=True)
                ],
                transfer=None,
            )
        # The rest (init outputs: no data id to expand) are found through the templates.
        rest = [ref_of(o) for o in todo if not o.path]
        if rest:
            with QuantumBackedButler.from_predicted(
                config=parsed_config(butler_config),
                predicted_inputs=[ref.id for ref in rest],
                predicted_outputs=[],
                dimensions=butler.dimensions,
                datastore_records={},
                dataset_types=dataset_types,
            ) as qbb:
                butler.transfer_from(
                    qbb,
                    rest,
                    transfer="auto",
                    register_dataset_types=True,
                    transfer_dimensions=False,
                )
        return len(with_path) + len(rest)


def outputs_of(reports: Sequence[Any]) -> list[OutputRef]:
    """Output refs of succeeded job reports."""
    return [
        OutputRef(o.dataset_id, o.dataset_type, o.data_id, o.run, o.path)
        for report in reports
        if report.status == "succeeded"
        for o in report.outputs
    ]


__all__ += ["outputs_of"]
