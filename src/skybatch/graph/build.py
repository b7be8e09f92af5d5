"""Workflow construction (seed step 9): quantum graph → jobs with files and resources.

Each job is a cluster of quanta (one quantum by default; a :class:`ClusterRule` puts
the quanta of some tasks that share data id values into one job). A job lists the
files it reads from outside itself (repository inputs with the datastore record's
path, outputs of other jobs and init-outputs with their predicted path) and the files
it writes, at the paths the repository's datastore file templates give them: the
file-naming policy of the campaign (seed step 2) is the Butler's own, so the paths
predicted here are the paths the job's quantum-backed butler writes. Two outputs that
would share a path are refused before anything runs.

The files come from the graph's own per-quantum models, with the file templates
compiled once per dataset type (:mod:`skybatch.graph.files`,
:mod:`skybatch.graph.templates`): a few microseconds per file. The reference way
(``fast=False``: pipe_base's execution quanta, a DatasetRef per dataset and the
datastore's FileTemplate.format) gives the same workflow, several times slower; the
tests compare the two.
"""

from __future__ import annotations

import heapq
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skybatch.errors import InputError
from skybatch.job.spec import FileSpec

from .expand import DatasetFiles, DatastorePaths, ExpansionResult
from .files import GraphFiles
from .workflow import ClusterRule, JobNode, ResourceRequest, Workflow

if TYPE_CHECKING:
    from lsst.daf.butler import DataCoordinate
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

    from skybatch.backbone.catalog import Catalog

__all__ = ["FAST_PATH", "build_workflow", "read_graph"]

#: Build workflows from the graph's models with compiled file templates
#: (:mod:`skybatch.graph.files`); False: from execution quanta and the datastore's
#: FileTemplate (the reference the fast path is tested against).
FAST_PATH = True

_log = logging.getLogger(__name__)

#: Short forms of dimension names in job names (``calibrate-visit1000-det0``).
_ABBREVIATIONS = {"detector": "det", "exposure": "exp", "physical_filter": "filter"}
#: Dimensions left out of job names: one value per repository or graph in practice.
_UNNAMED = frozenset({"instrument", "skymap"})
#: Dimensions in job names, most significant first; the others follow in their order.
_NAME_ORDER = ("tract", "patch", "visit", "exposure", "band", "physical_filter", "detector")


@dataclass
class _Job:
    name: str
    label: str
    quanta: list[uuid.UUID]


def build_workflow(
    source: PredictedQuantumGraph | ExpansionResult | Path,
    *,
    repo: str | Path,
    butler_config: str | Path,
    run: str,
    pipeline: str,
    input_collections: Sequence[str],
    where: str,
    expansion_s: float,
    qgraph_path: Path | None = None,
    cluster_rules: Sequence[ClusterRule] = (),
    resources: Mapping[str, ResourceRequest] | None = None,
    default_resources: ResourceRequest | None = None,
    catalog: Catalog | None = None,
    fast: bool | None = None,
) -> Workflow:
    """Turn a predicted quantum graph into a :class:`Workflow`.

    Args:
        source: The graph: an expansion result, a ``.qg`` file, or a graph object
            (then ``qgraph_path`` says where its file is).
        repo: Butler repository the graph was expanded from.
        butler_config: Its ``butler.yaml``; its datastore templates name the files.
        run: Output run (must be the graph's).
        pipeline, input_collections, where, expansion_s: Recorded in the workflow.
        qgraph_path: The graph file, when ``source`` is a graph object.
        cluster_rules: How to group quanta into jobs (default: one quantum per job).
        resources: Per-task resource requests; a job takes the maximum of its tasks.
        default_resources: Request of tasks not in ``resources``.
        catalog: Backbone catalog giving input files' ids, sizes and checksums.
        fast: Read datasets from the graph's own models and format file templates
            compiled per dataset type (:mod:`skybatch.graph.files`), or (False) build
            execution quanta and format with the datastore's FileTemplate; the
            workflow is the same. Default: :data:`FAST_PATH`.

    Raises:
        InputError: Invalid cluster rules, a clustering with a cycle between jobs,
            two outputs predicted at one path, or a run that is not the graph's.
    """
    from skybatch.heap import collection_paused

    with collection_paused():  # a workflow is as long-lived as its graph
        return _build_workflow(
            source,
            repo=repo,
            butler_config=butler_config,
            run=run,
            pipeline=pipeline,
            input_collections=input_collections,
            where=where,
            expansion_s=expansion_s,
            qgraph_path=qgraph_path,
            cluster_rules=cluster_rules,
            resources=resources,
            default_resources=default_resources,
            catalog=catalog,
            fast=fast,
        )


