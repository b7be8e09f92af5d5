"""Expanding a step into groups (seed steps 3, 13): data ids from the Butler, split.

A step is expanded only once the steps it depends on succeeded, so its selection may
use their outputs. With a ``select``, the ``from_step``'s datasets of
``select.dataset_type`` are read from its groups' output runs and a data id is kept
when its table rows satisfy ``select.where`` (see :mod:`skybatch.campaign.condition`);
the kept data ids are ANDed into the step's query. Then the values of the split
dimension are queried and chunked into groups (one per value, ``max_ids`` per group,
or one group for ``split: none``).

Only the Butler registry is read; nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skybatch.errors import InputError

from .condition import ConditionError, parse_condition
from .config import Campaign, Select, SplitByCount, SplitByDimension, Step
from .selection import SelectionCondition, StepSelection

__all__ = ["ExpansionError", "GroupSpec", "StepExpansion", "and_queries", "expand_step"]


class ExpansionError(InputError):
    """The step cannot be expanded (bad query, missing column, no data)."""


@dataclass(frozen=True)
class GroupSpec:
    name: str
    query: str


@dataclass
class StepExpansion:
    """The groups of a step, what its ``select`` kept and dropped (``selection``, stored
    as data) and the step's message."""

    groups: list[GroupSpec]
    message: str | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    selection: StepSelection | None = None


def and_queries(*queries: str) -> str:
    """``(a) AND (b)`` of the non-empty queries."""
    parts = [q.strip() for q in queries if q and q.strip()]
    if len(parts) < 2:
        return parts[0] if parts else ""
    return " AND ".join(f"({q})" for q in parts)


def expand_step(
    campaign: Campaign, step: Step, runs_of: Mapping[str, Sequence[str]], butler: Any = None
) -> StepExpansion:
    """The groups of ``step``; ``runs_of[step name]`` are the output runs of a step's groups.

    Raises:
        ExpansionError: the queries fail, the selected table lacks a column, or the
            step's query matches no data.
    """
    from lsst.daf.butler import Butler

    if butler is None:
        with Butler.from_config(str(campaign.repo)) as own:
            return expand_step(campaign, step, runs_of, own)
    query = campaign.query_for(step)
    result = StepExpansion([])
    if step.select is not None:
        runs = list(runs_of.get(step.select.from_step, ()))
        clause, result.kept, result.dropped = _select(butler, step.select, runs)
        result.selection = _selection(step.select, result.kept, result.dropped)
        described = result.selection.describe()
        if not result.kept:
            result.message = f"nothing selected: {described}"
            return result
        result.message = described
        query = and_queries(query, clause)
    split = step.split
    if split == "none":
        result.groups = [GroupSpec("all", query)]
        return result
    dimension = split.by if isinstance(split, SplitByDimension) else split.dimension
    values = _values(butler, dimension, query, step)
    size = split.max_ids if isinstance(split, SplitByCount) else 1
    for index, start in enumerate(range(0, len(values), size)):
        chunk = values[start : start + size]
        if size == 1:
            name = f"{dimension}_{_name_part(chunk[0])}"
            clause = f"{dimension} = {_literal(chunk[0])}"
        else:
            name = f"{dimension}_part{index + 1:04d}"
            clause = f"{dimension} IN ({', '.join(_literal(v) for v in chunk)})"
        result.groups.append(GroupSpec(name, and_queries(query, clause)))
    return result


def _values(butler: Any, dimension: str, query: str, step: Step) -> list[Any]:
    try:
        data_ids = butler.query_data_ids([dimension], where=query, limit=None, explain=False)
    except Exception as exc:  # the registry's query errors have no common base
        raise ExpansionError(
            f"cannot query the {dimension} values of step {step.name!r}: {_first_line(exc)}",
            where=f"steps.{step.name}.query",
            hint="check the campaign's and the step's query against the repository",
        ) from None
    values = sorted({data_id[dimension] for data_id in data_ids})
    if not values:
        raise ExpansionError(
            f"the query of step {step.name!r} matches no {dimension}: {query or '(none)'}",
            where=f"steps.{step.name}.query",
            hint="widen the query, or check that the inputs hold data for it",
        )
    return values


def _select(
    butler: Any, select: Select, runs: list[str]
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The query clause for the data ids whose rows pass, and the kept/dropped ids."""
    try:
        condition = parse_condition(select.where)
    except ConditionError as exc:
        raise ExpansionError(str(exc), where="select.where", hint=exc.hint) from None
    if not runs:
        return "", [], []
    try:
        refs = butler.query_datasets(
            select.dataset_type, collections=runs, find_first=True, limit=None, explain=False
        )
    except Exception as exc:
        raise ExpansionError(
            f"cannot find the {select.dataset_type} datasets of step "
            f"{select.from_step!r}: {_first_line(exc)}",
            where="select.dataset_type",
            hint=f"check that {select.from_step} writes {select.dataset_type}",
        ) from None
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    keys: list[str] = []
    for ref in sorted(refs, key=lambda r: str(r.dataId)):
        columns = _columns(butler.get(ref))
        missing = [c for c in condition.columns if c not in columns]
        if missing:
            raise ExpansionError(
                f"{select.dataset_type} {ref.dataId} has no column "
                + ", ".join(repr(c) for c in missing),
                where="select.where",
                hint="columns of the table: " + ", ".join(sorted(columns)),
            )
        n_rows = len(next(iter(columns.values()))) if columns else 0
        rows = [{c: columns[c][i] for c in condition.columns} for i in range(n_rows)]
        group = ref.dataId.dimensions
        keys = [name for name in group.required if name not in group.governors] or list(
            group.required
        )
        data_id = {name: ref.dataId[name] for name in keys}
        (kept if condition.rows_pass(rows, select.match) else dropped).append(data_id)
    return _in_clause(keys, kept), kept, dropped


def _columns(table: Any) -> dict[str, Sequence[Any]]:
    """Column name → values of an astropy table, pandas frame or arrow table."""
    if hasattr(table, "colnames"):  # astropy
        return {name: list(table[name]) for name in table.colnames}
    if hasattr(table, "column_names"):  # pyarrow
        return {name: table.column(name).to_pylist() for name in table.column_names}
    if hasattr(table, "columns") and hasattr(table, "to_dict"):  # pandas
        return {str(name): list(table[name]) for name in table.columns}
    raise ExpansionError(
        f"cannot read rows from a {type(table).__name__}",
        where="select.dataset_type",
        hint="select on a table dataset (astropy, pandas or arrow storage class)",
    )


def _in_clause(keys: list[str], data_ids: list[dict[str, Any]]) -> str:
    if not data_ids:
        return ""
    if len(keys) == 1:
        (key,) = keys
        values = sorted({d[key] for d in data_ids})
        return f"{key} IN ({', '.join(_literal(v) for v in values)})"
    return " OR ".join(
        "(" + " AND ".join(f"{k} = {_literal(d[k])}" for k in keys) + ")" for d in data_ids
    )


def _literal(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    if "'" in text:
        raise ExpansionError(
            f"cannot quote the value {text!r} in a data query",
            where="split",
            hint="split by a dimension whose values have no quotes",
        )
    return f"'{text}'"


def _name_part(value: Any) -> str:
    text = str(value)
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def _selection(
    select: Select, kept: Iterable[dict[str, Any]], dropped: Iterable[dict[str, Any]]
) -> StepSelection:
    condition = SelectionCondition(
        from_step=select.from_step,
        dataset_type=select.dataset_type,
        where=select.where,
        match=select.match,
    )
    return StepSelection(condition=condition, kept=list(kept), dropped=list(dropped))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
