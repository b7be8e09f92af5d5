"""Execution (seed steps 11.3 and 11.4): a job-local butler and the job's quanta.

The job-specific input butler is a quantum-backed butler (QBB): no registry, only the
central repository's datastore configuration with the datastore root moved to
``workdir/datastore``. The datastore records carried by the quantum graph hold paths
relative to that root, so inputs resolve to the staged files; outputs are written by
the datastore's file templates under the same root, i.e. already in the layout the
archive and site caches use ("workflow-friendly directory structure", step 11.5).
Outputs of earlier quanta of the same job are found there too (the QBB runs in trust
mode and predicts their paths from the same templates).

Only this job's quanta are read from the graph file. Each runs with pipe_base's
:class:`~lsst.pipe.base.single_quantum_executor.SingleQuantumExecutor`; a failure is
recorded and the quanta that need its outputs are skipped, the others still run.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
from lsst.daf.butler import (
    Config,
    DatasetType,
    DimensionUniverse,
    LimitedButler,
    Quantum,
    QuantumBackedButler,
    QuantumProvenanceData,
)
from lsst.pipe.base import ExecutionResources, TaskFactory
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
from lsst.pipe.base.single_quantum_executor import SingleQuantumExecutor

from .errors import JobSpecError
from .spec import JobSpec, QuantumReport
from .stats import Meter

__all__ = [
    "ExecutedQuantum",
    "JobQuanta",
    "execute_quanta",
    "first_line",
    "load_quanta",
    "parse_quantum_ids",
    "plain_data_id",
    "write_job_butler_config",
]

_log = logging.getLogger(__name__)


@dataclass
class ExecutedQuantum:
    """One quantum of the job: what was asked, what happened, what the QBB saw."""

    quantum_id: uuid.UUID
    quantum: Quantum
    report: QuantumReport
    provenance: QuantumProvenanceData | None = None  # None when the quantum did not run


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: what a report and an operator see first."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def write_job_butler_config(spec: JobSpec, workdir: Path, datastore: Path) -> Path:
    """Write ``workdir/butler.yaml``: the central repo's config, datastore root moved.

    The formatter, storage class and file template configuration must be the central
    repository's so that files are read and named exactly as there.
    """
    source = Path(spec.butler_config)
    if source.is_dir():
        source = source / "butler.yaml"
    if not source.is_file():
        raise JobSpecError(
            f"butler config {source} does not exist",
            where="butler_config",
            hint="give the central repository's butler.yaml (or its directory)",
        )
    config = Config(str(source))
    datastore_cls = str(config.get("datastore", {}).get("cls", ""))
    if datastore_cls and not datastore_cls.endswith("FileDatastore"):
        raise JobSpecError(
            f"the repository's datastore is {datastore_cls}; jobs support a FileDatastore",
            where=f"{source}: datastore.cls",
            hint="run jobs against a repository with a single file datastore",
        )
    config["datastore", "root"] = str(datastore.resolve())
    target = workdir / "butler.yaml"
    config.dumpToUri(str(target))
    return target


def _read_graph(spec: JobSpec, ids: list[uuid.UUID]) -> PredictedQuantumGraph:
    path = Path(spec.qgraph)
    if not path.is_file():
        raise JobSpecError(
            f"quantum graph {path} does not exist",
            where="qgraph",
            hint="the workflow's .qg file must be readable from the compute node",
        )
    try:
        graph = PredictedQuantumGraph.read_execution_quanta(str(path), quantum_ids=ids)
    except (KeyError, LookupError) as exc:
        raise JobSpecError(
            f"quantum graph {path} does not hold all quanta of job {spec.job}: {exc}",
            where="quantum_ids",
            hint="regenerate the job specs from this run's workflow",
        ) from None
    missing = [str(q) for q in ids if q not in graph.quantum_only_xgraph.nodes]
    if missing:
        raise JobSpecError(
            f"{len(missing)} quantum id(s) of job {spec.job} are not in {path}, e.g. {missing[0]}",
            where="quantum_ids",
            hint="regenerate the job specs from this run's workflow",
        )
    return graph


def parse_quantum_ids(spec: JobSpec) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for text in spec.quantum_ids:
        try:
            ids.append(uuid.UUID(text))
        except ValueError:
            raise JobSpecError(
                f"{text!r} is not a quantum id (a UUID)", where="quantum_ids"
            ) from None
    if not ids:
        raise JobSpecError(f"job {spec.job} has no quanta", where="quantum_ids")
    return ids


class _KeptButler(QuantumBackedButler):
    """A QBB that stays open when the executor closes it, so its provenance can be read."""

    def close(self) -> None:  # the executor calls this; we close in release()
        pass

    def release(self) -> QuantumProvenanceData:
        """Return what this butler saw (inputs read, outputs written, their records)."""
        try:
            return self.extract_provenance_data()
        finally:
            super().close()


class _ButlerFactory:
    """Makes a fresh job-local QBB per quantum (as ``pipetask run-qbb`` does)."""

    def __init__(
        self, config: str, universe: DimensionUniverse, dataset_types: Mapping[str, DatasetType]
    ) -> None:
        self.config = config
        self.universe = universe
        self.dataset_types = dataset_types
        self.current: _KeptButler | None = None

    def __call__(self, quantum: Quantum) -> LimitedButler:
        butler = _KeptButler.initialize(
            config=self.config,
            quantum=quantum,
            dimensions=self.universe,
            dataset_types=self.dataset_types,
        )
        assert isinstance(butler, _KeptButler)  # initialize() builds the calling class
        self.current = butler
        return butler

    def release(self) -> QuantumProvenanceData | None:
        butler, self.current = self.current, None
        return butler.release() if butler is not None else None


@dataclass
class JobQuanta:
    """This job's quanta, read from the graph file and ready to execute."""

    graph: PredictedQuantumGraph
    ids: list[uuid.UUID]
    quanta: dict[uuid.UUID, Quantum]

    def label(self, quantum_id: uuid.UUID) -> str:
        return str(self.graph.quantum_only_xgraph.nodes[quantum_id]["task_label"])

    def new_report(self, quantum_id: uuid.UUID, error: str | None = None) -> QuantumReport:
        """A report of a quantum that has not run (yet)."""
        data_id = self.quanta[quantum_id].dataId
        assert data_id is not None
        return QuantumReport(
            quantum_id=str(quantum_id),
            task_label=self.label(quantum_id),
            data_id=plain_data_id(data_id.required),
            status="skipped",
            error=error,
        )


