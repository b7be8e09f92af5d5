"""Helpers of the job tests: a tiny demo survey with a real quantum graph, a backbone and
a site cache.

The graph covers ``isr`` and ``calibrate`` for one visit and detector. Init outputs
are written as ``pipetask pre-exec-init-qbb`` does; the survey's files are registered
on the archive endpoint (the repository root) and the jobs' inputs replicated to a
site cache, exactly what the scheduler does before it releases a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsst.daf.butler import Butler, Quantum
from lsst.pipe.base import Pipeline
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
from lsst.pipe.base.separable_pipeline_executor import SeparablePipelineExecutor

from skybatch.backbone.butler import register_butler
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone
from skybatch.demo.driver import pipeline_path
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import DEFAULTS, Survey, build_survey
from skybatch.job.spec import FileSpec, JobSpec
from skybatch.settings import load_settings

RUN = "test/job/run1"
SITE = "site:test"
WHERE = "visit = 1000 AND detector = 0"


@dataclass
class JobWorld:
    """Everything a test needs to write job specs by hand."""

    root: Path
    survey: Survey
    qgraph: Path
    isr: uuid.UUID
    calibrate: uuid.UUID
    quanta: dict[uuid.UUID, Quantum]
    backbone: Backbone
    db_url: str
    site_root: Path

    @property
    def repo(self) -> Path:
        return self.survey.repo

    def inputs(self, quantum_id: uuid.UUID) -> list[FileSpec]:
        """The quantum's inputs the catalog knows (everything not made by this graph)."""
        ids = [str(ref.id) for refs in self.quanta[quantum_id].inputs.values() for ref in refs]
        known = self.backbone.catalog.files_by_dataset_ids(ids)
        return [file_spec(known[i]) for i in ids if i in known]

    def spec(self, job: str, quantum_ids: Iterable[uuid.UUID], **fields: Any) -> JobSpec:
        """A spec with this world's defaults: symlinks from the site, stage-out to it."""
        jobdir = self.root / "jobs" / job
        values: dict[str, Any] = {
            "run": RUN,
            "job": job,
            "qgraph": str(self.qgraph),
            "quantum_ids": [str(q) for q in quantum_ids],
            "butler_config": str(self.repo / "butler.yaml"),
            "workdir": str(jobdir / "work"),
            "report_path": str(jobdir / "report.json"),
            "site_endpoint": SITE,
            "site_root": str(self.site_root),
            "archive_endpoint": "archive",
            "archive_root": str(self.repo),
            "db_url": self.db_url,
            "engine_job_id": f"local-{job}",
        }
        values.update(fields)
        return JobSpec(**values)


def file_spec(info: Any) -> FileSpec:
    """A FileSpec from a catalog FileInfo (what the scheduler puts in job specs)."""
    return FileSpec(
        dataset_id=info.dataset_id,
        dataset_type=info.dataset_type,
        data_id=info.data_id or {},
        path=info.path,
        file_id=info.id,
        size_bytes=info.size_bytes,
        md5=info.md5,
    )


def build_graph(repo: Path, qgraph: Path) -> PredictedQuantumGraph:
    """Build and write the graph, register its dataset types, write its init outputs."""
    with Butler.from_config(str(repo), writeable=True, collections=[DEFAULTS], run=RUN) as butler:
        executor = SeparablePipelineExecutor(butler)
        pipeline = Pipeline.from_uri(f"{pipeline_path()}#isr,calibrate")
        builder = executor.make_quantum_graph_builder(pipeline, WHERE)
        components = builder.finish(attach_datastore_records=True)
        components.write(str(qgraph))
        graph = components.assemble()
        graph.pipeline_graph.register_dataset_types(butler)
    # As `pipetask pre-exec-init-qbb`: configs, packages and init outputs, no registry.
    with PredictedQuantumGraph.open(str(qgraph)) as reader:
        reader.read_init_quanta()
    init_graph = reader.finish()
    with init_graph.make_init_qbb(str(repo / "butler.yaml")) as qbb:
        init_graph.init_output_run(qbb)
    return graph


def make_world(root: Path) -> JobWorld:
    """Build the survey, graph, init outputs, backbone and site replicas under ``root``."""
    survey = build_survey(root / "survey", SurveyParams(visits=2, detectors=1, size=128, seed=5))
    qgraph = root / "graph.qg"
    build_graph(survey.repo, qgraph)
    graph = PredictedQuantumGraph.read_execution_quanta(str(qgraph))
    (isr,) = graph.quanta_by_task["isr"].values()
    (calibrate,) = graph.quanta_by_task["calibrate"].values()
    quanta = graph.build_execution_quanta([isr, calibrate])

    settings = load_settings(home=root / "home")
    backbone = Backbone.from_settings(settings)
    backbone.add_endpoint("archive", "archive", str(survey.repo))
    site_root = root / "site"
    backbone.add_endpoint(SITE, "site", str(site_root))
    register_butler(backbone, survey.repo, [DEFAULTS])
    world = JobWorld(
        root, survey, qgraph, isr, calibrate, quanta, backbone, settings.database_url(), site_root
    )
    needed = {f.dataset_id for q in (isr, calibrate) for f in world.inputs(q)}
    files = list(backbone.catalog.files_by_dataset_ids(sorted(needed)).values())
    replicate(backbone, files, SITE)
    return world
