"""Summaries and pictures of a workflow (``skybatch workflow show``).

Operators look at a workflow before they spend an allocation on it: how many jobs of
each kind, how many files go in and out, what resources are asked for and how long
the longest chain of dependent jobs is. The pictures are DOT (Graphviz) and mermaid
text; above :data:`MAX_JOBS_DRAWN` jobs a drawing of every job is unreadable, so the
graph collapses to one node per job label with counts on nodes and edges.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from .workflow import JobNode, Workflow

__all__ = [
    "MAX_JOBS_DRAWN",
    "LabelSummary",
    "WorkflowSummary",
    "format_summary",
    "summarize",
    "to_dot",
    "to_mermaid",
]

#: Above this many jobs, pictures show one node per job label.
MAX_JOBS_DRAWN = 200


class LabelSummary(BaseModel):
    """Jobs of one label (task or cluster rule) and the largest request among them."""

    jobs: int
    quanta: int
    memory_mb: int
    cores: int
    walltime_s: int


class WorkflowSummary(BaseModel):
    """What ``skybatch workflow show`` prints (also as JSON with ``--json``)."""

    run: str
    pipeline: str
    data_query: str
    qgraph: str
    expansion_s: float
    quanta_per_task: dict[str, int]
    total_quanta: int
    total_jobs: int
    jobs_per_label: dict[str, LabelSummary]
    input_files: int  # job input files, counted once per job that reads them
    external_inputs: int  # distinct files no job of the workflow produces
    output_files: int
    critical_path_jobs: int  # jobs on the longest dependency chain
    critical_path_walltime_s: int  # requested walltime summed along the worst chain


def summarize(workflow: Workflow) -> WorkflowSummary:
    """Count jobs, files and requests, and find the critical path."""
    per_label: dict[str, list[JobNode]] = defaultdict(list)
    for job in workflow.jobs:
        per_label[job.label].append(job)
    produced = {spec.dataset_id for job in workflow.jobs for spec in job.outputs}
    external = {
        (spec.dataset_id, spec.path)
        for job in workflow.jobs
        for spec in job.inputs
        if spec.dataset_id not in produced
    }
    longest_jobs, longest_walltime = _critical_path(workflow.jobs)
    return WorkflowSummary(
        run=workflow.run,
        pipeline=workflow.pipeline,
        data_query=workflow.data_query,
        qgraph=workflow.qgraph,
        expansion_s=workflow.expansion_s,
        quanta_per_task=dict(workflow.quanta_per_task),
        total_quanta=sum(workflow.quanta_per_task.values()),
        total_jobs=len(workflow.jobs),
        jobs_per_label={
            label: LabelSummary(
                jobs=len(jobs),
                quanta=sum(len(j.quanta) for j in jobs),
                memory_mb=max(j.resources.memory_mb for j in jobs),
                cores=max(j.resources.cores for j in jobs),
                walltime_s=max(j.resources.walltime_s for j in jobs),
            )
            for label, jobs in per_label.items()
        },
        input_files=sum(len(j.inputs) for j in workflow.jobs),
        external_inputs=len(external),
        output_files=sum(len(j.outputs) for j in workflow.jobs),
        critical_path_jobs=longest_jobs,
        critical_path_walltime_s=longest_walltime,
    )


def _critical_path(jobs: list[JobNode]) -> tuple[int, int]:
    """(jobs on the longest chain, largest walltime sum along a chain)."""
    by_name = {job.name: job for job in jobs}
    depth: dict[str, tuple[int, int]] = {}
    for name in _topological(jobs):
        job = by_name[name]
        parents = [depth[p] for p in job.depends_on if p in depth]
        depth[name] = (
            1 + max((p[0] for p in parents), default=0),
            job.resources.walltime_s + max((p[1] for p in parents), default=0),
        )
    return (
        max((d[0] for d in depth.values()), default=0),
        max((d[1] for d in depth.values()), default=0),
    )


def _topological(jobs: list[JobNode]) -> list[str]:
    """Job names, each after the jobs it depends on (Kahn's algorithm)."""
    waiting = {job.name: set(job.depends_on) for job in jobs}
    children: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        for parent in job.depends_on:
            children[parent].append(job.name)
    ready = [name for name, parents in waiting.items() if not parents]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in children[name]:
            waiting[child].discard(name)
            if not waiting[child]:
                ready.append(child)
    return order


def format_summary(summary: WorkflowSummary) -> str:
    """The summary as aligned plain text."""
    lines = [
        f"run:            {summary.run}",
        f"pipeline:       {summary.pipeline}",
        f"data query:     {summary.data_query or '(none)'}",
        f"quantum graph:  {summary.qgraph}",
        f"expansion:      {summary.expansion_s:.2f} s",
        f"quanta:         {summary.total_quanta}",
    ]
    lines += [f"  {label:<20} {n:>8}" for label, n in summary.quanta_per_task.items()]
    lines.append(f"jobs:           {summary.total_jobs}")
    lines.append(
        f"  {'label':<20} {'jobs':>8} {'quanta':>8} {'memory_mb':>10} {'cores':>6} "
        f"{'walltime_s':>11}"
    )
    for label, s in summary.jobs_per_label.items():
        lines.append(
            f"  {label:<20} {s.jobs:>8} {s.quanta:>8} {s.memory_mb:>10} {s.cores:>6} "
            f"{s.walltime_s:>11}"
        )
    lines += [
        f"input files:    {summary.input_files} "
        f"({summary.external_inputs} distinct from outside the workflow)",
        f"output files:   {summary.output_files}",
        f"critical path:  {summary.critical_path_jobs} jobs, "
        f"{summary.critical_path_walltime_s} s requested walltime",
    ]
    return "\n".join(lines)


def _describe(job: JobNode) -> str:
    """The data id a job works on: its quantum's, or its cluster key from the name."""
    if len(job.quanta) > 1:
        key = job.name.removeprefix(f"{job.label}-") if job.name != job.label else "all"
        return f"{key} ({len(job.quanta)} quanta)"
    data_id = job.data_ids[0] if job.data_ids else {}
    return " ".join(f"{k}={v}" for k, v in data_id.items() if k not in ("instrument", "skymap"))


def _label_graph(workflow: Workflow) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    label_of = {job.name: job.label for job in workflow.jobs}
    nodes = Counter(job.label for job in workflow.jobs)
    edges: Counter[tuple[str, str]] = Counter(
        (label_of[parent], job.label)
        for job in workflow.jobs
        for parent in job.depends_on
        if parent in label_of
    )
    return nodes, edges


def _drawn(
    workflow: Workflow, max_jobs: int
) -> tuple[Mapping[str, str], Iterable[tuple[str, str, str]]]:
    """Nodes (id → text) and edges (from, to, text): per job, or per label if too many."""
    if len(workflow.jobs) <= max_jobs:
        nodes = {job.name: f"{job.label}\n{_describe(job)}".strip() for job in workflow.jobs}
        edges = [(p, job.name, "") for job in workflow.jobs for p in job.depends_on]
        return nodes, edges
    counts, label_edges = _label_graph(workflow)
    nodes = {label: f"{label}\n{n} jobs" for label, n in counts.items()}
    return nodes, [(a, b, str(n)) for (a, b), n in label_edges.items()]


def to_dot(workflow: Workflow, max_jobs: int = MAX_JOBS_DRAWN) -> str:
    """The job graph in Graphviz DOT."""
    nodes, edges = _drawn(workflow, max_jobs)

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"digraph {quote(workflow.run)} {{", "  rankdir=TB;", "  node [shape=box];"]
    lines += [f"  {quote(name)} [label={quote(text)}];" for name, text in nodes.items()]
    for a, b, text in edges:
        attrs = f" [label={quote(text)}]" if text else ""
        lines.append(f"  {quote(a)} -> {quote(b)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(workflow: Workflow, max_jobs: int = MAX_JOBS_DRAWN) -> str:
    """The job graph as a mermaid flowchart (node ids are generated; names are labels)."""
    nodes, edges = _drawn(workflow, max_jobs)
    ids = {name: f"n{i}" for i, name in enumerate(nodes)}

    def text(value: str) -> str:
        return '"' + value.replace('"', "#quot;").replace("\n", "<br/>") + '"'

    lines = ["flowchart TD"]
    for name, label in nodes.items():  # the comment keeps the job name findable
        lines += [f"  %% {ids[name]}: {name}", f"  {ids[name]}[{text(label)}]"]
    for a, b, label in edges:
        arrow = f"-->|{text(label)}|" if label else "-->"
        lines.append(f"  {ids[a]} {arrow} {ids[b]}")
    return "\n".join(lines) + "\n"
