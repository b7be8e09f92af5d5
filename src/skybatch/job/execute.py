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

In a warm worker (:mod:`skybatch.job.cache` enabled) the expensive parts that do not
change between jobs are done once per process: the graph file stays open with its
pipeline graph (tasks imported and configured), init quanta and dimension data read,
and each job reads only its own quanta from it; the central repository's butler and
datastore configuration is parsed once, its storage classes registered once, and each
quantum's QBB (still a fresh one per quantum, with its own datastore and records) is
built from those parsed pieces with only the datastore root changed. The job's
``butler.yaml`` is written all the same: it is part of what a job leaves behind.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
from lsst.daf.butler import (
    ButlerConfig,
    Config,
    DatasetType,
    DimensionUniverse,
    FormatterFactory,
    LimitedButler,
    Quantum,
    QuantumBackedButler,
    QuantumProvenanceData,
    StorageClassFactory,
)
from lsst.daf.butler.datastore import DatastoreConfig
from lsst.daf.butler.datastore.composites import CompositesMap
from lsst.daf.butler.datastore.file_templates import FileTemplates
from lsst.daf.butler.datastores.fileDatastore import FileDatastore
from lsst.daf.butler.repo_relocation import replaceRoot
from lsst.pipe.base import ExecutionResources, TaskFactory
from lsst.pipe.base.quantum_graph import (
    PredictedQuantumGraph,
    PredictedQuantumGraphComponents,
    PredictedQuantumGraphReader,
)
from lsst.pipe.base.single_quantum_executor import SingleQuantumExecutor
from lsst.resources import ResourcePath
from lsst.utils import doImportType

from .cache import FileKey, file_key, on_clear, process_cache_enabled
from .causes import error_line, failure_kind
from .errors import JobSpecError
from .qbb import MemoryBridgeManager, MemoryOpaqueManager
from .spec import JobSpec, QuantumReport
from .stats import Meter, PhaseClock

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


#: Most central repositories (butler configs) a process keeps parsed; a run has one.
_MAX_REPOS = 4

#: Central butler configs as read from their files (per-process cache):
#: resolved path -> (file key, config).
_central_configs: dict[str, tuple[FileKey, Config]] = {}


def _config_source(spec: JobSpec) -> Path:
    """The central repository's butler.yaml named by the spec (JobSpecError if absent)."""
    source = Path(spec.butler_config)
    if source.is_dir():
        source = source / "butler.yaml"
    if not source.is_file():
        raise JobSpecError(
            f"butler config {source} does not exist",
            where="butler_config",
            hint="give the central repository's butler.yaml (or its directory)",
        )
    return source


def _read_central_config(source: Path) -> Config:
    """``Config(source)``, read once per process when the caches are on (a private copy)."""
    if not process_cache_enabled():
        return Config(str(source))
    key = file_key(source)
    hit = _central_configs.get(key[0])
    if hit is None or hit[0] != key:
        if len(_central_configs) >= _MAX_REPOS:
            _central_configs.clear()
        hit = (key, Config(str(source)))
        _central_configs[key[0]] = hit
    return copy.deepcopy(hit[1])


def central_datastore_name(datastore_config: Any) -> str:
    """The name the central FileDatastore goes by (as FileDatastore derives it).

    The graph's datastore records are keyed by it: the job datastore keeps that name so
    it imports them, and reads each input at its recorded path (relative to the job's
    root, where stage-in put it), not at a path predicted from the file templates.
    """
    name = datastore_config.get("name")
    return str(name) if name else f"FileDatastore@{datastore_config['root']}"


#: The job butler.yaml's text per central config (per-process cache): resolved
#: butler.yaml -> (its file key, the job datastore root as written, the text).
_job_config_texts: dict[str, tuple[FileKey, str, str]] = {}


def write_job_butler_config(spec: JobSpec, workdir: Path, datastore: Path) -> Path:
    """Write ``workdir/butler.yaml``: the central repo's config, datastore root moved.

    The formatter, storage class and file template configuration must be the central
    repository's so that files are read and named exactly as there. A datastore at
    ``workdir/datastore`` (as every job has it) is written as ``<butlerRoot>/datastore``,
    which the Butler resolves next to this file: the text is then the same for every
    job of a repository, and a warm worker makes it once.
    """
    source = _config_source(spec)
    resolved = datastore.resolve()
    here = resolved == workdir.resolve() / "datastore"
    root = "<butlerRoot>/datastore" if here else str(resolved)
    target = workdir / "butler.yaml"
    target.write_text(_job_config_text(source, root))
    return target


