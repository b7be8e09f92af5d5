"""The file-naming policy is honoured: predicted paths are the paths a run writes.

The expanded graph is executed with the reference executor (``pipetask run -g``, into
the graph's own output run); every file it writes must be where the workflow said.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from lsst.daf.butler import Butler

from skybatch.demo.survey import Survey
from skybatch.graph.build import build_workflow
from skybatch.graph.expand import DatastorePaths, ExpansionResult
from skybatch.graph.workflow import ClusterRule, Workflow

pytestmark = pytest.mark.slow

PIPETASK = "import sys; from lsst.ctrl.mpexec.cli.pipetask import main; sys.exit(main())"


@pytest.fixture(scope="module")
def written(survey: Survey, expansion: ExpansionResult) -> dict[str, str]:
    """Execute the graph; return the written datasets' paths by dataset id."""
    command = [sys.executable, "-c", PIPETASK, "run", "-b", str(survey.repo)]
    command += ["-g", str(expansion.qgraph_path), "--register-dataset-types"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out: dict[str, str] = {}
    with Butler.from_config(str(survey.repo)) as butler:
        (root,) = butler.get_datastore_roots().values()
        assert root is not None
        for ref in butler.query_all_datasets(expansion.output_run, find_first=False):
            relative = butler.getURI(ref).relative_to(root)
            assert relative is not None
            out[str(ref.id)] = relative
    return out


@pytest.mark.parametrize("rules", [[], [ClusterRule(name="s", tasks=["isr", "calibrate"])]])
def test_predicted_paths_are_written_paths(
    written: dict[str, str],
    expansion: ExpansionResult,
    build_kwargs: dict[str, Any],
    rules: list[ClusterRule],
) -> None:
    workflow: Workflow = build_workflow(expansion, cluster_rules=rules, **build_kwargs)
    predicted = {spec.dataset_id: spec.path for job in workflow.jobs for spec in job.outputs}
    assert {k: written[k] for k in predicted} == predicted
    by_type = {spec.dataset_type for job in workflow.jobs for spec in job.outputs}
    assert {"calexp", "src", "postISRCCD", "deepCoadd", "isr_metadata", "isr_log"} <= by_type
    # Inputs passed between jobs are read where the producing job wrote them.
    for job in workflow.jobs:
        for spec in job.inputs:
            if spec.dataset_id in written:
                assert spec.path == written[spec.dataset_id]


def test_init_outputs_predicted_too(
    written: dict[str, str], expansion: ExpansionResult, survey: Survey
) -> None:
    """Configs and package versions (written by the run's init step) follow the policy."""
    graph = expansion.graph
    paths = DatastorePaths(survey.repo / "butler.yaml", graph.pipeline_graph.universe)
    refs = [
        ref
        for label in [*graph.pipeline_graph.tasks, ""]
        for ref in graph.get_init_outputs(label).values()
    ]
    assert len(refs) == 5
    for ref in refs:
        ((component, path),) = paths.predict(ref)
        assert component is None
        assert written[str(ref.id)] == path


def test_everything_written_was_predicted(
    written: dict[str, str], expansion: ExpansionResult, build_kwargs: dict[str, Any]
) -> None:
    workflow = build_workflow(expansion, **build_kwargs)
    predicted = {spec.dataset_id for job in workflow.jobs for spec in job.outputs}
    init = {
        str(ref.id)
        for label in [*expansion.graph.pipeline_graph.tasks, ""]
        for ref in expansion.graph.get_init_outputs(label).values()
    }
    assert set(written) == predicted | init
