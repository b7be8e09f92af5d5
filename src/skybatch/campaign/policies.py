"""Campaign policies: retries, resources, concurrency, priority, intermediates, cleanup.

The same model is used for the campaign's defaults and for a step's overrides. In a
step, only the fields written in the file override (pydantic's ``model_fields_set``),
recursively: ``policies: {retries: {max_attempts: 5}}`` keeps the campaign's memory
factor. Resource requests merge per task label over ``default_resources``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from skybatch import limits
from skybatch.graph.workflow import ResourceRequest

from .fields import CAMPAIGN_ERROR, DatasetTypeName, invalid

__all__ = ["CLEANUP_TARGETS", "Catalogs", "CleanupTarget", "Concurrency", "Policies", "Retries"]

CleanupTarget = Literal["site_cache", "workdirs", "intermediates"]
CLEANUP_TARGETS: tuple[CleanupTarget, ...] = ("site_cache", "workdirs", "intermediates")

_M = TypeVar("_M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retries(_Model):
    """How failed jobs are retried (memory failures with more memory)."""

    max_attempts: int = Field(
        default=3,
        ge=1,
        le=limits.MAX_DATABASE_INTEGER,
        description="attempts per job, the first included",
    )
    memory_factor: float = Field(
        default=2.0, ge=1.0, description="memory request multiplier after a memory failure"
    )
    memory_cap_mb: int = Field(
        default=16_384,
        gt=0,
        le=limits.MAX_DATABASE_INTEGER,
        description="most memory a retry asks for",
    )
    infrastructure_retries: int = Field(
        default=3,
        ge=0,
        le=limits.MAX_DATABASE_INTEGER,
        description="attempts on top of max_attempts after preemption or node failure "
        "(not the job's fault: such attempts do not use up its budget)",
    )


class Concurrency(_Model):
    """Limits on what runs at once; unset means no limit."""

    max_running_jobs: int | None = Field(
        default=None, ge=1, le=limits.MAX_DATABASE_INTEGER, description="jobs at once"
    )
    max_running_groups: int | None = Field(
        default=None, ge=1, le=limits.MAX_DATABASE_INTEGER, description="groups at once"
    )


class Catalogs(_Model):
    """Which outputs go into the SQL object catalogs at the end of each group's run.

    Only outputs whose storage class is a table (astropy, Arrow, DataFrame) are loaded;
    a named dataset type of another storage class is skipped with a warning.
    """

    load: bool = Field(default=True, description="load object catalogs at all")
    dataset_types: list[DatasetTypeName] | None = Field(
        default=None,
        description="dataset types to load; unset: every output whose storage class is a table",
    )
    database: str | None = Field(
        default=None,
        description="SQL database of the object catalogs: postgresql://USER@HOST:PORT/DB "
        "(created on first use if the user may) or sqlite:////ABSOLUTE/PATH; unset: "
        "HOME/catalogs.sqlite3",
    )

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url

        hint = "give postgresql://USER@HOST:PORT/DATABASE or sqlite:////ABSOLUTE/PATH.sqlite3"
        try:
            url = make_url(value)
        except Exception:
            raise invalid(f"{value!r} is not a database URL", hint) from None
        backend = url.get_backend_name()
        if backend not in ("postgresql", "sqlite"):
            raise invalid(f"object catalogs go to PostgreSQL or SQLite, not {backend}", hint)
        if backend == "sqlite" and not (url.database and url.database.startswith("/")):
            raise invalid(f"the SQLite catalog database of {value!r} is not an absolute path", hint)
        return value

    @property
    def selection(self) -> list[str] | None:
        """What a run's ``catalog_tables`` is: None (every table output), names, or []."""
        if not self.load:
            return []
        return None if self.dataset_types is None else list(self.dataset_types)


def _cleanup_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list | tuple):
        return "list"
    return None


CleanupAtEnd = Annotated[
    Annotated[bool, Tag("bool")] | Annotated[list[CleanupTarget], Tag("list")],
    Discriminator(
        _cleanup_kind,
        custom_error_type=CAMPAIGN_ERROR,
        custom_error_message="expected true, false or a list of what to clean",
        custom_error_context={"hint": "write e.g. `cleanup_at_end: [site_cache, workdirs]`"},
    ),
]


class Policies(_Model):
    """Policies of the campaign, or a step's overrides of them."""

    retries: Retries = Field(default_factory=Retries, description="retries of failed jobs")
    default_resources: ResourceRequest = Field(
        default_factory=ResourceRequest, description="resources of tasks not in resources"
    )
    resources: dict[str, ResourceRequest] = Field(
        default_factory=dict, description="resources per task label"
    )
    concurrency: Concurrency = Field(default_factory=Concurrency, description="limits")
    priority: int = Field(
        default=0,
        ge=-limits.MAX_DATABASE_INTEGER,
        le=limits.MAX_DATABASE_INTEGER,
        description="higher runs first",
    )
    intermediates: list[DatasetTypeName] = Field(
        default_factory=list,
        description="dataset types deleted when the step (or every step) has finished",
    )
    catalogs: Catalogs = Field(
        default_factory=Catalogs, description="outputs loaded into the object catalogs"
    )
    cleanup_at_end: CleanupAtEnd = Field(
        default=True,
        description="what to delete when the campaign ends: true (everything: "
        + ", ".join(CLEANUP_TARGETS)
        + "), false (nothing) or a list",
    )

    def overridden_by(self, override: Policies) -> Policies:
        """These policies with the fields written in ``override`` replacing them."""
        return _merge(self, override)

    def resources_for(self, label: str) -> ResourceRequest:
        """The resources of task ``label``: its entry merged over ``default_resources``."""
        own = self.resources.get(label)
        return self.default_resources if own is None else _merge(self.default_resources, own)

    @property
    def cleanup_targets(self) -> tuple[CleanupTarget, ...]:
        """What is cleaned at the end of the campaign."""
        if isinstance(self.cleanup_at_end, bool):
            return CLEANUP_TARGETS if self.cleanup_at_end else ()
        return tuple(dict.fromkeys(self.cleanup_at_end))


def _merge(base: _M, override: BaseModel) -> _M:
    update: dict[str, Any] = {}
    for name in override.model_fields_set:
        new, old = getattr(override, name), getattr(base, name)
        if isinstance(new, BaseModel) and isinstance(old, type(new)):
            new = _merge(old, new)
        elif isinstance(new, dict) and isinstance(old, dict):
            new = {
                **old,
                **{
                    key: _merge(old[key], value)
                    if isinstance(value, BaseModel) and key in old
                    else value
                    for key, value in new.items()
                },
            }
        update[name] = new
    return base.model_copy(update=update)