def _build_workflow(
    source: PredictedQuantumGraph | ExpansionResult | Path,
    *,
    repo: str | Path,
    butler_config: str | Path,
    run: str,
    pipeline: str,
    input_collections: Sequence[str],
    where: str,
    expansion_s: float,
    qgraph_path: Path | None,
    cluster_rules: Sequence[ClusterRule],
    resources: Mapping[str, ResourceRequest] | None,
    default_resources: ResourceRequest | None,
    catalog: Catalog | None,
    fast: bool | None,
) -> Workflow:
    graph, qgraph_path = _graph_and_path(source, qgraph_path)
    output_run = graph.header.output_run
    if output_run != run:
        raise InputError(
            f"quantum graph {qgraph_path} predicts outputs in run {output_run!r}, not {run!r}",
            where=str(qgraph_path),
            hint="expand the pipeline again with this output run",
        )
    table = _Quanta(graph)
    use_fast = FAST_PATH if fast is None else fast
    fast_ok = use_fast and GraphFiles.eligible(graph, table.nodes)
    execution = None if fast_ok else graph.build_execution_quanta()
    order = _topological_order(graph, table)
    jobs = _make_jobs(graph, table, order, cluster_rules)
    job_of = {q: job.name for job in jobs for q in job.quanta}
    depends = _job_dependencies(table, job_of, cluster_rules)
    paths = DatastorePaths(butler_config, graph.pipeline_graph.universe)
    files: DatasetFiles | GraphFiles
    if execution is None:
        files = GraphFiles(graph, paths, table.nodes)
    else:
        files = DatasetFiles(graph, paths, execution)
    files.check_unique_outputs()
    resources = resources or {}
    _warn_unknown_labels(graph, resources.keys(), "resources")
    default = default_resources or ResourceRequest()
    nodes: list[JobNode] = []
    requested: dict[tuple[str, ...], ResourceRequest] = {}  # by task labels (frozen)
    for job in jobs:
        labels = list(dict.fromkeys(table.label[q] for q in job.quanta))
        request = requested.get(tuple(labels))
        if request is None:
            requests = [resources.get(label, default) for label in labels]
            request = requested[tuple(labels)] = ResourceRequest(
                memory_mb=max(r.memory_mb for r in requests),
                cores=max(r.cores for r in requests),
                walltime_s=max(r.walltime_s for r in requests),
            )
        nodes.append(
            JobNode(
                name=job.name,
                label=job.label,
                quanta=[str(q) for q in job.quanta],
                task_labels=labels,
                data_ids=[table.plain_data_id(q) for q in job.quanta],
                inputs=files.job_inputs(job.quanta),
                outputs=files.job_outputs(job.quanta),
                resources=request,
                depends_on=sorted(depends[job.name]),
            )
        )
    if catalog is not None:
        nodes = _with_catalog_info(nodes, catalog)
    return Workflow(
        run=run,
        repo=str(repo),
        butler_config=str(butler_config),
        pipeline=pipeline,
        input_collections=list(input_collections),
        data_query=where,
        qgraph=str(qgraph_path),
        created=datetime.now(UTC),
        quanta_per_task={label: len(q) for label, q in graph.quanta_by_task.items()},
        expansion_s=expansion_s,
        jobs=nodes,
    )


def read_graph(qgraph_path: Path) -> PredictedQuantumGraph:
    """Read a whole ``.qg`` file (all quanta, init quanta and dimension records)."""
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

    try:
        with PredictedQuantumGraph.open(str(qgraph_path)) as reader:
            reader.read_all()
            return reader.finish()
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cannot read quantum graph {qgraph_path}: {exc}",
            where=str(qgraph_path),
            hint="expand the pipeline again",
        ) from None


