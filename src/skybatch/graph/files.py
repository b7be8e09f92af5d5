"""The files of a graph's datasets, read from the graph's own models (the fast path).

:class:`skybatch.graph.expand.DatasetFiles` works from execution quanta
(``PredictedQuantumGraph.build_execution_quanta``: a ``Quantum`` with expanded data ids
and deserialized datastore records for every quantum, a ``DatasetRef`` for every
dataset it reads or writes), then rebuilds each dataset's ref with the repository's
dataset type to format its file template. :class:`GraphFiles` gives the same answers
from the per-quantum models the graph is made of (dataset ids, dataset type names,
data id values, runs, serialized datastore records): refs are only made for the first
datasets of each dataset type, to check the compiled file templates against the
datastore's own formatting (:meth:`DatastorePaths.predict_values`).

It reads two private attributes of ``PredictedQuantumGraph`` (the per-quantum models
and the init quanta: there is no public way to the datastore records without building
execution quanta); :meth:`GraphFiles.eligible` says whether they are what it
expects, and the caller uses DatasetFiles when they are not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from skybatch.job.spec import FileSpec

from .expand import DatastorePaths, refuse_shared_paths
from .templates import DataIdRecords

if TYPE_CHECKING:
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

__all__ = ["GraphFiles"]


class _Dataset(NamedTuple):
    """A dataset as ``PredictedDatasetModel`` describes it (same attribute names)."""

    dataset_id: uuid.UUID
    dataset_type_name: str  # the parent dataset type
    data_coordinate: Sequence[Any]  # full values
    run: str


#: A FileSpec whose copies are the specs made here (copying is cheaper than
#: ``model_construct``; the fields set are the same).
_SPEC = FileSpec.model_construct(dataset_id="", dataset_type="", data_id={}, path="")

#: Datastore record classes by name, resolved as ``StoredDatastoreItemInfo.from_records``
#: resolves them (None: could not, let daf_butler raise its error).
_RECORD_CLASSES: dict[str, Any] = {}


def _record_class(class_name: str) -> Any:
    from lsst.daf.butler.datastore.stored_file_info import StoredDatastoreItemInfo, StoredFileInfo
    from lsst.utils import doImportType

    if class_name not in _RECORD_CLASSES:
        klass: type | None
        try:
            klass = doImportType(class_name)
        except ImportError:
            old = class_name == "lsst.daf.butler.core.storedFileInfo.StoredFileInfo"
            klass = StoredFileInfo if old else None
        if klass is not None and not issubclass(klass, StoredDatastoreItemInfo):
            klass = None
        _RECORD_CLASSES[class_name] = klass
    return _RECORD_CLASSES[class_name]


def _deserialize_records(simple: Any) -> Any:
    """``DatastoreRecordData.from_simple(simple)``, each record class imported once
    (from_simple imports it for every dataset and table)."""
    from lsst.daf.butler.datastore.record_data import DatastoreRecordData
    from lsst.daf.butler.persistence_context import PersistenceContextVars

    classes = {name: _record_class(name) for name in simple.records}
    if None in classes.values() or PersistenceContextVars.dataStoreRecords.get() is not None:
        return DatastoreRecordData.from_simple(simple)
    records: dict[uuid.UUID, dict[str, list[Any]]] = {i: {} for i in simple.dataset_ids}
    for class_name, class_data in simple.records.items():
        klass = classes[class_name]
        for dataset_id, dataset_data in class_data.items():
            for table_name, table_records in dataset_data.items():
                infos = [klass.from_record(record) for record in table_records]
                dataset_records = records.setdefault(uuid.UUID(dataset_id), {})
                dataset_records.setdefault(table_name, []).extend(infos)
    return DatastoreRecordData(records=records)


def _from_ref(ref: Any) -> _Dataset:
    name, _ = ref.datasetType.nameAndComponent()
    return _Dataset(ref.id, name, tuple(ref.dataId.full_values), ref.run)


class GraphFiles:
    """:class:`~skybatch.graph.expand.DatasetFiles` without execution quanta.

    Same methods, same results: ``job_inputs``, ``job_outputs``,
    ``check_unique_outputs``, for a graph :meth:`eligible` accepts.
    """

    def __init__(
        self, graph: PredictedQuantumGraph, paths: DatastorePaths, order: Sequence[uuid.UUID]
    ) -> None:
        from lsst.daf.butler.datastore.record_data import DatastoreRecordData

        quantum_datasets: Mapping[uuid.UUID, Any] = graph._quantum_datasets
        init_quanta: Mapping[str, Any] = graph._init_quanta
        self._graph = graph
        self._paths = paths
        self._order = order
        self._models = quantum_datasets
        pipeline_graph = graph.pipeline_graph
        self._records = DataIdRecords(graph.dimension_data, pipeline_graph.universe)
        self._types: dict[str, Any] = {
            name: node.dataset_type for name, node in pipeline_graph.dataset_types.items()
        }
        packages = pipeline_graph.packages_dataset_type
        self._types[packages.name] = packages
        self._required: dict[str, tuple[str, ...]] = {
            name: tuple(t.dimensions.required) for name, t in self._types.items()
        }
        # Keyed by dataset ids' integers (a UUID hashes in Python, an int in C).
        self._cache: dict[int, list[FileSpec]] = {}
        self._inputs: dict[uuid.UUID, list[Any]] = {}
        self._outputs: dict[uuid.UUID, list[Any]] = {}
        self._init_inputs: dict[str, list[_Dataset]] = {}
        self.producer: dict[int, uuid.UUID] = {}
        self.stored: dict[int, list[tuple[str | None, str]]] = {}
        init_records: dict[str, Any] = {}
        for q in order:
            model = quantum_datasets[q]
            label = model.task_label
            if label not in self._init_inputs:
                # As Quantum.initInputs holds them: one per dataset type.
                refs = {ref.datasetType: ref for ref in graph.get_init_inputs(label).values()}
                self._init_inputs[label] = [_from_ref(ref) for ref in refs.values()]
                init_records[label] = init_quanta[label].deserialize_datastore_records()
            self._inputs[q] = [d for datasets in model.inputs.values() for d in datasets]
            outputs = [d for datasets in model.outputs.values() for d in datasets]
            self._outputs[q] = outputs
            for dataset in outputs:
                self.producer[dataset.dataset_id.int] = q
            if not model.datastore_records and not init_records[label]:
                continue
            merged = DatastoreRecordData.merge_mappings(
                {
                    name: _deserialize_records(simple)
                    for name, simple in model.datastore_records.items()
                },
                init_records[label],
            )
            for records in merged.values():  # one per datastore
                for dataset_id, by_table in records.records.items():
                    if dataset_id.int not in self.stored:  # several quanta read one input
                        self.stored[dataset_id.int] = [
                            (getattr(info, "component", None), str(info.path))
                            for infos in by_table.values()
                            for info in infos
                            if hasattr(info, "path")  # file datastore records only
                        ]

    @staticmethod
    def eligible(graph: PredictedQuantumGraph, order: Sequence[uuid.UUID]) -> bool:
        """Whether the graph has what this class reads (``order``: all its quanta).

        That is all per-quantum models, init quanta and dimension records (without
        them, execution quanta are refused too), and no task reading or writing two
        connections of one dataset type (the quanta's refs would be merged).
        """
        models = getattr(graph, "_quantum_datasets", None)
        init_quanta = getattr(graph, "_init_quanta", None)
        if not isinstance(models, Mapping) or not isinstance(init_quanta, Mapping):
            return False
        if graph.dimension_data is None or any(q not in models for q in order):
            return False
        for label, task in graph.pipeline_graph.tasks.items():
            if label not in init_quanta and graph.quanta_by_task.get(label):
                return False
            for edges in (list(task.iter_all_inputs()), list(task.iter_all_outputs())):
                names = [edge.dataset_type_name for edge in edges]
                if len(set(names)) != len(names):
                    return False
        return True

    def specs(self, dataset: Any) -> list[FileSpec]:
        """The files of one dataset (a ``PredictedDatasetModel`` or alike)."""
        rid = dataset.dataset_id
        cached = self._cache.get(rid.int)
        if cached is None:
            cached = self._cache[rid.int] = self._specs(dataset)
        return cached

    def _specs(self, dataset: Any) -> list[FileSpec]:
        rid = dataset.dataset_id
        name = dataset.dataset_type_name
        values = tuple(dataset.data_coordinate)
        data_id = {
            k: (v.item() if hasattr(v, "item") else v)
            for k, v in zip(self._required[name], values, strict=False)
        }
        located = self.stored.get(rid.int) or self._paths.predict_values(
            self._types[name], values, dataset.run, rid, self._records
        )
        text_id = str(rid)
        return [
            _SPEC.model_copy(
                update={
                    "dataset_id": text_id,
                    "dataset_type": name if component is None else f"{name}.{component}",
                    "data_id": data_id,
                    "path": path,
                }
            )
            for component, path in located
        ]

    def job_inputs(self, job_quanta: Sequence[uuid.UUID]) -> list[FileSpec]:
        own = set(job_quanta)
        out: dict[int, list[FileSpec]] = {}
        producer, cache = self.producer, self._cache
        for q in job_quanta:
            datasets: Iterable[Any] = self._inputs[q]
            init = self._init_inputs[self._models[q].task_label]
            for dataset in [*datasets, *init]:
                key = dataset.dataset_id.int
                if key not in out and producer.get(key) not in own:
                    specs = cache.get(key)
                    out[key] = specs if specs is not None else self.specs(dataset)
        return [spec for specs in out.values() for spec in specs]

    def job_outputs(self, job_quanta: Sequence[uuid.UUID]) -> list[FileSpec]:
        return [
            spec for q in job_quanta for dataset in self._outputs[q] for spec in self.specs(dataset)
        ]

    def check_unique_outputs(self) -> None:
        """Refuse two predicted outputs (init-outputs included) at one path."""
        datasets: list[Any] = [d for q in self._order for d in self._outputs[q]]
        for label in [*self._graph.pipeline_graph.tasks, ""]:
            datasets += [_from_ref(ref) for ref in self._graph.get_init_outputs(label).values()]
        refuse_shared_paths(
            (spec for dataset in datasets for spec in self.specs(dataset)),
            self._paths.config_path,
        )
