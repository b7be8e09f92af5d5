"""Conditions of a step's ``select`` on table rows: ``column OP number [AND ...]``.

A condition is parsed, never evaluated as code: each clause names a column, one of
``< <= > >= == = !=`` and a number; clauses are joined with ``AND``. A row satisfies
the condition when every clause holds; a missing value (NaN, masked) satisfies none.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Clause", "Condition", "ConditionError", "parse_condition"]

_CLAUSE = re.compile(
    r"^\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|==|!=|=|<|>)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
}


class ConditionError(ValueError):
    """The condition is not of the supported form; ``hint`` says what is."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Clause:
    column: str
    op: str
    value: float

    def holds(self, value: Any) -> bool:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        if math.isnan(number):
            return False
        return _OPS[self.op](number, self.value)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Condition:
    clauses: tuple[Clause, ...]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for c in self.clauses))

    def holds(self, row: Mapping[str, Any]) -> bool:
        """Whether every clause holds for ``row`` (column name → value)."""
        return all(clause.holds(row.get(clause.column)) for clause in self.clauses)

    def rows_pass(self, rows: Sequence[Mapping[str, Any]], match: str) -> bool:
        """``match='all'``: every row holds (and there is one); ``'any'``: one does."""
        if not rows:
            return False
        results = (self.holds(row) for row in rows)
        return all(results) if match == "all" else any(results)

    def __str__(self) -> str:
        return " AND ".join(str(c) for c in self.clauses)


def parse_condition(text: str) -> Condition:
    """Parse ``column OP number [AND column OP number ...]``.

    Raises:
        ConditionError: anything else (OR, functions, column-to-column comparisons).
    """
    parts = _AND.split(text.strip())
    clauses = []
    for part in parts:
        match = _CLAUSE.match(part)
        if match is None:
            raise ConditionError(
                f"cannot read the condition {part.strip()!r} in {text!r}",
                "write COLUMN OP NUMBER with OP one of < <= > >= = != and join clauses "
                "with AND, e.g. 'psf_fwhm_arcsec < 1.2 AND n_sources > 100'",
            )
        clauses.append(Clause(match["column"], match["op"], float(match["number"])))
    return Condition(tuple(clauses))
