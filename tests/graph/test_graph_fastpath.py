"""The fast path of build_workflow (graph models, compiled file templates) gives the
reference path's workflow (execution quanta, the datastore's FileTemplate.format)."""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import networkx
import pytest
import yaml
from lsst.daf.butler import DatasetRef, DatasetType
from lsst.daf.butler.datastore.file_templates import FileTemplate

from skybatch.demo.survey import Survey
from skybatch.errors import InputError
from skybatch.graph import build as build_module
from skybatch.graph.build import _job_name, _JobNames, _Quanta, _topological_order, build_workflow
from skybatch.graph.build import read_graph as read
from skybatch.graph.expand import DatasetFiles, DatastorePaths, ExpansionResult
from skybatch.graph.files import GraphFiles
from skybatch.graph.templates import CompiledTemplate, DataIdRecords, Unsupported, _finish
from skybatch.graph.workflow import ClusterRule

RULES: dict[str, list[ClusterRule]] = {
    "one-per-quantum": [],
    "step1": [
        ClusterRule(name="step1", tasks=["isr", "calibrate"], dimensions=["visit", "detector"])
    ],
    "per-visit": [
        ClusterRule(name="v", tasks=["isr", "calibrate", "visitSummary"], dimensions=["visit"])
    ],
    "no-dimensions": [ClusterRule(name="s", tasks=["isr", "calibrate"])],
    "all": [ClusterRule(name="all", tasks=["isr", "calibrate", "visitSummary", "coadd"])],
}


@pytest.mark.parametrize("rules", RULES.values(), ids=list(RULES))
def test_fast_path_gives_the_reference_workflow(
    expansion: ExpansionResult, build_kwargs: dict[str, Any], rules: list[ClusterRule]
) -> None:
    # A fresh graph for each (the reference path caches execution quanta in it).
    fast = build_workflow(expansion.qgraph_path, cluster_rules=rules, fast=True, **build_kwargs)
    reference = build_workflow(
        expansion.qgraph_path, cluster_rules=rules, fast=False, **build_kwargs
    )
    assert fast.jobs and fast.jobs == reference.jobs  # names, files, paths, dependencies
    # Same JSON too (dict orders included), but for the creation time.
    assert fast.model_dump_json(exclude={"created"}) == reference.model_dump_json(
        exclude={"created"}
    )