def _graph_and_path(
    source: PredictedQuantumGraph | ExpansionResult | Path, qgraph_path: Path | None
) -> tuple[PredictedQuantumGraph, Path]:
    if isinstance(source, ExpansionResult):
        return source.graph, source.qgraph_path
    if isinstance(source, Path):
        return read_graph(source), source
    if qgraph_path is None:
        raise TypeError("qgraph_path is required when a graph object is given")
    return source, qgraph_path


class _Quanta:
    """What the job structure needs of each quantum, read from one view of the graph
    (``graph.quantum_only_xgraph`` makes a new view at each access)."""

    def __init__(self, graph: PredictedQuantumGraph) -> None:
        self.xgraph = graph.quantum_only_xgraph
        self.nodes: list[uuid.UUID] = list(self.xgraph)  # the graph's own order
        self.label: dict[uuid.UUID, str] = {}
        self.data_id: dict[uuid.UUID, DataCoordinate] = {}
        #: ``data_id.required`` as (dimension, value) pairs.
        self.required: dict[uuid.UUID, list[tuple[str, Any]]] = {}
        index = {q: i for i, q in enumerate(self.nodes)}
        #: Successors of each quantum by index, in the graph's edge order.
        succ = self.xgraph.succ
        self.successors: list[list[int]] = [[index[c] for c in succ[q]] for q in self.nodes]
        names: dict[Any, tuple[str, ...]] = {}
        for q, node in self.xgraph.nodes(data=True):
            self.label[q] = str(node["task_label"])
            data_id = self.data_id[q] = node["data_id"]
            group = data_id.dimensions
            keys = names.get(group)
            if keys is None:
                keys = names[group] = tuple(data_id.required.keys())
            self.required[q] = list(zip(keys, data_id.required_values, strict=True))

    def edges(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """The graph's edges, in its order (``xgraph.edges``)."""
        nodes = self.nodes
        return [(nodes[i], nodes[c]) for i, after in enumerate(self.successors) for c in after]

    def plain_data_id(self, q: uuid.UUID) -> dict[str, Any]:
        """:func:`skybatch.graph.expand.plain_data_id` of the quantum's required data id."""
        return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in self.required[q]}


