"""Validated string types of campaign fields and the error the loader reports.

Each check raises :func:`invalid`, a pydantic error whose context carries a hint, so
the loader can report what is wrong and what to do at the field's line.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from . import checks

__all__ = [
    "CAMPAIGN_ERROR",
    "DataQuery",
    "DatasetTypeName",
    "DimensionName",
    "FileTemplateString",
    "invalid",
    "raise_invalid",
]

CAMPAIGN_ERROR = "campaign"
"""pydantic error type of the campaign checks; their context carries ``hint``."""


def invalid(message: str, hint: str) -> PydanticCustomError:
    """A validation error whose message and hint the campaign loader reports."""
    return PydanticCustomError(CAMPAIGN_ERROR, "{message}", {"message": message, "hint": hint})


def raise_invalid(problem: checks.Invalid | None) -> None:
    """Raise :func:`invalid` for ``problem``, if any."""
    if problem is not None:
        raise invalid(problem.message, problem.hint)


def _query(value: str) -> str:
    raise_invalid(checks.check_query(value))
    return value


def _dimension(value: str) -> str:
    raise_invalid(checks.check_dimension(value))
    return value


def _dataset_type(value: str) -> str:
    raise_invalid(checks.check_dataset_type_name(value))
    return value


def _template(value: str) -> str:
    from .naming import check_template

    raise_invalid(check_template(value))
    return value


DataQuery = Annotated[str, AfterValidator(_query)]
"""A Butler data query expression (syntax checked, no registry)."""

DimensionName = Annotated[str, AfterValidator(_dimension)]
"""A dimension of the default dimension universe."""

DatasetTypeName = Annotated[str, AfterValidator(_dataset_type)]
"""A Butler dataset type name (or component)."""

FileTemplateString = Annotated[str, AfterValidator(_template)]
"""A daf_butler file template that names files uniquely."""
