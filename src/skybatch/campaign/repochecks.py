"""Seed step 1 (campaign config): checks of a campaign against its Butler repository.

``campaign validate`` has the repository, so what the manager would otherwise find
only when it expands a step is checked up front, reading the registry and never
writing to it:

- the input collections and the calibration collection exist;
- every identifier of the campaign's and the steps' data queries is a dimension (or
  ``dimension.field``) of the repository's dimension universe, or a dataset field
  (``ingest_date``, ``DATASET_TYPE.field`` of a registered dataset type);
- every column that a step's ``select.where`` names is a column of the table it
  selects on, when the task that writes that table says which columns it writes: a
  task class may declare ``output_columns = {"connection": ("col", ...)}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import checks
from .config import Campaign

__all__ = ["query_identifiers", "repository_problems"]

#: Query identifiers that name a dataset's fields rather than a dimension.
_DATASET_FIELDS = frozenset({"ingest_date", "timespan", "run", "collection", "dataset_id"})

Path_ = tuple[str | int, ...]


def repository_problems(campaign: Campaign) -> Iterator[tuple[Path_, checks.Invalid]]:
    """Every problem of ``campaign`` that its repository shows, with the field's path."""
    from lsst.daf.butler import Butler

    try:
        butler = Butler.from_config(str(campaign.repo), writeable=False)
    except Exception as exc:  # the registry's errors have no common base
        yield (
            ("repo",),
            checks.Invalid(
                f"cannot open the Butler repository {campaign.repo}: {_first_line(exc)}",
                "check the repository (`butler query-collections REPO` opens it the same way)",
            ),
        )
        return
    with butler:
        yield from _collection_problems(butler, campaign)
        yield from _query_problems(butler, campaign)
        yield from _select_problems(campaign)


def _collection_problems(butler: Any, campaign: Campaign) -> Iterator[tuple[Path_, checks.Invalid]]:
    from lsst.daf.butler import CollectionType, MissingCollectionError

    wanted: list[tuple[Path_, str, str]] = [
        (("inputs", i), name, "input") for i, name in enumerate(campaign.inputs)
    ]
    if campaign.calibration is not None:
        wanted.append((("calibration", "collection"), campaign.calibration.collection, "calib"))
    known: list[str] | None = None
    for path, name, what in wanted:
        try:
            info = butler.collections.get_info(name)
        except MissingCollectionError:
            if known is None:
                known = sorted(butler.collections.query("*"))
            yield (
                path,
                checks.Invalid(
                    f"the repository has no collection {name!r}",
                    f"{checks.suggest(name, known)}use one of its collections: "
                    + (checks.listing(known) or "(none: ingest the data first)"),
                ),
            )
            continue
        if what == "calib" and info.type not in (
            CollectionType.CALIBRATION,
            CollectionType.CHAINED,
        ):
            yield (
                path,
                checks.Invalid(
                    f"collection {name!r} is a {info.type.name} collection, not a CALIBRATION one",
                    "give the CALIBRATION collection (or a chain holding it), "
                    "e.g. INSTRUMENT/calib",
                ),
            )


def _query_problems(butler: Any, campaign: Campaign) -> Iterator[tuple[Path_, checks.Invalid]]:
    universe = butler.dimensions
    queries: list[tuple[Path_, str]] = [(("query",), campaign.query)]
    queries += [(("steps", i, "query"), step.query) for i, step in enumerate(campaign.steps)]
    dataset_types: set[str] | None = None
    elements = {str(name) for name in universe.getStaticElements().names}
    for path, query in queries:
        if not query.strip():
            continue
        for identifier in query_identifiers(query):
            head, _, rest = identifier.partition(".")
            field = rest.partition(".")[0]
            if head in elements:
                fields = set(universe[head].schema.names)
                if field and field not in fields:
                    yield (
                        path,
                        checks.Invalid(
                            f"dimension {head!r} has no field {field!r} (in {identifier!r})",
                            f"{checks.suggest(field, sorted(fields))}fields of {head}: "
                            + checks.listing(sorted(fields), limit=20),
                        ),
                    )
                continue
            if not rest and head in _DATASET_FIELDS:
                continue
            if rest:
                if dataset_types is None:
                    dataset_types = {t.name for t in butler.registry.queryDatasetTypes()}
                if head in dataset_types:
                    continue
            dimensions = sorted(str(n) for n in universe.getStaticDimensions().names)
            yield (
                path,
                checks.Invalid(
                    f"unknown dimension {head!r} in the data query"
                    + (f" (in {identifier!r})" if rest else ""),
                    f"{checks.suggest(head, dimensions)}use a dimension of the repository: "
                    + checks.listing(dimensions, limit=20),
                ),
            )


def query_identifiers(query: str) -> list[str]:
    """The identifiers (``visit``, ``visit.day_obs``) of a Butler query, in order, once."""
    from lsst.daf.butler.queries.expressions.parser import exprTree, parse_expression

    tree = parse_expression(query)
    found: dict[str, None] = {}
    seen: set[int] = set()
    todo: list[Any] = [tree]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, exprTree.Identifier):
            found.setdefault(node.name, None)
            continue
        children: Iterable[Any] = vars(node).values() if hasattr(node, "__dict__") else ()
        for child in reversed(list(children)):
            if isinstance(child, exprTree.Node):
                todo.append(child)
            elif isinstance(child, list | tuple):
                todo.extend(c for c in reversed(child) if isinstance(c, exprTree.Node))
    return list(found)


def _select_problems(campaign: Campaign) -> Iterator[tuple[Path_, checks.Invalid]]:
    from .condition import ConditionError, parse_condition

    by_name = {step.name: step for step in campaign.steps}
    for index, step in enumerate(campaign.steps):
        select = step.select
        if select is None or select.from_step not in by_name:
            continue
        try:
            condition = parse_condition(select.where)
        except ConditionError:
            continue  # reported by the condition check
        source = by_name[select.from_step]
        try:
            graph = checks.load_pipeline_graph(source.pipeline_path, source.task_labels)
        except Exception:
            continue  # reported by the pipeline checks
        columns = _declared_columns(graph, select.dataset_type)
        if columns is None:
            continue  # the task does not say: the manager checks the table itself
        missing = [c for c in condition.columns if c not in columns]
        if missing:
            yield (
                ("steps", index, "select", "where"),
                checks.Invalid(
                    f"{select.dataset_type} has no column " + ", ".join(repr(c) for c in missing),
                    f"{checks.suggest(missing[0], sorted(columns))}columns of "
                    f"{select.dataset_type}: " + checks.listing(sorted(columns), limit=30),
                ),
            )


def _declared_columns(graph: Any, dataset_type: str) -> Sequence[str] | None:
    """The columns the producing task declares for ``dataset_type`` (``output_columns``)."""
    try:
        edge = graph.producing_edge_of(dataset_type)
    except (KeyError, LookupError):
        return None
    if edge is None:
        return None
    task_class = graph.tasks[edge.task_label].task_class
    declared: Mapping[str, Sequence[str]] | None = getattr(task_class, "output_columns", None)
    if not isinstance(declared, Mapping):
        return None
    columns = declared.get(edge.connection_name)
    return None if columns is None else list(columns)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