def _topological_order(graph: PredictedQuantumGraph, table: _Quanta) -> list[uuid.UUID]:
    """Quanta in a deterministic topological order (pipeline order, then data id).

    The order of ``networkx.lexicographical_topological_sort`` with this key (ties,
    which cannot happen, broken by the graph's node order), without its views.
    """
    task_index = {label: i for i, label in enumerate(graph.pipeline_graph.tasks)}
    nodes = table.nodes
    keys = [f"{task_index[table.label[q]]:06d} {sorted(table.required[q])}" for q in nodes]
    waiting = [0] * len(nodes)
    for children in table.successors:
        for c in children:
            waiting[c] += 1
    ready = [(keys[i], i) for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[uuid.UUID] = []
    while ready:
        _, i = heapq.heappop(ready)
        for c in table.successors[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (keys[c], c))
        order.append(nodes[i])
    if len(order) != len(nodes):
        import networkx

        raise networkx.NetworkXUnfeasible("Graph contains a cycle")
    return order


def _make_jobs(
    graph: PredictedQuantumGraph,
    table: _Quanta,
    order: list[uuid.UUID],
    rules: Sequence[ClusterRule],
) -> list[_Job]:
    """Group quanta into jobs; jobs come in the order of their first quantum."""
    rule_of = _rule_of_task(graph, rules)
    keys: dict[uuid.UUID, tuple[str, tuple[Any, ...]]] = {}
    for rule in rules:
        members = [q for q in order if rule_of.get(table.label[q]) is rule]
        for q, values in _rule_values(table, rule, members).items():
            keys[q] = (rule.name, values)
    groups: dict[tuple[str, tuple[Any, ...]], _Job] = {}
    names = _JobNames()
    for q in order:
        if q in keys:
            rule_name, values = keys[q]
            rule = next(r for r in rules if r.name == rule_name)
            name = _job_name(rule.name, dict(zip(rule.dimensions, values, strict=True)))
            key = keys[q]
        else:
            label = table.label[q]
            required = table.required[q]
            name = names(label, required)
            key = (label, tuple(v for _, v in required))
        if key not in groups:
            groups[key] = _Job(name, key[0], [])
        groups[key].quanta.append(q)
    jobs = list(groups.values())
    seen: dict[str, int] = defaultdict(int)
    for job in jobs:  # names that collide (e.g. two instruments) get a suffix
        seen[job.name] += 1
        if seen[job.name] > 1:
            job.name = f"{job.name}-{seen[job.name]}"
    return jobs


def _rule_of_task(
    graph: PredictedQuantumGraph, rules: Sequence[ClusterRule]
) -> dict[str, ClusterRule]:
    universe = graph.pipeline_graph.universe
    rule_of: dict[str, ClusterRule] = {}
    names: set[str] = set()
    for rule in rules:
        where = f"cluster rule {rule.name!r}"
        if rule.name in names or rule.name in graph.pipeline_graph.tasks:
            raise InputError(
                f"cluster rule name {rule.name!r} is used twice or is a task label",
                where=where,
                hint="give each cluster rule its own name",
            )
        names.add(rule.name)
        unknown = [d for d in rule.dimensions if d not in universe.getStaticDimensions().names]
        if unknown:
            raise InputError(
                f"cluster rule {rule.name!r} names unknown dimensions {unknown}",
                where=where,
                hint="use Butler dimension names such as visit, detector, tract, patch",
            )
        _warn_unknown_labels(graph, rule.tasks, where)
        for task in rule.tasks:
            if task in rule_of:
                raise InputError(
                    f"task {task!r} is in cluster rules {rule_of[task].name!r} and {rule.name!r}",
                    where=where,
                    hint="put each task in at most one cluster rule",
                )
            if task in graph.pipeline_graph.tasks:
                rule_of[task] = rule
    return rule_of


def _rule_values(
    table: _Quanta, rule: ClusterRule, members: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Any, ...]]:
    """The rule's dimension values of each member quantum.

    A quantum without one of the dimensions (``isr`` has an exposure, not a visit)
    takes the value from its neighbours among the rule's quanta (the ``calibrate``
    quantum it feeds), which must agree.
    """
    xgraph = table.xgraph
    member_set = set(members)
    values: dict[uuid.UUID, dict[str, Any]] = {}
    for q in members:
        full = table.data_id[q].mapping
        values[q] = {d: full[d] for d in rule.dimensions if d in full}
    changed = True
    while changed:
        changed = False
        for q in members:
            for dim in rule.dimensions:
                if dim in values[q]:
                    continue
                neighbours = (set(xgraph.predecessors(q)) | set(xgraph.successors(q))) & member_set
                found = {values[n][dim] for n in neighbours if dim in values[n]}
                if len(found) > 1:
                    raise InputError(
                        f"cluster rule {rule.name!r}: quantum {table.label[q]} "
                        f"{dict(table.data_id[q].required)} has no {dim!r} and its "
                        f"neighbours disagree ({sorted(found)})",
                        where=f"cluster rule {rule.name!r}",
                        hint="cluster on dimensions every task of the rule has",
                    )
                if found:
                    values[q][dim] = found.pop()
                    changed = True
    result: dict[uuid.UUID, tuple[Any, ...]] = {}
    for q in members:
        missing = [d for d in rule.dimensions if d not in values[q]]
        if missing:
            raise InputError(
                f"cluster rule {rule.name!r}: quantum {table.label[q]} "
                f"{dict(table.data_id[q].required)} has no value for {missing}",
                where=f"cluster rule {rule.name!r}",
                hint="cluster on dimensions every task of the rule has or shares with a "
                "neighbouring task of the rule",
            )
        result[q] = tuple(values[q][d] for d in rule.dimensions)
    return result


class _JobNames:
    """:func:`_job_name` of quanta, each dimension's part of a name made once."""

    def __init__(self) -> None:
        self._rank = {k: i for i, k in enumerate(_NAME_ORDER)}
        self._orders: dict[tuple[str, ...], list[int]] = {}
        self._parts: dict[tuple[str, type, Any], str | None] = {}

    def __call__(self, prefix: str, required: list[tuple[str, Any]]) -> str:
        keys = tuple(k for k, _ in required)
        order = self._orders.get(keys)
        if order is None:  # as _job_name sorts the keys (a stable sort)
            order = sorted(range(len(keys)), key=lambda i: self._rank.get(keys[i], len(self._rank)))
            self._orders[keys] = order
        parts = [prefix]
        for i in order:
            key, value = required[i]
            memo = (key, value.__class__, value)
            part = self._parts.get(memo, "")
            if part == "":
                part = self._parts[memo] = _name_part(key, value)
            if part is not None:
                parts.append(part)
        return "-".join(parts)


