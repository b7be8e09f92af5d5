"""``skybatch workflow``: expand a pipeline into a workflow, and look at workflows.

``skybatch run`` expands and runs in one go; these commands are for operators who
want to see what a pipeline and query turn into (jobs, files, resources) first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from skybatch.cli import values
from skybatch.errors import InputError

if TYPE_CHECKING:
    from skybatch.graph.workflow import ClusterRule, Workflow
    from skybatch.progress import ProgressFactory

__all__ = ["workflow"]


@click.group()
def workflow() -> None:
    """Expand pipelines into workflows (jobs, files, resources) and inspect them."""


@workflow.command("show")
@click.argument("workflow_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the job graph as Graphviz DOT to this file.",
)
@click.option(
    "--mermaid",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the job graph as a mermaid flowchart to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def show_cmd(workflow_file: Path, dot: Path | None, mermaid: Path | None, as_json: bool) -> None:
    """Summarize WORKFLOW_FILE (a workflow.json) and optionally draw its job graph.

    The summary lists quanta per task, jobs per label with their largest resource
    request, input and output file counts and the critical path. Pictures with more
    than 200 jobs show one node per job label.

    \b
    Example:
      skybatch workflow show out/workflow.json --dot jobs.dot --mermaid jobs.mmd
    """
    from skybatch.graph.render import format_summary, summarize, to_dot, to_mermaid
    from skybatch.graph.workflow import Workflow

    loaded = Workflow.load(workflow_file)
    summary = summarize(loaded)
    click.echo(summary.model_dump_json(indent=2) if as_json else format_summary(summary))
    for target, text in ((dot, to_dot), (mermaid, to_mermaid)):
        if target is not None:
            _write_text(target, text(loaded))
            if not as_json:
                click.echo(f"wrote {target}")


@workflow.command("expand")
@click.option(
    "--repo",
    required=True,
    type=values.REPOSITORY,
    help="Butler repository: its directory, its butler.yaml (path or file:// URI) or a "
    "repository index label.",
)
@click.option(
    "--pipeline", required=True, help="Pipeline YAML, optionally PATH#label1,label2 (a subset)."
)
@click.option(
    "--input", "inputs", required=True, multiple=True, help="Input collection (repeatable)."
)
@click.option("--query", default="", help='Butler data query, e.g. "visit = 12".')
@click.option("--output-run", required=True, help="RUN collection the outputs are predicted in.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for graph.qg and workflow.json (created; must not hold them yet).",
)
@click.option(
    "--cluster",
    "clusters",
    multiple=True,
    metavar="NAME=TASK,...[:DIM,...]",
    help="Put the quanta of these tasks that share these dimension values into one job "
    "(repeatable), e.g. step1=isr,calibrate:visit,detector.",
)
def expand_cmd(
    repo: Path,
    pipeline: str,
    inputs: tuple[str, ...],
    query: str,
    output_run: str,
    out_dir: Path,
    clusters: tuple[str, ...],
) -> None:
    """Expand a pipeline over a data query; write OUT/graph.qg and OUT/workflow.json.

    Nothing is written when the inputs are wrong or the query matches nothing.

    \b
    Example:
      skybatch workflow expand --repo demo-survey/repo --pipeline pipelines/demo_drp.yaml \\
          --input DemoCam/defaults --query "visit = 1000" --output-run u/me/try1 --out try1
    """
    from skybatch.graph.render import format_summary, summarize
    from skybatch.progress import rich_bars

    rules = [_parse_cluster(text) for text in clusters]
    graph_path, workflow_path = out_dir / "graph.qg", out_dir / "workflow.json"
    for path in (graph_path, workflow_path):
        if path.exists():
            raise InputError(
                f"{path} already exists",
                where="--out",
                hint="choose a new output directory, or remove the old files",
            )
    result = expand_to_directory(
        repo, pipeline, list(inputs), output_run, query, out_dir, rules, rich_bars()
    )
    click.echo(format_summary(summarize(result)))
    click.echo(f"wrote {graph_path} and {workflow_path}")


def expand_to_directory(
    repo: Path,
    pipeline: str,
    inputs: list[str],
    output_run: str,
    query: str,
    out_dir: Path,
    rules: list[ClusterRule],
    progress: ProgressFactory | None = None,
) -> Workflow:
    """Expand and build; keep ``graph.qg`` only if ``workflow.json`` is written too."""
    from skybatch.graph.build import build_workflow
    from skybatch.graph.expand import expand

    graph_path, workflow_path = out_dir / "graph.qg", out_dir / "workflow.json"
    butler_config = repo / "butler.yaml" if repo.is_dir() else repo
    expansion = expand(repo, pipeline, inputs, output_run, query, graph_path, progress)
    try:
        built = build_workflow(
            expansion,
            repo=repo,
            butler_config=butler_config,
            run=output_run,
            pipeline=pipeline,
            input_collections=inputs,
            where=query,
            expansion_s=expansion.expansion_s,
            cluster_rules=rules,
        )
        partial = workflow_path.with_name(".workflow.json.partial")
        built.save(partial)
        partial.replace(workflow_path)
    except BaseException:
        graph_path.unlink(missing_ok=True)
        raise
    return built


def _parse_cluster(text: str) -> ClusterRule:
    from pydantic import ValidationError

    from skybatch.graph.workflow import ClusterRule

    name, sep, rest = text.partition("=")
    tasks, _, dims = rest.partition(":")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if not sep or not name.strip() or not task_list:
        raise InputError(
            f"invalid --cluster {text!r}",
            where="--cluster",
            hint="write NAME=TASK,...[:DIM,...], e.g. step1=isr,calibrate:visit,detector",
        )
    try:
        return ClusterRule(
            name=name.strip(),
            tasks=task_list,
            dimensions=[d.strip() for d in dims.split(",") if d.strip()],
        )
    except ValidationError as exc:  # pragma: no cover - fields are plain strings
        raise InputError(f"invalid --cluster {text!r}: {exc}", where="--cluster") from None


def _write_text(path: Path, text: str) -> None:
    """Write under a temporary name and rename, so no half-written picture remains."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text)
        partial.replace(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}", where=str(path)) from None