def _job_config_text(source: Path, root: str) -> str:
    """The job butler.yaml's text for the central config at ``source`` (cached per
    process when the caches are on)."""
    if not process_cache_enabled():
        return _make_job_config_text(source, root)
    key = file_key(source)
    hit = _job_config_texts.get(key[0])
    if hit is None or hit[:2] != (key, root):
        if len(_job_config_texts) >= _MAX_REPOS:
            _job_config_texts.clear()
        hit = (key, root, _make_job_config_text(source, root))
        _job_config_texts[key[0]] = hit
    return hit[2]


def _make_job_config_text(source: Path, root: str) -> str:
    config = _read_central_config(source)
    datastore_cls = str(config.get("datastore", {}).get("cls", ""))
    if datastore_cls and not datastore_cls.endswith("FileDatastore"):
        raise JobSpecError(
            f"the repository's datastore is {datastore_cls}; jobs support a FileDatastore",
            where=f"{source}: datastore.cls",
            hint="run jobs against a repository with a single file datastore",
        )
    config["datastore", "name"] = central_datastore_name(config["datastore"])
    config["datastore", "root"] = root
    if "root" in config:  # a central butler.yaml kept apart names its repository's root
        del config["root"]  # the job's <butlerRoot> is the job's directory
    text = config.dump()
    assert text is not None  # dump() returns the text when given no stream
    return text


def _read_graph(spec: JobSpec, ids: list[uuid.UUID]) -> PredictedQuantumGraph:
    path = Path(spec.qgraph)
    if not path.is_file():
        raise JobSpecError(
            f"quantum graph {path} does not exist",
            where="qgraph",
            hint="the workflow's .qg file must be readable from the compute node",
        )
    try:
        if process_cache_enabled() and path.suffix == ".qg":
            graph = _open_graph(path).read(ids)
        else:
            graph = PredictedQuantumGraph.read_execution_quanta(str(path), quantum_ids=ids)
    except (KeyError, LookupError) as exc:
        raise JobSpecError(
            f"quantum graph {path} does not hold all quanta of job {spec.job}: {exc}",
            where="quantum_ids",
            hint="regenerate the job specs from this run's workflow",
        ) from None
    except BaseException:
        _close_graph()  # whatever went wrong, the next job opens the file afresh
        raise
    missing = [str(q) for q in ids if q not in graph.quantum_only_xgraph.nodes]
    if missing:
        raise JobSpecError(
            f"{len(missing)} quantum id(s) of job {spec.job} are not in {path}, e.g. {missing[0]}",
            where="quantum_ids",
            hint="regenerate the job specs from this run's workflow",
        )
    return graph


class _OpenGraph:
    """A quantum graph file kept open (per-process cache), with what every job needs.

    Opening the file deserializes the pipeline graph (importing and configuring every
    task); the init quanta and the dimension records are read once too. Each job then
    gets a graph of its own holding only its quanta, sharing those parts (the dimension
    records are only ever added to, as they are deserialized on demand).
    """

    def __init__(self, path: Path, key: FileKey) -> None:
        self.key = key
        self._stack = ExitStack()
        try:
            self.reader: PredictedQuantumGraphReader = self._stack.enter_context(
                PredictedQuantumGraph.open(str(path))
            )
            self.reader.read_init_quanta()
            self.reader.read_dimension_data()
        except BaseException:
            self._stack.close()
            raise
        self._shared = self.reader.components

    def read(self, ids: Iterable[uuid.UUID]) -> PredictedQuantumGraph:
        """A graph with the quanta ``ids`` (as ``read_execution_quanta`` would give)."""
        components = PredictedQuantumGraphComponents(
            header=self.reader.header, pipeline_graph=self.reader.pipeline_graph
        )
        components.init_quanta = self._shared.init_quanta
        components.dimension_data = self._shared.dimension_data
        # The reader reads into its own components: lend it this job's for the read.
        self.reader.components = components
        try:
            self.reader.read_quantum_datasets(ids)
        finally:
            self.reader.components = self._shared
        return components.assemble()

    def close(self) -> None:
        self._stack.close()


_graph: _OpenGraph | None = None


