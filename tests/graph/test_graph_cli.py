"""``skybatch workflow expand`` and ``skybatch workflow show``, through ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skybatch.cli.main import cli, main
from skybatch.cli.workflow import workflow
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.graph.render import to_dot, to_mermaid
from skybatch.graph.workflow import Workflow


@pytest.fixture(autouse=True)
def _workflow_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The group is registered in cli/main.py by its owner; do it here for the test only.
    monkeypatch.setitem(cli.commands, "workflow", workflow)


def _expand(survey: Survey, out: Path, *extra: str, query: str = "") -> int:
    return main(
        [
            "workflow",
            "expand",
            "--repo",
            str(survey.repo),
            "--pipeline",
            str(pipeline_path()),
            "--input",
            DEFAULTS,
            "--query",
            query,
            "--output-run",
            "u/cli/run",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def expanded(survey: Survey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "wf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cli.commands, "workflow", workflow)
        assert _expand(survey, out, "--cluster", "step1=isr,calibrate:visit,detector") == 0
    return out


def test_expand_writes_graph_and_workflow(expanded: Path) -> None:
    loaded = Workflow.load(expanded / "workflow.json")
    assert (expanded / "graph.qg").is_file()
    assert loaded.qgraph == str(expanded / "graph.qg")
    assert {job.label for job in loaded.jobs} == {"step1", "visitSummary", "coadd"}
    assert sorted(p.name for p in expanded.iterdir()) == ["graph.qg", "workflow.json"]


def test_show_prints_summary_and_draws(
    expanded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dot, mermaid = tmp_path / "jobs.dot", tmp_path / "jobs.mmd"
    args = ["--dot", str(dot), "--mermaid", str(mermaid)]
    assert main(["workflow", "show", str(expanded / "workflow.json"), *args]) == 0
    text = capsys.readouterr().out
    expected = ["u/cli/run", "isr", "step1", "coadd", "expansion:", "critical path:  2 jobs"]
    assert all(line in text for line in expected), text
    loaded = Workflow.load(expanded / "workflow.json")
    dot_text, mermaid_text = dot.read_text(), mermaid.read_text()
    assert dot_text.startswith("digraph") and mermaid_text.startswith("flowchart TD")
    for job in loaded.jobs:
        assert f'"{job.name}"' in dot_text
        assert f": {job.name}\n" in mermaid_text
    edges = sum(len(job.depends_on) for job in loaded.jobs)
    assert dot_text.count(" -> ") == edges and mermaid_text.count(" --> ") == edges


def test_show_json(expanded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "show", str(expanded / "workflow.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total_jobs"] == 14
    assert summary["jobs_per_label"]["step1"] == {
        "jobs": 4,
        "quanta": 8,
        "memory_mb": 2048,
        "cores": 1,
        "walltime_s": 3600,
    }
    assert summary["critical_path_jobs"] == 2  # step1, then coadd or visitSummary
    assert summary["critical_path_walltime_s"] == 2 * 3600


def test_large_graph_collapses_to_labels(expanded: Path) -> None:
    loaded = Workflow.load(expanded / "workflow.json")
    dot_text, mermaid_text = to_dot(loaded, max_jobs=5), to_mermaid(loaded, max_jobs=5)
    assert "step1\\n4 jobs" in dot_text and "coadd\\n8 jobs" in dot_text
    assert '"step1" -> "coadd"' in dot_text
    assert "step1<br/>4 jobs" in mermaid_text


@pytest.mark.parametrize(
    ("extra", "query", "message"),
    [
        (("--input", "no/such"), "", "unknown collection"),
        ((), "visit = = 1", "invalid data query"),
        ((), "visit = 424242", "matches nothing"),
        (("--pipeline", "missing.yaml"), "", "does not exist"),
        (("--cluster", "broken"), "", "invalid --cluster"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(
    survey: Survey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    query: str,
    message: str,
) -> None:
    out = tmp_path / "wf"
    assert _expand(survey, out, *extra, query=query) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_show_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "show", str(tmp_path / "none.json")]) == 2
    assert "cannot read workflow" in capsys.readouterr().err