def load_quanta(spec: JobSpec) -> JobQuanta:
    """Read only this job's quanta from ``spec.qgraph``.

    Raises:
        JobSpecError: the graph file or a quantum id is wrong.
    """
    ids = parse_quantum_ids(spec)
    graph = _read_graph(spec, ids)
    return JobQuanta(graph, ids, graph.build_execution_quanta(ids))


def execute_quanta(
    spec: JobSpec, job: JobQuanta, butler_config: Path, meter: Meter
) -> list[ExecutedQuantum]:
    """Run the job's quanta in order; return one :class:`ExecutedQuantum` per quantum."""
    graph = job.graph
    dataset_types = {n.name: n.dataset_type for n in graph.pipeline_graph.dataset_types.values()}
    factory = _ButlerFactory(str(butler_config), graph.pipeline_graph.universe, dataset_types)
    job_metadata: dict[str, int | str | float] = {"job": spec.job, "attempt": spec.attempt}
    executor = SingleQuantumExecutor(
        task_factory=TaskFactory(),
        limited_butler_factory=factory,
        resources=ExecutionResources(
            num_cores=spec.cores, max_mem=spec.memory_mb, default_mem_units=u.MB
        ),
        # The job datastore is fresh: nothing can exist yet, so skip every existence check.
        assume_no_existing_outputs=True,
        raise_on_partial_outputs=True,
        job_metadata=job_metadata,
    )
    blocked: set[uuid.UUID] = set()  # predicted outputs of quanta that failed or were skipped
    results: list[ExecutedQuantum] = []
    for quantum_id in job.ids:
        quantum = job.quanta[quantum_id]
        report = job.new_report(quantum_id)
        outputs = {ref.id for refs in quantum.outputs.values() for ref in refs}
        needs = {ref.id for refs in quantum.inputs.values() for ref in refs} & blocked
        if needs:
            report.error = f"skipped: {len(needs)} input(s) come from a quantum that failed"
            _log.warning("skipping %s %s: %s", report.task_label, report.data_id, report.error)
            blocked |= outputs
            results.append(ExecutedQuantum(quantum_id, quantum, report))
            continue
        task_node = graph.pipeline_graph.tasks[report.task_label]
        quantum_meter = Meter(parent=meter).start()
        try:
            executor.execute(task_node, quantum, quantum_id=quantum_id)
        except Exception as exc:
            report.status = "failed"
            report.error = first_line(exc)
            report.traceback = traceback.format_exc()
            blocked |= outputs
            _log.error("quantum %s %s failed: %s", report.task_label, report.data_id, report.error)
        else:
            report.status = "succeeded"
        finally:
            report.stats = quantum_meter.stop()
            provenance = factory.release()
        results.append(ExecutedQuantum(quantum_id, quantum, report, provenance))
    return results


def plain_data_id(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A data id as JSON-ready values (numpy integers and the like become Python ones)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        out[str(key)] = value.item() if hasattr(value, "item") else value
    return out