def _open_graph(path: Path) -> _OpenGraph:
    """The open graph at ``path``, (re)opened when it is another file or has changed."""
    global _graph
    key = file_key(path)
    if _graph is None or _graph.key != key:
        _close_graph()
        _graph = _OpenGraph(path, key)
    return _graph


def _close_graph() -> None:
    global _graph
    graph, _graph = _graph, None
    if graph is not None:
        graph.close()


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
        self.setup_s = 0.0  # seconds spent making butlers (inside the executor's call)

    def __call__(self, quantum: Quantum) -> LimitedButler:
        start = time.perf_counter()
        butler = self._make(quantum)
        self.setup_s += time.perf_counter() - start
        self.current = butler
        return butler

    def _make(self, quantum: Quantum) -> _KeptButler:
        butler = _KeptButler.initialize(
            config=self.config,
            quantum=quantum,
            dimensions=self.universe,
            dataset_types=self.dataset_types,
            OpaqueManagerClass=MemoryOpaqueManager,
            BridgeManagerClass=MemoryBridgeManager,
        )
        assert isinstance(butler, _KeptButler)  # initialize() builds the calling class
        return butler

    def release(self) -> QuantumProvenanceData | None:
        butler, self.current = self.current, None
        return butler.release() if butler is not None else None


@dataclass
class _RepoDatastore:
    """The central repository's datastore, parsed once per process (per-process cache).

    Everything :meth:`QuantumBackedButler.initialize` derives from the butler config
    except the datastore root: the merged datastore configuration, formatters, file
    templates and composites (shared by datastores, as ``FileDatastore.clone`` shares
    them); the repository's storage classes are registered once in the (process-wide)
    storage class factory.
    """

    key: FileKey
    universe: DimensionUniverse
    config: DatastoreConfig
    formatters: FormatterFactory
    templates: FileTemplates
    composites: CompositesMap
    trust: bool

    @classmethod
    def load(cls, source: Path, key: FileKey, universe: DimensionUniverse) -> _RepoDatastore | None:
        """Parse the config at ``source``; None unless its datastore is a FileDatastore."""
        butler_config = ButlerConfig(str(source))
        config = DatastoreConfig(butler_config)
        if doImportType(config["cls"]) is not FileDatastore:
            return None
        formatters = FormatterFactory()
        formatters.registerFormatters(config["formatters"], universe=universe)
        templates = FileTemplates(config["templates"], universe=universe)
        composites = CompositesMap(config["composites"], universe=universe)
        StorageClassFactory().addFromConfig(butler_config)
        trust = bool(config.get("trust_get_request", False))
        return cls(key, universe, config, formatters, templates, composites, trust)

    def job_config(self, root: Path) -> DatastoreConfig:
        """The datastore configuration of the job datastore at ``root``."""
        config = copy.deepcopy(self.config)
        config["name"] = central_datastore_name(self.config)  # as write_job_butler_config
        config["root"] = str(root.resolve())
        return config

    def make_butler(
        self,
        config: DatastoreConfig,
        butler_root: ResourcePath,
        quantum: Quantum,
        dataset_types: Mapping[str, DatasetType],
    ) -> _KeptButler:
        """What ``_KeptButler.initialize`` makes of the job's butler.yaml, from parsed parts
        (the same record managers, :mod:`skybatch.job.qbb`)."""
        bridge = MemoryBridgeManager(MemoryOpaqueManager(), self.universe)
        root = ResourcePath(
            replaceRoot(config["root"], butler_root), forceDirectory=True, forceAbsolute=True
        )
        datastore = FileDatastore(
            config, bridge, root, self.formatters, self.templates, self.composites, self.trust
        )
        if root.isLocal and not root.exists():
            if "create" not in config or not config["create"]:
                raise ValueError(f"No valid root and not allowed to create one at: {root}")
            root.mkdir()
        datastore._set_trust_mode(True)
        datastore.import_records(quantum.datastore_records)
        inputs = [ref.id for ref in itertools.chain.from_iterable(quantum.inputs.values())]
        inputs += [ref.id for ref in quantum.initInputs.values()]
        outputs = [ref.id for ref in itertools.chain.from_iterable(quantum.outputs.values())]
        return _KeptButler(
            inputs,
            outputs,
            self.universe,
            datastore,
            storageClasses=StorageClassFactory(),
            dataset_types=dataset_types,
        )