def _name_part(key: str, value: Any) -> str | None:
    if key in _UNNAMED:
        return None
    short = _ABBREVIATIONS.get(key, key)
    text = f"{short}{value}" if isinstance(value, int) else f"{short}_{value}"
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)


def _job_name(prefix: str, data_id: Mapping[str, Any]) -> str:
    parts = [prefix]
    rank = {k: i for i, k in enumerate(_NAME_ORDER)}
    for key in sorted(data_id, key=lambda k: rank.get(k, len(rank))):
        value = data_id[key]
        if key in _UNNAMED:
            continue
        short = _ABBREVIATIONS.get(key, key)
        text = f"{short}{value}" if isinstance(value, int) else f"{short}_{value}"
        parts.append(re.sub(r"[^A-Za-z0-9_.]+", "_", text))
    return "-".join(parts)


def _job_dependencies(
    table: _Quanta, job_of: Mapping[uuid.UUID, str], rules: Sequence[ClusterRule]
) -> dict[str, set[str]]:
    """Job-level edges from quantum edges; refuse clusterings that make a cycle."""
    depends: dict[str, set[str]] = {name: set() for name in job_of.values()}
    edges = [(job_of[a], job_of[b]) for a, b in table.edges()]
    for a, b in edges:
        if a != b:
            depends[b].add(a)
    if not _has_cycle(depends):
        return depends
    import networkx

    jobs = networkx.DiGraph()  # as before, for the same cycle in the message
    jobs.add_nodes_from(job_of.values())
    jobs.add_edges_from((a, b) for a, b in edges if a != b)
    cycle = networkx.find_cycle(jobs)
    path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
    raise InputError(
        f"the cluster rules make a dependency cycle between jobs: {path}",
        where=f"cluster rules {[r.name for r in rules]}",
        hint="a job must not need the output of a job that needs its own output; "
        "put the tasks in between into the same cluster, or cluster on more dimensions",
    )


def _has_cycle(depends: Mapping[str, set[str]]) -> bool:
    """Whether the graph (each node's predecessors) has a cycle (Kahn's algorithm)."""
    waiting = {name: len(parents) for name, parents in depends.items()}
    children: dict[str, list[str]] = defaultdict(list)
    for name, parents in depends.items():
        for parent in parents:
            children[parent].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    done = 0
    while ready:
        name = ready.pop()
        done += 1
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return done != len(waiting)


def _warn_unknown_labels(graph: PredictedQuantumGraph, labels: Iterable[str], where: str) -> None:
    # A campaign-wide setting may name tasks of other steps; not an error, but say so.
    unknown = sorted(set(labels) - set(graph.pipeline_graph.tasks))
    if unknown:
        _log.info("%s names tasks not in this pipeline: %s", where, ", ".join(unknown))


def _with_catalog_info(nodes: list[JobNode], catalog: Catalog) -> list[JobNode]:
    """Fill in backbone file ids, sizes and checksums of registered input files."""
    specs = [spec for node in nodes for spec in node.inputs]
    by_id = catalog.files_by_dataset_ids(sorted({s.dataset_id for s in specs}))
    misses = sorted(
        {s.path for s in specs if getattr(by_id.get(s.dataset_id), "path", None) != s.path}
    )
    by_path = catalog.files_by_paths(misses) if misses else {}
    out: list[JobNode] = []
    for node in nodes:
        inputs: list[FileSpec] = []
        for spec in node.inputs:
            info = by_id.get(spec.dataset_id)
            if info is None or info.path != spec.path:
                info = by_path.get(spec.path)
            if info is not None:
                spec = spec.model_copy(
                    update={"file_id": info.id, "size_bytes": info.size_bytes, "md5": info.md5}
                )
            inputs.append(spec)
        out.append(node.model_copy(update={"inputs": inputs}))
    return out
