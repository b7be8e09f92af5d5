"""What a dynamic step's ``select`` kept and dropped (seed step 13), as structured data.

The manager stores a :class:`StepSelection` in ``campaign_steps.selection`` when it
expands a step with a ``select`` (see :mod:`skybatch.campaign.expansion`); reports,
the demo's summary and the service read the kept and dropped data ids and the
condition back as data. :meth:`StepSelection.describe` is the one sentence written
for people (the step's message and the text reports).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["SelectionCondition", "StepSelection", "StepSelectionType", "data_id_text"]

#: A data id as stored: dimension name → value (``{"visit": 1000}``).
DataId = dict[str, Any]


def data_id_text(data_id: DataId) -> str:
    """``visit=1000`` or ``tract=0,patch=3`` (the dimensions in their stored order)."""
    return ",".join(f"{k}={v}" for k, v in data_id.items())


class SelectionCondition(BaseModel):
    """The step's ``select``: which table of which earlier step, and the condition."""

    model_config = ConfigDict(frozen=True)

    from_step: str = Field(description="earlier step whose outputs were read")
    dataset_type: str = Field(description="table dataset that was read, e.g. visitSummary")
    where: str = Field(description="condition on the table's columns")
    match: Literal["all", "any"] = Field(description="whether all rows or any row had to pass")


class StepSelection(BaseModel):
    """The data ids a step's ``select`` kept and dropped, and the condition it applied."""

    model_config = ConfigDict(frozen=True)

    condition: SelectionCondition
    kept: list[DataId] = Field(default_factory=list, description="data ids that passed")
    dropped: list[DataId] = Field(default_factory=list, description="data ids that did not")

    def headline(self) -> str:
        """``selected 2 of 3 visitSummary of step1 where psf_fwhm_arcsec < 1.2 (all rows)``."""
        c = self.condition
        total = len(self.kept) + len(self.dropped)
        return (
            f"selected {len(self.kept)} of {total} {c.dataset_type} of {c.from_step} where "
            f"{c.where} ({c.match} rows)"
        )

    def describe(self) -> str:
        """The headline and the data ids: ``...: kept visit=1000, visit=1002; dropped
        visit=1001`` (``none`` for an empty list)."""

        def ids(items: list[DataId]) -> str:
            return ", ".join(data_id_text(d) for d in items) or "none"

        return f"{self.headline()}: kept {ids(self.kept)}; dropped {ids(self.dropped)}"


class StepSelectionType(TypeDecorator[StepSelection]):
    """A :class:`StepSelection` in a JSON column (``model_dump(mode="json")``)."""

    impl = JSON()
    cache_ok = True

    def process_bind_param(
        self, value: StepSelection | None, dialect: Dialect
    ) -> dict[str, Any] | None:
        return None if value is None else value.model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> StepSelection | None:
        return None if value is None else StepSelection.model_validate(value)
