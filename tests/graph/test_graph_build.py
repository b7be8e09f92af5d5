"""Workflow construction: jobs, clustering, files, resources, JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skybatch.backbone.catalog import FileInfo
from skybatch.errors import InputError
from skybatch.graph.build import build_workflow
from skybatch.graph.expand import DatasetFiles, ExpansionResult
from skybatch.graph.workflow import ClusterRule, JobNode, ResourceRequest, Workflow

STEP1 = ClusterRule(name="step1", tasks=["isr", "calibrate"], dimensions=["visit", "detector"])


@pytest.fixture(scope="module")
def default(expansion: ExpansionResult, build_kwargs: dict[str, Any]) -> Workflow:
    return build_workflow(expansion, **build_kwargs)


@pytest.fixture(scope="module")
def clustered(expansion: ExpansionResult, build_kwargs: dict[str, Any]) -> Workflow:
    resources = {
        "isr": ResourceRequest(memory_mb=4096, walltime_s=600),
        "calibrate": ResourceRequest(memory_mb=3000, cores=2, walltime_s=1200),
    }
    return build_workflow(expansion, cluster_rules=[STEP1], resources=resources, **build_kwargs)


def _jobs(workflow: Workflow, label: str) -> list[JobNode]:
    return [job for job in workflow.jobs if job.label == label]


def _by_name(workflow: Workflow) -> dict[str, JobNode]:
    return {job.name: job for job in workflow.jobs}


def test_one_job_per_quantum(default: Workflow, expansion: ExpansionResult) -> None:
    assert len(default.jobs) == expansion.total_quanta
    assert all(len(job.quanta) == 1 for job in default.jobs)
    assert len({job.name for job in default.jobs}) == len(default.jobs)
    assert default.quanta_per_task == expansion.quanta_per_task
    assert "calibrate-visit1000-det0" in _by_name(default)
    assert default.qgraph == str(expansion.qgraph_path)


def test_calibrate_depends_on_isr_of_same_exposure(default: Workflow) -> None:
    jobs = _by_name(default)
    for job in _jobs(default, "calibrate"):
        data_id = job.data_ids[0]
        (parent,) = job.depends_on
        assert jobs[parent].label == "isr"
        isr_id = jobs[parent].data_ids[0]
        assert (isr_id["exposure"], isr_id["detector"]) == (data_id["visit"], data_id["detector"])
    assert all(not job.depends_on for job in _jobs(default, "isr"))


def test_coadd_depends_on_the_calibrates_it_reads(default: Workflow) -> None:
    producer = {spec.dataset_id: job.name for job in default.jobs for spec in job.outputs}
    for job in _jobs(default, "coadd"):
        calexps = [spec for spec in job.inputs if spec.dataset_type == "calexp"]
        assert calexps
        assert job.depends_on == sorted({producer[spec.dataset_id] for spec in calexps})


def test_inputs_and_outputs(default: Workflow, expansion: ExpansionResult) -> None:
    job = _by_name(default)["isr-exp1000-det0"]
    types = {spec.dataset_type for spec in job.inputs}
    assert types == {"raw", "bias", "flat"}
    raw = next(spec for spec in job.inputs if spec.dataset_type == "raw")
    assert raw.path.startswith("DemoCam/raw/all/raw/") and raw.path.endswith(".fits")
    assert raw.data_id == {"instrument": "DemoCam", "exposure": 1000, "detector": 0}
    assert {spec.dataset_type for spec in job.outputs} == {
        "postISRCCD",
        "isr_metadata",
        "isr_log",
    }
    assert all(spec.path.startswith(f"{expansion.output_run}/") for spec in job.outputs)


def test_output_paths_unique(default: Workflow) -> None:
    paths = [spec.path for job in default.jobs for spec in job.outputs]
    assert len(paths) == len(set(paths))


def test_cluster_rule(clustered: Workflow, default: Workflow) -> None:
    step1 = _jobs(clustered, "step1")
    assert len(step1) == 4  # one per (visit, detector)
    assert len(clustered.jobs) == len(default.jobs) - 4
    for job in step1:
        assert job.task_labels == ["isr", "calibrate"]
        assert len(job.quanta) == 2
        isr_id, calibrate_id = job.data_ids
        assert "exposure" in isr_id and "visit" in calibrate_id  # isr runs first
        assert isr_id["exposure"] == calibrate_id["visit"]
        assert job.name == f"step1-visit{calibrate_id['visit']}-det{calibrate_id['detector']}"
        inputs = {spec.dataset_type for spec in job.inputs}
        assert "postISRCCD" not in inputs  # made and used inside the job
        assert {"raw", "bias", "flat", "ref_cat"} <= inputs
        outputs = {spec.dataset_type for spec in job.outputs}
        assert {"postISRCCD", "calexp", "src"} <= outputs
        assert not job.depends_on
    names = _by_name(clustered)
    for job in _jobs(clustered, "visitSummary"):
        assert all(names[p].label == "step1" for p in job.depends_on)


def test_resources_per_task_and_max_in_clusters(clustered: Workflow) -> None:
    for job in _jobs(clustered, "step1"):
        assert job.resources == ResourceRequest(memory_mb=4096, cores=2, walltime_s=1200)
    assert all(job.resources == ResourceRequest() for job in _jobs(clustered, "coadd"))


def test_cluster_cycle_is_refused(expansion: ExpansionResult, build_kwargs: dict[str, Any]) -> None:
    # isr and visitSummary in one job: calibrate needs it and it needs calibrate
    rule = ClusterRule(name="loop", tasks=["isr", "visitSummary"])
    with pytest.raises(InputError, match="cycle"):
        build_workflow(expansion, cluster_rules=[rule], **build_kwargs)


@pytest.mark.parametrize(
    ("rules", "match"),
    [
        ([ClusterRule(name="x", tasks=["isr"], dimensions=["visit"])], "no value for"),
        ([ClusterRule(name="x", tasks=["isr"], dimensions=["nope"])], "unknown dimensions"),
        ([STEP1, ClusterRule(name="y", tasks=["calibrate"])], "in cluster rules"),
        ([ClusterRule(name="isr", tasks=["calibrate"])], "task label"),
    ],
)
def test_bad_cluster_rules(
    expansion: ExpansionResult,
    build_kwargs: dict[str, Any],
    rules: list[ClusterRule],
    match: str,
) -> None:
    with pytest.raises(InputError, match=match):
        build_workflow(expansion, cluster_rules=rules, **build_kwargs)


def test_whole_pipeline_in_one_job(
    expansion: ExpansionResult, build_kwargs: dict[str, Any]
) -> None:
    rule = ClusterRule(name="all", tasks=["isr", "calibrate", "visitSummary", "coadd"])
    (job,) = build_workflow(expansion, cluster_rules=[rule], **build_kwargs).jobs
    assert job.name == "all" and len(job.quanta) == expansion.total_quanta
    position = {label: i for i, label in enumerate(job.task_labels)}
    assert position["isr"] < position["calibrate"] < position["coadd"]
    assert {spec.dataset_type for spec in job.inputs} == {
        "raw",
        "bias",
        "flat",
        "ref_cat",
        "skyMap",
    }


def test_build_from_file_and_json_round_trip(
    default: Workflow, expansion: ExpansionResult, build_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    again = build_workflow(expansion.qgraph_path, **build_kwargs)
    assert again.jobs == default.jobs
    path = tmp_path / "workflow.json"
    default.save(path)
    assert Workflow.load(path) == default


def test_run_must_match_graph(expansion: ExpansionResult, build_kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="predicts outputs in run"):
        build_workflow(expansion, **{**build_kwargs, "run": "other/run"})


def test_colliding_output_paths_are_refused(expansion: ExpansionResult) -> None:
    class OnePath:  # a file-naming policy that names every file the same
        config_path = "butler.yaml"

        def predict(self, ref: Any) -> list[tuple[str | None, str]]:
            return [(None, "same/path.fits")]

    graph = expansion.graph
    files = DatasetFiles(graph, OnePath(), graph.build_execution_quanta())  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"would both be written to same/path\.fits"):
        files.check_unique_outputs()


class StubCatalog:
    """The two look-ups build_workflow makes, over a fixed set of files."""

    def __init__(self, files: list[FileInfo]) -> None:
        self.files = files

    def files_by_dataset_ids(self, ids: list[str]) -> dict[str, FileInfo]:
        return {f.dataset_id: f for f in self.files if f.dataset_id in ids}

    def files_by_paths(self, paths: list[str]) -> dict[str, FileInfo]:
        return {f.path: f for f in self.files if f.path in paths}


def test_catalog_fills_file_ids(
    default: Workflow, expansion: ExpansionResult, build_kwargs: dict[str, Any]
) -> None:
    raw = next(s for job in default.jobs for s in job.inputs if s.dataset_type == "raw")
    info = FileInfo(
        7,
        raw.path,
        72000,
        "0" * 32,
        raw.dataset_id,
        "raw",
        None,
        None,
        None,
        None,
        datetime.now(UTC),
    )
    built = build_workflow(expansion, catalog=StubCatalog([info]), **build_kwargs)  # type: ignore[arg-type]
    specs = [s for job in built.jobs for s in job.inputs if s.dataset_id == raw.dataset_id]
    assert specs and all((s.file_id, s.size_bytes, s.md5) == (7, 72000, "0" * 32) for s in specs)
    others = [s for job in built.jobs for s in job.inputs if s.dataset_id != raw.dataset_id]
    assert all(s.file_id is None for s in others)
