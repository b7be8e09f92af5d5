"""A finishing run leaves pinned the site-cache inputs that other runs still running
read (groups of a campaign in flight together share calibrations and raws): the
inputs in use are those of the running runs' saved workflows."""

from __future__ import annotations

from pathlib import Path

from skybatch.db.state import open_state_db
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.spec import FileSpec
from skybatch.run.finish import inputs_in_use
from skybatch.run.models import RunRow, RunState
from skybatch.run.states import change_run_state
from skybatch.settings import load_settings


def _file(dataset_id: str) -> FileSpec:
    return FileSpec(dataset_id=dataset_id, dataset_type="raw", path=f"raw/{dataset_id}.fits")


def _run(tmp_path: Path, name: str, state: str, reads: list[str], writes: list[str]) -> RunRow:
    workdir = tmp_path / "runs" / name
    workdir.mkdir(parents=True)
    jobs = [
        JobNode(
            name="a",
            label="isr",
            quanta=["q1"],
            task_labels=["isr"],
            data_ids=[{}],
            inputs=[_file(d) for d in reads],
            outputs=[_file(d) for d in writes],
        ),
        JobNode(  # reads what job a writes: not an input of the run
            name="b",
            label="calibrate",
            quanta=["q2"],
            task_labels=["calibrate"],
            data_ids=[{}],
            inputs=[_file(d) for d in writes],
            depends_on=["a"],
        ),
    ]
    Workflow.of_jobs(name, jobs).save(workdir / "workflow.json")
    return RunRow(
        name=name,
        repo="/repo",
        pipeline="p.yaml",
        input_collections=[],
        data_query="",
        site="site:local",
        engine="local",
        workdir=str(workdir),
        state=state,
        options={},
        summary={},
    )


def test_inputs_of_other_running_runs_are_in_use_and_nothing_else(tmp_path: Path) -> None:
    sessions = open_state_db(load_settings(home=tmp_path / "home"))
    with sessions.begin() as session:
        session.add_all(
            [
                _run(tmp_path, "finishing", "running", ["calib", "raw1"], ["out1"]),
                _run(tmp_path, "other", "running", ["calib", "raw2"], ["out2"]),
                _run(tmp_path, "done", "succeeded", ["raw3"], ["out3"]),
            ]
        )
        # Running, but killed before its workflow was saved: reads nothing staged yet.
        early = _run(tmp_path, "early", "running", ["raw4"], [])
        Path(early.workdir, "workflow.json").unlink()
        session.add(early)
    # The other running run reads the shared calibration and its own raw; the ended
    # run's inputs and every run's own intermediates are not in use.
    assert inputs_in_use(sessions, "finishing") == {"calib", "raw2"}
    assert inputs_in_use(sessions, "other") == {"calib", "raw1"}
    with sessions.begin() as session:
        for row in session.query(RunRow).filter(RunRow.name == "other"):
            change_run_state(row, RunState.SUCCEEDED)
    assert inputs_in_use(sessions, "finishing") == set()
