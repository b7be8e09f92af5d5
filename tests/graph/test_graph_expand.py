"""Expansion: the same graph pipe_base builds, written to .qg with datastore records."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from lsst.pipe.base import Pipeline
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
from lsst.pipe.base.separable_pipeline_executor import SeparablePipelineExecutor

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.errors import InputError
from skybatch.graph.expand import ExpansionResult, expand

VISITS, DETECTORS = 2, 2


def test_quanta_per_task(expansion: ExpansionResult) -> None:
    quanta = expansion.quanta_per_task
    assert quanta["isr"] == quanta["calibrate"] == VISITS * DETECTORS
    assert quanta["visitSummary"] == VISITS
    assert quanta["coadd"] > 0
    assert expansion.total_quanta == sum(quanta.values())
    assert expansion.dataset_counts["raw"] == VISITS * DETECTORS
    assert expansion.dataset_counts["calexp"] == VISITS * DETECTORS
    assert expansion.expansion_s > 0
    assert expansion.qgraph_path.is_file()


def test_same_graph_as_pipe_base_builder(survey: Survey, expansion: ExpansionResult) -> None:
    with Butler.from_config(str(survey.repo), collections=[DEFAULTS], run="other/run") as butler:
        executor = SeparablePipelineExecutor(butler)
        reference = executor.build_quantum_graph(Pipeline.from_uri(str(pipeline_path())))
    want = {label: len(q) for label, q in reference.quanta_by_task.items()}
    assert expansion.quanta_per_task == want
    for label, quanta in reference.quanta_by_task.items():
        assert set(quanta) == set(expansion.graph.quanta_by_task[label])  # same data ids


def test_qg_file_reads_back_with_datastore_records(expansion: ExpansionResult) -> None:
    with PredictedQuantumGraph.open(str(expansion.qgraph_path)) as reader:
        reader.read_all()
        graph = reader.finish()
    assert graph.header.output_run == expansion.output_run
    assert {k: len(v) for k, v in graph.quanta_by_task.items()} == expansion.quanta_per_task
    quanta = graph.build_execution_quanta(task_label="isr")
    assert len(quanta) == VISITS * DETECTORS
    for quantum in quanta.values():
        (raw,) = [ref for t, refs in quantum.inputs.items() if t.name == "raw" for ref in refs]
        records = [r for data in quantum.datastore_records.values() for r in data.records]
        assert raw.id in records  # a quantum-backed butler can read it without a registry


@pytest.mark.parametrize(
    ("fragment", "tasks"),
    [("#isr,calibrate", {"isr", "calibrate"}), ("#step2", {"coadd"})],
)
def test_pipeline_subsets(survey: Survey, tmp_path: Path, fragment: str, tasks: set[str]) -> None:
    pipeline = f"{pipeline_path()}{fragment}"
    if fragment == "#step2":  # coadds need calexps: a later step's expansion (seed 5.1)
        with pytest.raises(InputError):
            expand(survey.repo, pipeline, [DEFAULTS], "u/sub", "", tmp_path / "g.qg")
        return
    result = expand(survey.repo, pipeline, [DEFAULTS], "u/sub", "visit = 1000", tmp_path / "g.qg")
    assert set(result.quanta_per_task) == tasks
    assert result.quanta_per_task == {"isr": DETECTORS, "calibrate": DETECTORS}


@pytest.mark.parametrize(
    ("pipeline", "inputs", "where", "match"),
    [
        (None, ["no/such/collection"], "", "unknown collection"),
        (None, [DEFAULTS], "visit = = 3", "invalid data query"),
        (None, [DEFAULTS], "no_such_dimension = 3", "invalid data query"),
        (None, [DEFAULTS], "visit = 99999", r"matches nothing.*visit = 99999"),
        ("missing.yaml", [DEFAULTS], "", "does not exist"),
        ("#nolabel", [DEFAULTS], "", "nolabel"),
    ],
)
def test_bad_inputs(
    survey: Survey,
    tmp_path: Path,
    pipeline: str | None,
    inputs: list[str],
    where: str,
    match: str,
) -> None:
    if pipeline is None:
        pipeline = str(pipeline_path())
    elif pipeline.startswith("#"):
        pipeline = f"{pipeline_path()}{pipeline}"
    else:
        pipeline = str(tmp_path / pipeline)
    out = tmp_path / "out" / "graph.qg"
    with pytest.raises(InputError, match=match) as info:
        expand(survey.repo, pipeline, inputs, "u/bad", where, out)
    assert info.value.where and info.value.hint
    assert not out.parent.exists()  # nothing written


def test_bad_repo_and_extension(survey: Survey, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open Butler repository"):
        expand(tmp_path / "nothing", str(pipeline_path()), [DEFAULTS], "u/b", "", tmp_path / "g.qg")
    with pytest.raises(InputError, match=r"\.qg"):
        expand(survey.repo, str(pipeline_path()), [DEFAULTS], "u/b", "", tmp_path / "g.qgraph")