#: Parsed central repositories (per-process cache): resolved butler.yaml -> parts.
_repos: dict[str, _RepoDatastore | None] = {}
_repo_keys: dict[str, tuple[FileKey, DimensionUniverse]] = {}


def _repo_datastore(source: Path, universe: DimensionUniverse) -> _RepoDatastore | None:
    key = file_key(source)
    if key[0] in _repos:
        cached_key, cached_universe = _repo_keys[key[0]]
        if cached_key == key and cached_universe is universe:
            return _repos[key[0]]
    if len(_repos) >= _MAX_REPOS:
        _repos.clear()
        _repo_keys.clear()
    repo = _RepoDatastore.load(source, key, universe)  # not cached if it raises
    _repos[key[0]] = repo
    _repo_keys[key[0]] = (key, universe)
    return repo


class _CachedButlerFactory(_ButlerFactory):
    """A :class:`_ButlerFactory` building each QBB from the per-process parsed config.

    The central config is parsed when the first quantum asks for a butler (so a broken
    config fails that quantum, as it does without the cache). Repositories whose
    datastore is not exactly a FileDatastore get ``initialize`` as before.
    """

    def __init__(
        self,
        config: str,
        universe: DimensionUniverse,
        dataset_types: Mapping[str, DatasetType],
        source: Path,
        root: Path,
    ) -> None:
        super().__init__(config, universe, dataset_types)
        self.source = source
        self.root = root
        self._butler_root = ResourcePath(config).dirname()  # as ButlerConfig(config) has it
        self._datastore_config: DatastoreConfig | None = None

    def _make(self, quantum: Quantum) -> _KeptButler:
        repo = _repo_datastore(self.source, self.universe)
        if repo is None:
            return super()._make(quantum)
        if self._datastore_config is None:
            self._datastore_config = repo.job_config(self.root)
        return repo.make_butler(
            self._datastore_config, self._butler_root, quantum, self.dataset_types
        )


def _clear() -> None:
    _close_graph()
    _central_configs.clear()
    _job_config_texts.clear()
    _repos.clear()
    _repo_keys.clear()


on_clear(_clear)


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
    spec: JobSpec,
    job: JobQuanta,
    butler_config: Path,
    meter: Meter,
    *,
    datastore: Path | None = None,
    clock: PhaseClock | None = None,
) -> list[ExecutedQuantum]:
    """Run the job's quanta in order; return one :class:`ExecutedQuantum` per quantum.

    ``butler_config`` is the job's butler.yaml (from :func:`write_job_butler_config`)
    and ``datastore`` the root it was written with; given that root, a process with
    the caches on builds the QBBs from the central config parsed once per process.
    ``clock`` gets the seconds of ``butler_setup``, ``execute`` (the executor's call
    less the butler's set-up) and ``butler_provenance``.
    """
    clock = clock or PhaseClock()
    graph = job.graph
    dataset_types = {n.name: n.dataset_type for n in graph.pipeline_graph.dataset_types.values()}
    universe = graph.pipeline_graph.universe
    factory: _ButlerFactory
    if datastore is not None and process_cache_enabled():
        source = _config_source(spec).resolve()
        factory = _CachedButlerFactory(
            str(butler_config), universe, dataset_types, source, datastore
        )
    else:
        factory = _ButlerFactory(str(butler_config), universe, dataset_types)
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
        setup_before, start = factory.setup_s, time.perf_counter()
        try:
            executor.execute(task_node, quantum, quantum_id=quantum_id)
        except Exception as exc:
            report.status = "failed"
            report.error = error_line(exc)
            kind = failure_kind(exc)
            report.failure = kind.value if kind is not None else None
            report.traceback = traceback.format_exc()
            blocked |= outputs
            _log.error("quantum %s %s failed: %s", report.task_label, report.data_id, report.error)
        else:
            report.status = "succeeded"
        finally:
            report.stats = quantum_meter.stop()
            setup = factory.setup_s - setup_before
            clock.add("butler_setup", setup)
            clock.add("execute", time.perf_counter() - start - setup)
            with clock.phase("butler_provenance"):
                provenance = factory.release()
        results.append(ExecutedQuantum(quantum_id, quantum, report, provenance))
    return results


def plain_data_id(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A data id as JSON-ready values (numpy integers and the like become Python ones)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        out[str(key)] = value.item() if hasattr(value, "item") else value
    return out
