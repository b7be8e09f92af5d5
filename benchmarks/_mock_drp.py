"""A DRP-shaped repository and pipeline of pipe_base's mock tasks, for overhead benchmarks.

The geometry (visits, detectors, their sky regions, the skymap's patches) is the demo
survey's, without any pixels: only dimension records. The pipeline has the shape of a
data release production: two per-detector steps (``isr``, ``calibrate``), a per-visit
gather (``visitSummary``) and a per-patch coadd over every overlapping detector.
Every task is ``lsst.pipe.base.tests.mocks.DynamicTestPipelineTask``, which reads its
inputs and writes small JSON outputs, so what is measured is the harness, not science.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MOCK_TASK = "lsst.pipe.base.tests.mocks.DynamicTestPipelineTask"
INPUT_RUN = "bench/raw"

#: label -> (quantum dimensions, inputs as (name, dimensions, multiple), output name)
VISIT_DET = ["instrument", "visit", "detector"]
TASKS: dict[str, tuple[list[str], list[tuple[str, list[str], bool]], str]] = {
    "isr": (VISIT_DET, [("raw_mock", VISIT_DET, False)], "postISR_mock"),
    "calibrate": (VISIT_DET, [("postISR_mock", VISIT_DET, False)], "calexp_mock"),
    "visitSummary": (["instrument", "visit"], [("calexp_mock", VISIT_DET, True)], "summary_mock"),
    "coadd": (
        ["skymap", "tract", "patch", "band"],
        [("calexp_mock", VISIT_DET, True)],
        "coadd_mock",
    ),
}


def _config_block(
    dimensions: list[str], inputs: list[Any], output: str, out_dims: list[str]
) -> str:
    lines = [
        "from lsst.pipe.base.tests.mocks import DynamicConnectionConfig",
        f"config.dimensions = {dimensions!r}",
    ]
    for i, (name, dims, multiple) in enumerate(inputs):
        lines.append(
            f"config.inputs['in{i}'] = DynamicConnectionConfig("
            f"dataset_type_name={name!r}, dimensions={dims!r}, multiple={multiple!r})"
        )
    lines.append(
        f"config.outputs['out'] = DynamicConnectionConfig("
        f"dataset_type_name={output!r}, dimensions={out_dims!r})"
    )
    return "\n".join(lines)


def write_pipeline(path: Path) -> Path:
    """The mock DRP pipeline as a pipeline YAML file any pipetask or skybatch reads."""
    out = [
        "description: DRP-shaped pipeline of pipe_base mock tasks (skybatch benchmark)",
        "tasks:",
    ]
    for label, (dims, inputs, output) in TASKS.items():
        block = _config_block(dims, inputs, output, dims)
        out += [f"  {label}:", f"    class: {MOCK_TASK}", "    config:", "      python: |"]
        out += [f"        {line}" for line in block.splitlines()]
    path.write_text("\n".join(out) + "\n")
    return path


def build_repo(root: Path, visits: int, detectors: int) -> Path:
    """A Butler repository at ``root`` with the demo geometry and one mock raw per
    visit and detector in the RUN collection :data:`INPUT_RUN`."""
    from lsst.daf.butler import Butler, Config, DatasetRef, DatasetType
    from lsst.pipe.base.tests.mocks import MockDataset, MockStorageClass

    from skybatch.demo.params import SurveyParams, plan_survey
    from skybatch.demo.survey import REPO_CONFIG, insert_dimensions

    params = SurveyParams(visits=visits, detectors=detectors, size=256, seed=1)
    Butler.makeRepo(str(root), config=Config(REPO_CONFIG))
    with Butler.from_config(str(root), writeable=True) as butler:
        insert_dimensions(butler, params, plan_survey(params))
        storage = MockStorageClass.get_or_register_mock("StructuredDataDict").name
        raw = DatasetType("raw_mock", VISIT_DET, storage, universe=butler.dimensions)
        butler.registry.registerDatasetType(raw)
        butler.collections.register(INPUT_RUN)
        for data_id in butler.query_data_ids(VISIT_DET, with_dimension_records=True):
            ref = DatasetRef(raw, data_id, run=INPUT_RUN)
            butler.put(
                MockDataset(
                    dataset_id=ref.id,
                    dataset_type=raw.to_simple(),
                    data_id=dict(ref.dataId.mapping),
                    run=INPUT_RUN,
                ),
                ref,
            )
    return root
