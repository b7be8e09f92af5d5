"""Pipeline expansion (seed step 5): a pipeline + a data query → a quantum graph file.

The graph is built by pipe_base's :class:`AllDimensionsQuantumGraphBuilder`, exactly as
``pipetask qgraph`` builds it, with the datastore records of every overall input
attached: jobs then run against a quantum-backed butler and never need the registry
database. The graph is written to a ``.qg`` file under a temporary name and renamed
into place, so a failed expansion leaves nothing behind.

Steps whose inputs only exist after earlier steps ran (seed step 5.1) are expanded
again later, with the earlier outputs in the input collections.

The same module knows what the graph's datasets are called on disk: stored inputs by
their datastore records (carried in the graph), everything else by the repository's
file templates (:class:`DatastorePaths`), i.e. by the Butler's own file-naming policy.

LSST exceptions are translated here into :class:`skybatch.errors.InputError` with
what, where and a hint; callers never see a registry or parser error.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skybatch.errors import InputError
from skybatch.job.spec import FileSpec
from skybatch.progress import ProgressFactory, no_bars
from skybatch.run import caches

if TYPE_CHECKING:
    from lsst.daf.butler import DatasetRef, Quantum
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

    from .templates import DataIdRecords

__all__ = [
    "DatasetFiles",
    "DatastorePaths",
    "ExpansionResult",
    "expand",
    "load_pipeline_graph",
    "refuse_shared_paths",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpansionResult:
    """What an expansion produced: the graph file, its shape and how long it took.

    ``graph`` is the in-memory graph (fully loaded, with dimension records), so
    :func:`skybatch.graph.build.build_workflow` does not need to read the file back.
    """

    qgraph_path: Path
    pipeline: str
    input_collections: list[str]
    output_run: str
    where: str
    quanta_per_task: dict[str, int]
    total_quanta: int
    dataset_counts: dict[str, int]  # datasets per dataset type (inputs, outputs, init)
    expansion_s: float
    graph: PredictedQuantumGraph = field(repr=False, compare=False)


def expand(
    repo: Path,
    pipeline: str,
    input_collections: Sequence[str],
    output_run: str,
    where: str,
    qgraph_path: Path,
    progress: ProgressFactory | None = None,
) -> ExpansionResult:
    """Build the quantum graph of ``pipeline`` over ``where`` and write it to ``qgraph_path``.

    Args:
        repo: Butler repository (directory or ``butler.yaml``).
        pipeline: Pipeline file, optionally with a ``#label1,label2`` subset as
            ``pipetask`` accepts it.
        input_collections: Collections searched for inputs, in order.
        output_run: The RUN collection the outputs are predicted in.
        where: Butler data query (``""`` for everything the inputs allow).
        qgraph_path: Where the graph goes; must end in ``.qg``.
        progress: Progress bar factory (nothing shown by default).

    Raises:
        InputError: The repository, pipeline, collections or query are wrong, the
            query matches nothing, or the output run already holds these outputs.
    """
    from skybatch.heap import collection_paused

    # The middleware's imports and the graph are long-lived objects: collecting among
    # them while they are built costs a third of the build (see skybatch.heap).
    with collection_paused():
        return _expand(repo, pipeline, input_collections, output_run, where, qgraph_path, progress)


def _expand(
    repo: Path,
    pipeline: str,
    input_collections: Sequence[str],
    output_run: str,
    where: str,
    qgraph_path: Path,
    progress: ProgressFactory | None,
) -> ExpansionResult:
    from lsst.pipe.base.all_dimensions_quantum_graph_builder import AllDimensionsQuantumGraphBuilder

    if qgraph_path.suffix != ".qg":
        raise InputError(
            f"quantum graph file {qgraph_path} must have the extension .qg",
            where=str(qgraph_path),
            hint="name the file e.g. graph.qg",
        )
    if not input_collections:
        raise InputError("no input collections given", hint="give at least one with --input")
    start = time.perf_counter()
    with (progress or no_bars)("expanding pipeline", 3) as advance, ExitStack() as stack:
        pipeline_graph = load_pipeline_graph(pipeline)
        advance()
        try:
            # This process's Butler of the repository (a fresh clone of it).
            butler = stack.enter_context(caches.repository_butler(repo))
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"cannot open Butler repository {repo}: {exc}",
                where=str(repo),
                hint="give the directory that holds butler.yaml",
            ) from None
        with _translated(pipeline, input_collections, output_run, where):
            builder = AllDimensionsQuantumGraphBuilder(
                pipeline_graph,
                butler,
                where=where,
                input_collections=list(input_collections),
                output_run=output_run,
            )
            components = builder.finish(
                metadata={"data_query": where, "skybatch_pipeline": pipeline},
                attach_datastore_records=True,
            )
        advance()
        if components.header.n_quanta == 0:
            query = f"the data query {where!r}" if where else "no data query"
            raise InputError(
                f"{query} matches nothing in {list(input_collections)}: the quantum graph "
                "would be empty",
                where=f"query {where!r}",
                hint="check the query values and that the input collections hold the inputs "
                "(outputs of earlier steps included)",
            )
        _write_atomically(components, qgraph_path)
        advance()
    graph = components.assemble()
    elapsed = time.perf_counter() - start
    return ExpansionResult(
        qgraph_path=qgraph_path,
        pipeline=pipeline,
        input_collections=list(input_collections),
        output_run=output_run,
        where=where,
        quanta_per_task={label: len(q) for label, q in graph.quanta_by_task.items()},
        total_quanta=len(graph),
        dataset_counts={name: len(d) for name, d in graph.datasets_by_type.items() if d},
        expansion_s=elapsed,
        graph=graph,
    )


def load_pipeline_graph(pipeline: str) -> Any:
    """Read ``pipeline`` (``path[#labels]``) and import its tasks into a PipelineGraph."""
    from lsst.pipe.base import Pipeline

    path, _, labels = pipeline.partition("#")
    hint = "give a pipeline YAML file, optionally with #label1,label2 (task labels or subsets)"
    if not Path(path).is_file():
        raise InputError(f"pipeline file {path} does not exist", where=path, hint=hint)
    try:
        return Pipeline.from_uri(pipeline).to_graph()
    except (ValueError, LookupError, ImportError) as exc:
        # unknown labels or subsets, malformed YAML, bad overrides, unimportable tasks
        detail = f"labels {labels!r}" if labels else "file"
        raise InputError(f"invalid pipeline {detail}: {exc}", where=pipeline, hint=hint) from None


@contextmanager
def _translated(
    pipeline: str, inputs: Sequence[str], output_run: str, where: str
) -> Iterator[None]:
    """Turn the builder's and registry's exceptions into InputErrors with a hint."""
    from lsst.daf.butler import (
        ButlerUserError,
        InvalidQueryError,
        MissingCollectionError,
        MissingDatasetTypeError,
    )
    from lsst.pipe.base.quantum_graph_builder import (
        OutputExistsError,
        QuantumGraphBuilderError,
    )

    collections = f"input collections {list(inputs)}"
    run = f"output run {output_run!r}"
    # fmt: off
    cases: list[tuple[type[Exception], str, str, str | None]] = [  # subclasses first
        (MissingCollectionError, "unknown collection: {exc}", collections,
         "list the repository's collections with `butler query-collections REPO`"),
        (InvalidQueryError, f"invalid data query {where!r}: {{exc}}", f"query {where!r}",
         "see the Butler query expression syntax, e.g. \"instrument='X' AND visit=12\""),
        (MissingDatasetTypeError, "the repository lacks a dataset type: {exc}", pipeline,
         "register the input dataset types, or run the producing step first"),
        (OutputExistsError, "the output run already holds outputs of this graph: {exc}", run,
         "choose a new output run"),
        (QuantumGraphBuilderError, "missing prerequisite or init-input: {exc}", collections,
         "check that the input collections hold every calibration and reference catalog"),
        (ButlerUserError, "cannot expand the pipeline: {exc}", f"query {where!r}", None),
        (RuntimeError, "cannot expand the pipeline: {exc}", run, None),  # run not a RUN
    ]
    # fmt: on
    try:
        yield
    except (ButlerUserError, QuantumGraphBuilderError, RuntimeError) as exc:
        for kind, message, where_, hint in cases:
            if isinstance(exc, kind):
                raise InputError(message.format(exc=exc), where=where_, hint=hint) from None
        raise


def _write_atomically(components: Any, qgraph_path: Path) -> None:
    """Write the graph under a temporary ``.qg`` name, then rename it into place."""
    qgraph_path.parent.mkdir(parents=True, exist_ok=True)
    partial = qgraph_path.with_name(f".{qgraph_path.stem}.{os.getpid()}.partial.qg")
    try:
        components.write(str(partial))
        partial.replace(qgraph_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class DatastorePaths:
    """Predict where the repository's file datastore writes a dataset.

    This is the datastore's own put logic (file template, template validation,
    formatter file extension, composite disassembly) driven by the repository's
    configuration alone, so a workflow can name every output file before it exists,
    in bulk and without a registry query per dataset.
    """

    def __init__(self, butler_config: str | Path, universe: Any) -> None:
        from lsst.daf.butler import FormatterFactory, LocationFactory
        from lsst.daf.butler.datastore.composites import CompositesMap
        from lsst.daf.butler.datastore.file_templates import FileTemplates

        self.config_path = str(butler_config)
        try:
            config = caches.butler_config(self.config_path)
            datastore = _file_datastore_config(config["datastore"])
            self._templates = FileTemplates(datastore["templates"], universe=universe)
            self._formatters = FormatterFactory()
            self._formatters.registerFormatters(datastore["formatters"], universe=universe)
            self._composites = CompositesMap(datastore["composites"], universe=universe)
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"cannot read the datastore configuration of {butler_config}: {exc}",
                where=self.config_path,
                hint="give the repository's butler.yaml",
            ) from None
        # Any root will do: only the path relative to it is kept.
        self._locations = LocationFactory("file:///datastore-root/")
        self._by_type: dict[tuple[str, Any], tuple[Any, str | None]] = {}
        self._plans: dict[tuple[str, Any], _Plan] = {}  # predict_values's, same keys
        self._with_instrument: dict[str, bool] = {}

    def predict(self, ref: Any) -> list[tuple[str | None, str]]:
        """``(component, path)`` of each file of ``ref``; component is None when whole.

        The template check and the formatter's file extension are worked out once per
        dataset type, component and instrument (formatter overrides can be per
        instrument); each further ref only formats its template.
        """
        if self._composites.shouldBeDisassembled(ref):
            parts = [(c, ref.makeComponentRef(c)) for c in ref.datasetType.storageClass.components]
        else:
            parts = [(None, ref)]
        out: list[tuple[str | None, str]] = []
        for component, part in parts:
            key = (part.datasetType.name, part.dataId.get("instrument"))
            cached = self._by_type.get(key)
            if cached is None:
                template = self._template(part)
                path = self._full_path(part, template)
                base = template.format(part)
                # The extension, when the formatter only appends one (the usual case).
                extension = path[len(base) :] if path.startswith(base) else None
                self._by_type[key] = (template, extension)
                out.append((component, path))
                continue
            template, extension = cached
            if extension is None:
                out.append((component, self._full_path(part, template)))
            else:
                out.append((component, template.format(part) + extension))
        return out

    def _template(self, part: Any) -> Any:
        from lsst.daf.butler.datastore.file_templates import FileTemplateValidationError

        try:
            template = self._templates.getTemplate(part)
            template.validateTemplate(part)
        except (KeyError, FileTemplateValidationError) as exc:
            raise InputError(
                f"no usable file template for {part.datasetType.name}: {exc}",
                where=f"datastore templates of {self.config_path}",
                hint="use every dimension of the dataset type in its template (a --file-template "
                "or campaign file_templates override, else the repository's datastore templates)",
            ) from None
        return template

    def _full_path(self, part: Any, template: Any) -> str:
        from lsst.daf.butler import FileDescriptor

        location = self._locations.fromPath(template.format(part), trusted_path=True)
        descriptor = FileDescriptor(
            location,
            storageClass=part.datasetType.storageClass,
            component=part.datasetType.component(),
        )
        formatter = self._formatters.getFormatter(part, descriptor, dataId=part.dataId, ref=part)
        return str(formatter.make_updated_location(location).pathInStore.path)

    def predict_values(
        self,
        dataset_type: Any,
        values: tuple[Any, ...],
        run: str,
        dataset_id: uuid.UUID,
        records: DataIdRecords,
    ) -> list[tuple[str | None, str]]:
        """:meth:`predict` of a dataset given by its parts instead of a DatasetRef.

        ``dataset_type`` is the repository's definition of the (parent) dataset type,
        ``values`` the data id's full values (``DataCoordinate.full_values``) and
        ``records`` gives the dimension records of data ids. The result is
        :meth:`predict`'s for the ref with the expanded data id: the first datasets of
        each dataset type and instrument go through :meth:`predict` and the file
        templates compiled for that dataset type (:mod:`skybatch.graph.templates`) must
        give the same paths; the others only format the compiled templates. A dataset
        type whose template does not compile or gives another path than the
        datastore's own formatting keeps that formatting for all its datasets.
        """
        # As predict's cache: by dataset type and instrument (first in data ids).
        name = dataset_type.name
        with_instrument = self._with_instrument.get(name)
        if with_instrument is None:
            keys = list(dataset_type.dimensions.data_coordinate_keys)
            with_instrument = self._with_instrument[name] = keys[:1] == ["instrument"]
        key = (name, values[0] if with_instrument else None)
        plan = self._plans.get(key)
        if plan is None:
            ref = records.make_ref(dataset_type, values, run, dataset_id)
            out = self.predict(ref)
            self._plans[key] = plan = self._plan(ref, records)
            plan.check(out, values, run, dataset_id)
            return out
        if plan.parts is not None:
            try:
                out = [
                    (component, template.format(values, run, dataset_id, lookup) + extension)
                    for component, template, extension, lookup in plan.parts
                ]
            except LookupError:
                pass  # a record the template reads is missing: the datastore's way
            else:
                if plan.checks_left <= 0:
                    return out
                expected = self.predict(records.make_ref(dataset_type, values, run, dataset_id))
                plan.check(expected, values, run, dataset_id, out)
                return expected
        return self.predict(records.make_ref(dataset_type, values, run, dataset_id))

    def _plan(self, ref: Any, records: DataIdRecords) -> _Plan:
        """How to name the files of datasets of ``ref``'s type (and instrument)."""
        from .templates import CompiledTemplate, Unsupported

        dataset_type = ref.datasetType
        dimensions = dataset_type.dimensions
        plan = _Plan()
        if not self._with_instrument[dataset_type.name] and "instrument" in dimensions.names:
            return plan  # the instrument is not where predict_values looks for it
        if self._composites.shouldBeDisassembled(ref):
            components: list[str | None] = list(dataset_type.storageClass.components)
        else:
            components = [None]
        parts: list[tuple[str | None, CompiledTemplate, str, Any]] = []
        for component in components:
            name = dataset_type.name if component is None else f"{dataset_type.name}.{component}"
            template, extension = self._by_type[(name, ref.dataId.get("instrument"))]
            if extension is None:  # the formatter does more than add an extension
                return plan
            try:
                compiled = CompiledTemplate(template.template, dimensions, name)
            except Unsupported as exc:
                _log.debug("file template of %s not compiled (%s)", name, exc)
                return plan
            lookup = records.lookup(dimensions) if compiled.record_fields else None
            parts.append((component, compiled, extension, lookup))
        plan.parts = parts
        return plan


#: Datasets of each dataset type (and instrument) whose paths from compiled templates
#: are compared with the datastore's own formatting before the compiled ones are
#: trusted alone.
CHECKED_DATASETS = 3


@dataclass
class _Plan:
    """The compiled templates of one dataset type and instrument, once checked."""

    # (component, compiled template, extension, record look-up) of each file, or None:
    # format with the datastore's FileTemplate.
    parts: list[tuple[str | None, Any, str, Any]] | None = None
    checks_left: int = CHECKED_DATASETS

    def check(
        self,
        expected: list[tuple[str | None, str]],
        values: tuple[Any, ...],
        run: str,
        dataset_id: uuid.UUID,
        got: list[tuple[str | None, str]] | None = None,
    ) -> None:
        """Compare the compiled templates' paths of a dataset with the datastore's."""
        if self.parts is None:
            return
        self.checks_left -= 1
        if got is None:
            try:
                got = [
                    (component, template.format(values, run, dataset_id, lookup) + extension)
                    for component, template, extension, lookup in self.parts
                ]
            except LookupError:
                return
        if got != expected:
            _log.warning(
                "compiled file templates give %s instead of %s: formatting %s with the "
                "datastore's templates",
                got,
                expected,
                self.parts[0][1].dataset_type,
            )
            self.parts = None


#: Parsed repository configurations (ButlerConfig), kept per process by
#: :mod:`skybatch.run.caches` (the expansion's Butler leaves its own there).
_CONFIGS = caches.CONFIGS


def _file_datastore_config(config: Any) -> Any:
    """The configuration of the (first) file datastore, also inside a chained one."""
    found = [c for c in [config, *config.get("datastores", [])] if "templates" in c]
    if not found:
        raise KeyError("no file datastore with file templates")
    return found[0]


def plain_data_id(mapping: Any) -> dict[str, Any]:
    """A data id as JSON-ready values (numpy integers and the like become Python ones)."""
    return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in mapping.items()}


class DatasetFiles:
    """The files of every dataset of a graph: the datastore record's path for stored
    datasets, the predicted path for the others; who produces what."""

    def __init__(
        self,
        graph: PredictedQuantumGraph,
        paths: DatastorePaths,
        quanta: Mapping[uuid.UUID, Quantum],
    ) -> None:
        self._graph = graph
        self._paths = paths
        self._quanta = quanta
        self._cache: dict[uuid.UUID, list[FileSpec]] = {}
        self.producer: dict[uuid.UUID, uuid.UUID] = {}
        self.stored: dict[uuid.UUID, list[tuple[str | None, str]]] = {}
        for q, quantum in quanta.items():
            for refs in quantum.outputs.values():
                self.producer.update((ref.id, q) for ref in refs)
            for records in quantum.datastore_records.values():  # one per datastore
                for dataset_id, by_table in records.records.items():
                    if dataset_id not in self.stored:  # several quanta read one input
                        self.stored[dataset_id] = [
                            (getattr(info, "component", None), str(info.path))
                            for infos in by_table.values()
                            for info in infos
                            if hasattr(info, "path")  # file datastore records only
                        ]

    def specs(self, ref: DatasetRef) -> list[FileSpec]:
        rid = ref.id  # a property that builds a new UUID on every access
        cached = self._cache.get(rid)
        if cached is None:
            parent = self._canonical(ref)
            data_id = plain_data_id(parent.dataId.required)
            name = parent.datasetType.name
            located = self.stored.get(rid) or self._paths.predict(parent)
            text_id = str(rid)
            # Built from values computed here: no validation needed.
            cached = self._cache[rid] = [
                FileSpec.model_construct(
                    dataset_id=text_id,
                    dataset_type=name if component is None else f"{name}.{component}",
                    data_id=data_id,
                    path=path,
                )
                for component, path in located
            ]
        return cached

    def job_inputs(self, job_quanta: Sequence[uuid.UUID]) -> list[FileSpec]:
        own = set(job_quanta)
        out: dict[uuid.UUID, list[FileSpec]] = {}
        for q in job_quanta:
            quantum = self._quanta[q]
            refs = [ref for refs in quantum.inputs.values() for ref in refs]
            refs += list(quantum.initInputs.values())
            for ref in refs:
                rid = ref.id
                if rid not in out and self.producer.get(rid) not in own:
                    out[rid] = self.specs(ref)
        return [spec for specs in out.values() for spec in specs]

    def job_outputs(self, job_quanta: Sequence[uuid.UUID]) -> list[FileSpec]:
        return [
            spec
            for q in job_quanta
            for refs in self._quanta[q].outputs.values()
            for ref in refs
            for spec in self.specs(ref)
        ]

    def check_unique_outputs(self) -> None:
        """Refuse two predicted outputs (init-outputs included) at one path."""
        refs = [ref for q in self._quanta.values() for r in q.outputs.values() for ref in r]
        for label in [*self._graph.pipeline_graph.tasks, ""]:
            refs += self._graph.get_init_outputs(label).values()
        refuse_shared_paths(
            (spec for ref in refs for spec in self.specs(ref)), self._paths.config_path
        )

    def _canonical(self, ref: DatasetRef) -> DatasetRef:
        """The parent dataset with its repository definition (as a butler writes it)."""
        from lsst.daf.butler import DatasetRef

        pipeline_graph = self._graph.pipeline_graph
        name, _ = ref.datasetType.nameAndComponent()
        if name == pipeline_graph.packages_dataset_type.name:
            dataset_type = pipeline_graph.packages_dataset_type
        else:
            dataset_type = pipeline_graph.dataset_types[name].dataset_type
        return DatasetRef(dataset_type, ref.dataId, run=ref.run, id=ref.id, conform=False)


def refuse_shared_paths(specs: Iterable[FileSpec], config_path: str) -> None:
    """Raise :class:`InputError` if two datasets of ``specs`` are predicted at one path."""
    owner: dict[str, FileSpec] = {}
    for spec in specs:
        other = owner.setdefault(spec.path, spec)
        if other.dataset_id != spec.dataset_id:
            raise InputError(
                f"outputs {other.dataset_type} {other.data_id} and {spec.dataset_type} "
                f"{spec.data_id} would both be written to {spec.path}",
                where=f"datastore templates of {config_path}",
                hint="add the dimensions that tell them apart to the file template of "
                f"{spec.dataset_type}",
            )