def test_fast_path_on_the_expansion_graph_and_module_flag(
    expansion: ExpansionResult, build_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph `skybatch run` passes (the expansion's own); FAST_PATH=False is the
    reference path."""
    fast = build_workflow(expansion, **build_kwargs)
    monkeypatch.setattr(build_module, "FAST_PATH", False)
    built: list[str] = []
    real = DatasetFiles.__init__

    def spy(self: DatasetFiles, *args: Any) -> None:
        built.append("reference")
        real(self, *args)

    monkeypatch.setattr(DatasetFiles, "__init__", spy)
    reference = build_workflow(expansion.qgraph_path, **build_kwargs)
    assert built == ["reference"]
    assert fast.jobs == reference.jobs


def _files(graph: Any, paths: Any) -> GraphFiles:
    order = list(graph.quantum_only_xgraph)
    assert GraphFiles.eligible(graph, order)
    return GraphFiles(graph, paths, order)


def test_every_dataset_type_uses_compiled_templates(
    expansion: ExpansionResult, survey: Survey
) -> None:
    """No silent fall-back: the demo repository's templates (alternates, optionals,
    dimension records, sky pixels) all compile and agree with the datastore."""
    graph = read(expansion.qgraph_path)
    paths = DatastorePaths(survey.repo / "butler.yaml", graph.pipeline_graph.universe)
    _files(graph, paths).check_unique_outputs()
    assert len(paths._plans) >= 8
    assert all(plan.parts is not None for plan in paths._plans.values())


def _datasets(graph: Any) -> list[tuple[Any, tuple[Any, ...], str, uuid.UUID]]:
    """(repository dataset type, data id values, run, id) of every dataset of a graph."""
    types = {name: node.dataset_type for name, node in graph.pipeline_graph.dataset_types.items()}
    types[graph.pipeline_graph.packages_dataset_type.name] = (
        graph.pipeline_graph.packages_dataset_type
    )
    found: dict[uuid.UUID, tuple[Any, tuple[Any, ...], str, uuid.UUID]] = {}
    for model in graph._quantum_datasets.values():
        for datasets in [*model.inputs.values(), *model.outputs.values()]:
            for d in datasets:
                dataset_type = types[d.dataset_type_name]
                found[d.dataset_id] = (dataset_type, tuple(d.data_coordinate), d.run, d.dataset_id)
    for label in [*graph.pipeline_graph.tasks, ""]:
        for ref in graph.get_init_outputs(label).values():
            name, _ = ref.datasetType.nameAndComponent()
            found[ref.id] = (types[name], (), ref.run, ref.id)
    return list(found.values())


DEFAULT = (
    "{run:/}/{datasetType}.{component:?}/{tract:?}/{patch:?}/"
    "{day_obs|visit.day_obs|exposure.day_obs:?}/{band:?}/{subfilter:?}/{physical_filter:?}/"
    "{visit:?}/{exposure.obs_id|group:?}/{datasetType}_{component:?}_{instrument:?}_"
    "{tract:?}_{patch:?}_{band:?}_{physical_filter:?}_{visit:?}_{exposure.obs_id|group:?}_"
    "{detector.full_name:?}_{skymap:?}_{skypix:?}_{run}"
)
#: Templates exercising what FileTemplate.format does, compiled or refused alike.
TEMPLATES = [
    DEFAULT,
    "{run:/}/{datasetType}.{component:?}/{day_obs|exposure.day_obs}/{exposure.obs_id}/"
    "{datasetType}_{component:?}_{instrument:?}_{physical_filter}_{exposure.obs_id}_"
    "{detector.full_name}_{run}",
    "{run}/{datasetType}/{visit:08d?}/{detector:03d?}/{tract:?}{patch:>5?}/{id}",
    "{run!r}/{datasetType!s}.{component!r:?}/{instrument!r:?}/{exposure.obs_id!r:?}_{id}",
    "/{tract:?}/{run:/}/x.y#z_{visit:?}.{detector:?}",
    "{tract:?}/{patch:?}/{run}",
    "{run}//{datasetType}/{component:?}/{skypix:?}/{htm7:?}/{skypix.id:?}/{visit.name:?}_"
    "{detector.name_in_raft:?}_{physical_filter.band:?}_{exposure.seq_num:04d?}",
    "{run}/{visit|exposure:?}/{band|physical_filter}/{detector:?}/{datasetType}",
    "{run}/{datasetType}/{nothere}/{id}",
    "{run}/{datasetType}/{visit.obs_id:?}/{id}",  # visit records have no obs_id
    "{run}/{datasetType}/{datasetType.x:?}/{id}",
    "{run}/{datasetType}/{visit:x?}_{physical_filter:d?}_{id}",  # 'd' fails on strings
    "{run}/{datasetType}/{component}/{id}",
    "{run}/{datasetType}/{}/{id}",
]
#: Templates FileTemplate formats that are not compiled (formatted the slow way).
NOT_COMPILED = {
    "{run}/{datasetType}/{visit.obs_id:?}/{id}",  # a field records lack: ignored there
    "{run}/{datasetType}/{datasetType.x:?}/{id}",  # KeyError on records: both fail
}


def _expected(template: str, ref: DatasetRef) -> str | type[Exception]:
    checked = FileTemplate(template)  # a template a datastore accepts
    try:
        return checked.format(ref)
    except Exception as exc:
        return type(exc)


def _got(
    template: str, dataset_type: Any, values: Any, run: str, dataset_id: Any, records: Any
) -> Any:
    try:
        compiled = CompiledTemplate(template, dataset_type.dimensions, dataset_type.name)
    except Unsupported:
        return Unsupported
    try:
        return compiled.format(values, run, dataset_id, records.lookup(dataset_type.dimensions))
    except Exception as exc:
        return type(exc)


def test_compiled_templates_format_as_file_template(expansion: ExpansionResult) -> None:
    """Every dataset of the graph, whole and as a component, in its run and in a run
    with spaces, slashes and dots, with each template: the same path, or both fail."""
    graph = read(expansion.qgraph_path)
    records = DataIdRecords(graph.dimension_data, graph.pipeline_graph.universe)
    compared = refused = 0
    for dataset_type, values, run, dataset_id in _datasets(graph):
        exposure = DatasetType(dataset_type.name, dataset_type.dimensions, "ExposureF")
        kinds = [dataset_type, exposure.makeComponentDatasetType("wcs")]
        for kind in kinds:
            for in_run in (run, "my run/with space.and dots#1"):
                ref = records.make_ref(kind, values, in_run, dataset_id)
                assert ref.dataId.hasRecords()
                for template in TEMPLATES:
                    expected = _expected(template, ref)
                    got = _got(template, kind, values, in_run, dataset_id, records)
                    if got is Unsupported:
                        refused += 1
                        assert not isinstance(expected, str) or template in NOT_COMPILED, (
                            template,
                            ref,
                        )
                        continue
                    compared += 1
                    if isinstance(expected, str):
                        assert got == expected, (template, ref)
                    else:  # a failure at format time (e.g. a bad format spec for the id)
                        assert got is expected or issubclass(got, expected), (template, ref)
    assert compared > 1000 and refused > 100


def _config_with(survey: Survey, tmp_path: Path, extra: dict[str, Any]) -> Path:
    """A copy of the repository's butler.yaml with some settings added."""
    config = yaml.safe_load((survey.repo / "butler.yaml").read_text())
    for key, value in extra.items():
        config.setdefault(key, {}).update(value)
    path = tmp_path / "butler.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_disassembled_composites(
    expansion: ExpansionResult, survey: Survey, tmp_path: Path
) -> None:
    """A composite the datastore writes as one file per component."""
    config = _config_with(
        survey,
        tmp_path,
        {
            "storageClasses": {
                "SkybatchTestPair": {
                    "pytype": "dict",
                    "components": {"first": "StructuredDataDict", "second": "StructuredDataDict"},
                }
            },
            "datastore": {"composites": {"disassembled": {"SkybatchTestPair": True}}},
        },
    )
    graph = read(expansion.qgraph_path)
    universe = graph.pipeline_graph.universe
    records = DataIdRecords(graph.dimension_data, universe)
    reference, fast = DatastorePaths(config, universe), DatastorePaths(config, universe)
    calexps = [d for d in _datasets(graph) if d[0].name == "calexp"]
    assert len(calexps) == 4
    for dataset_type, values, run, dataset_id in calexps:
        pair = DatasetType("pair", dataset_type.dimensions, "SkybatchTestPair")
        expected = reference.predict(records.make_ref(pair, values, run, dataset_id))
        assert [c for c, _ in expected] == ["first", "second"]
        assert fast.predict_values(pair, values, run, dataset_id, records) == expected
    assert all(plan.parts is not None for plan in fast._plans.values())


def test_mismatching_compiled_templates_fall_back(
    expansion: ExpansionResult,
    build_kwargs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = build_workflow(expansion.qgraph_path, fast=False, **build_kwargs)
    real = CompiledTemplate.format

    def wrong(self: CompiledTemplate, *args: Any) -> str:
        path = real(self, *args)
        return path + "-wrong" if self.dataset_type == "calexp" else path

    monkeypatch.setattr(CompiledTemplate, "format", wrong)
    with caplog.at_level(logging.WARNING, logger="skybatch.graph.expand"):
        fast = build_workflow(expansion.qgraph_path, fast=True, **build_kwargs)
    assert fast.jobs == reference.jobs
    assert "calexp" in caplog.text and "-wrong" in caplog.text

    def missing(self: CompiledTemplate, *args: Any) -> str:
        raise LookupError("no record")

    monkeypatch.setattr(CompiledTemplate, "format", missing)
    assert build_workflow(expansion.qgraph_path, fast=True, **build_kwargs).jobs == reference.jobs


def test_output_path_collisions_are_refused_alike(expansion: ExpansionResult) -> None:
    class OnePath:  # a file-naming policy that names every file the same
        config_path = "butler.yaml"

        def predict(self, ref: Any) -> list[tuple[str | None, str]]:
            return [(None, "same/path.fits")]

        def predict_values(self, *args: Any) -> list[tuple[str | None, str]]:
            return [(None, "same/path.fits")]

    graph = read(expansion.qgraph_path)
    with pytest.raises(InputError, match=r"would both be written to same/path\.fits") as fast:
        _files(graph, OnePath()).check_unique_outputs()
    reference_files = DatasetFiles(graph, OnePath(), graph.build_execution_quanta())  # type: ignore[arg-type]
    with pytest.raises(InputError) as reference:
        reference_files.check_unique_outputs()
    assert str(fast.value) == str(reference.value)


def test_unusable_template_is_refused_alike(
    expansion: ExpansionResult, survey: Survey, build_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    config = _config_with(
        survey, tmp_path, {"datastore": {"templates": {"calexp": "{run}/{id}_x"}}}
    )
    kwargs = {**build_kwargs, "butler_config": config}
    messages = []
    for fast in (True, False):
        with pytest.raises(InputError, match="no usable file template for calexp") as error:
            build_workflow(expansion.qgraph_path, fast=fast, **kwargs)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_topological_order_is_networkx_lexicographical(expansion: ExpansionResult) -> None:
    graph = read(expansion.qgraph_path)
    xgraph = graph.quantum_only_xgraph
    task_index = {label: i for i, label in enumerate(graph.pipeline_graph.tasks)}

    def key(q: uuid.UUID) -> str:  # the key build_workflow has always used
        node = xgraph.nodes[q]
        return f"{task_index[node['task_label']]:06d} {sorted(node['data_id'].required.items())}"

    expected = list(networkx.lexicographical_topological_sort(xgraph, key=key))
    table = _Quanta(graph)
    assert _topological_order(graph, table) == expected
    assert table.edges() == list(xgraph.edges)


def test_job_names_are_job_name(expansion: ExpansionResult) -> None:
    graph = read(expansion.qgraph_path)
    table = _Quanta(graph)
    names = _JobNames()
    for q in table.nodes:
        data_id = table.data_id[q].required
        assert names(table.label[q], table.required[q]) == _job_name(table.label[q], data_id)
    required = [("instrument", "X"), ("detector", 3), ("tract", 9), ("physical_filter", "a b")]
    assert names("t", required) == _job_name("t", dict(required)) == "t-tract9-filter_a_b-det3"


def test_finish_is_split_replace_join_normpath() -> None:
    """The last steps of FileTemplate.format, on every short string of path pieces."""

    def reference(output: str) -> str:  # as FileTemplate.format ends
        head, tail = os.path.split(output)
        tail = tail.replace(".", "_").replace("#", "HASH")
        path = os.path.normpath(os.path.join(head, tail))
        return os.path.relpath(path, start="/") if os.path.isabs(path) else path

    pieces = ["/", "a", ".", "#", "..", "b.c", " "]
    for size in range(1, 6):
        for combination in itertools.product(pieces, repeat=size):
            output = "".join(combination)
            assert _finish(output) == reference(output), output
