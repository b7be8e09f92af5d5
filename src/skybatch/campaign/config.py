"""The campaign file (seed steps 1-2) as pydantic models.

A campaign names a Butler repository, its input collections, calibrations and an
ordered list of **steps** (a pipeline or a subset of one, over a data query, split into
groups, after the steps it depends on). Policies (retries, resources, concurrency,
priority, intermediates, cleanup) are set for the campaign and may be overridden per
step. Unknown fields are refused everywhere.

Without a :class:`CampaignContext` as the pydantic validation context no file is
looked at (queries, dimensions and templates are still checked). With one, relative
paths are resolved against the campaign file's directory and the files are checked
(the repository holds ``butler.yaml``, pipeline files exist and define the labels
used). :func:`skybatch.campaign.load.load_campaign`
does that and reports every problem with its file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from skybatch import limits
from skybatch.engines.errors import EngineConfigError
from skybatch.engines.registry import EngineRegistry
from skybatch.graph.workflow import ResourceRequest

from . import checks
from .fields import (
    CAMPAIGN_ERROR,
    DataQuery,
    DatasetTypeName,
    DimensionName,
    FileTemplateString,
    invalid,
    raise_invalid,
)
from .policies import Policies
from .steps import StepGraphProblem, step_graph_problems, topological_order

__all__ = [
    "STEP_GRAPH_ERROR",
    "Calibration",
    "Campaign",
    "CampaignContext",
    "EngineConfig",
    "RefcatSource",
    "Select",
    "SiteConfig",
    "SplitByCount",
    "SplitByDimension",
    "Step",
]

STEP_GRAPH_ERROR = "campaign_steps"
"""pydantic error type of the step dependency checks (also run on raw data by load)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SITE = re.compile(r"^site:[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CampaignContext:
    """Validation context: where the campaign file is (relative paths start there),
    and the installed engines (default: :meth:`EngineRegistry.default`)."""

    base_dir: Path
    engines: EngineRegistry | None = None


def _context(info: ValidationInfo) -> CampaignContext | None:
    return info.context if isinstance(info.context, CampaignContext) else None


def _engines(info: ValidationInfo) -> EngineRegistry:
    context = _context(info)
    if context is not None and context.engines is not None:
        return context.engines
    return EngineRegistry.default()


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """``path`` made absolute against the campaign file's directory (with a context)."""
    context = _context(info)
    path = path.expanduser()
    if context is None:
        return path
    return Path(os.path.normpath(context.base_dir / path))


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise invalid(
            f"invalid {what} {value!r}",
            "use letters, digits, '_', '-' and '.', starting with a letter or digit",
        )
    size = len(value.encode())
    if size > limits.MAX_CAMPAIGN_NAME_BYTES:
        raise invalid(
            f"the {what} is {size} bytes long, more than {limits.MAX_CAMPAIGN_NAME_BYTES}",
            "use a shorter name: a group's work directory is named after its campaign, "
            "campaign id, step and group, and a file name has at most "
            f"{limits.MAX_NAME_COMPONENT_BYTES} bytes",
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Calibration(_Model):
    """Which calibrations the steps use."""

    collection: str = Field(min_length=1, description="CALIBRATION collection, e.g. DemoCam/calib")
    valid_at: datetime | date | Literal["latest"] = Field(
        default="latest",
        description=(
            "use the calibrations valid at this date (YYYY-MM-DD) or time (ISO 8601, UTC "
            "unless a zone is given); 'latest' uses the most recently valid ones"
        ),
    )

    @field_validator("valid_at", mode="before")
    @classmethod
    def _date_or_latest(cls, value: Any) -> Any:
        if isinstance(value, date) or value == "latest":
            return value
        if isinstance(value, str):
            for parse in (date.fromisoformat, datetime.fromisoformat):
                try:
                    return parse(value.strip())
                except ValueError:
                    continue
        raise invalid(
            f"{value!r} is not a date",
            "write a date as YYYY-MM-DD (e.g. 2026-03-01), a time as 2026-03-01T12:00:00, "
            "or 'latest'",
        )


class RefcatSource(_Model):
    """The reference catalog database that the backbone exports as ``ref_cat`` shards."""

    database: str = Field(
        description="SQL database holding the catalog table: an SQLite file (relative to "
        "the campaign file) or a PostgreSQL URL (postgresql://USER@HOST:PORT/DB)"
    )
    table: str = Field(
        default="refcat",
        min_length=1,
        description="table of the catalog (PostgreSQL: SCHEMA.TABLE or a table on the search path)",
    )
    dataset_type: DatasetTypeName = Field(
        default="ref_cat", description="Butler dataset type of the exported shards"
    )

    @field_validator("database", mode="before")
    @classmethod
    def _database_exists(cls, value: Any, info: ValidationInfo) -> Any:
        """A PostgreSQL URL as it is (reached when the catalog is exported); a file
        path made absolute, and with a campaign file, checked to exist."""
        from skybatch.db.postgres import is_postgres_url, looks_like_url

        if not isinstance(value, str | os.PathLike):
            return value
        text = os.fspath(value)
        if is_postgres_url(text):
            return text
        if looks_like_url(text):
            raise invalid(
                f"reference catalog database {text!r} is neither a file nor a PostgreSQL URL",
                "give an SQLite file (relative to the campaign file) or "
                "postgresql://USER@HOST:PORT/DATABASE",
            )
        path = _resolve(Path(text), info)
        if _context(info) is not None and not path.is_file():
            raise invalid(
                f"reference catalog database {path} does not exist",
                "give the path of the catalog's database file (relative to the campaign "
                "file) or a PostgreSQL URL",
            )
        return str(path)


class SiteConfig(_Model):
    """The compute site whose shared filesystem caches the inputs."""

    name: str = Field(default="site:local", description="backbone endpoint of the site")
    root: Path | None = Field(
        default=None,
        description=(
            "directory of the site's cache (the root of the backbone endpoint, made on "
            "first use), relative to the campaign file; unset: HOME/site-cache, or the "
            "root the endpoint already has"
        ),
    )
    shared_filesystem: bool = Field(
        default=True,
        description=(
            "whether the compute nodes see the site cache; false: jobs fetch their "
            "inputs from the archive and push their outputs there"
        ),
    )

    @field_validator("name")
    @classmethod
    def _site_name(cls, value: str) -> str:
        if not _SITE.match(value):
            raise invalid(f"invalid site {value!r}", "site names look like site:local")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        value = _resolve(value, info)
        if _context(info) is not None and value.exists() and not value.is_dir():
            raise invalid(
                f"site root {value} is not a directory",
                "give the directory of the site cache (it is created if it does not exist)",
            )
        return value


class EngineConfig(_Model):
    """The execution engine that runs the jobs."""

    name: str = Field(default="local", description="engine plugin (entry point skybatch.engines)")
    workers: int | None = Field(
        default=None,
        ge=1,
        description="parallel jobs of the local engine (ignored by other engines); "
        "unset: one per core",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="the engine's own settings (e.g. partition and max_jobs for slurm), "
        "checked against the settings the engine declares",
    )

    @field_validator("name")
    @classmethod
    def _known_engine(cls, value: str, info: ValidationInfo) -> str:
        registry = _engines(info)
        known = registry.names()
        if value not in known:
            raise invalid(
                f"unknown engine {value!r}",
                f"{checks.suggest(value, known)}use one of the installed engines: "
                + checks.listing(known),
            )
        try:
            registry.get(value)  # importable and a usable engine
        except EngineConfigError as exc:
            raise invalid(exc.message, exc.hint or "fix or reinstall the engine") from None
        return value

    @field_validator("settings")
    @classmethod
    def _engine_settings(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # invalid itself, reported there
            return value
        # A ValidationError raised here keeps its field paths, under engine.settings.
        _engines(info).settings_model(name).model_validate(value)
        return value

    @model_validator(mode="after")
    def _workers_once(self) -> EngineConfig:
        if self.name == "local" and self.workers is not None and "max_workers" in self.settings:
            raise invalid(
                "the local engine's parallel jobs are given twice: workers and "
                "settings.max_workers",
                "keep one of them",
            )
        return self


class SplitByDimension(_Model):
    """One group per value of a dimension (``{by: visit}``)."""

    by: DimensionName = Field(description="dimension whose values make the groups")


class SplitByCount(_Model):
    """Groups of at most ``max_ids`` values of a dimension (``{max_ids: 50, dimension: visit}``)."""

    max_ids: int = Field(
        ge=1,
        le=limits.MAX_DATABASE_INTEGER,
        description="most values of the dimension in one group",
    )
    dimension: DimensionName = Field(description="dimension whose values are counted")


def _split_kind(value: Any) -> str | None:
    if value == "none":
        return "none"
    if isinstance(value, SplitByDimension):
        return "by"
    if isinstance(value, SplitByCount):
        return "max_ids"
    if isinstance(value, dict):
        if "by" in value:
            return "by"
        if "max_ids" in value or "dimension" in value:
            return "max_ids"
    return None


Split = Annotated[
    Annotated[Literal["none"], Tag("none")]
    | Annotated[SplitByDimension, Tag("by")]
    | Annotated[SplitByCount, Tag("max_ids")],
    Discriminator(
        _split_kind,
        custom_error_type=CAMPAIGN_ERROR,
        custom_error_message="expected none, {by: DIMENSION} or {max_ids: N, dimension: DIMENSION}",
        custom_error_context={"hint": "write e.g. `split: {by: visit}`"},
    ),
]


class Select(_Model):
    """Keep only the data ids whose earlier output passes a condition (dynamic expansion).

    After ``from_step`` ran, its ``dataset_type`` datasets are read and a data id of
    this step is kept when ``where`` holds for its rows (all of them, or any).
    """

    from_step: str = Field(description="earlier step that produced the dataset")
    dataset_type: DatasetTypeName = Field(description="table dataset to read, e.g. visitSummary")
    where: str = Field(
        min_length=1,
        description="condition on the table's columns, e.g. 'psf_fwhm_arcsec < 1.2'",
    )
    match: Literal["all", "any"] = Field(
        default="all", description="whether all rows or any row must satisfy the condition"
    )

    @field_validator("where", mode="after")
    @classmethod
    def _condition(cls, value: str) -> str:
        raise_invalid(checks.check_query(value, what="condition"))
        return value


class Step(_Model):
    """One pipeline (or subset) over a data selection, run after its dependencies."""

    name: str = Field(description="unique name of the step")
    description: str = ""
    pipeline: str = Field(
        description="pipeline YAML file, optionally PATH#label1,label2 (task labels or subsets)"
    )
    labels: list[str] | None = Field(
        default=None, description="task labels or subsets to run (instead of #labels)"
    )
    query: DataQuery = Field(default="", description="data query, ANDed with the campaign's")
    split: Split = Field(default="none", description="how the step's data is split into groups")
    depends_on: list[str] = Field(default_factory=list, description="steps that must finish first")
    select: Select | None = Field(default=None, description="filter on an earlier step's output")
    policies: Policies = Field(
        default_factory=Policies,
        description="overrides of the campaign's policies; unset fields are inherited",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "step name")

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, value: str, info: ValidationInfo) -> str:
        path_text, labels = checks.split_pipeline(value)
        if not path_text:
            raise invalid("no pipeline file given", "write PATH or PATH#label1,label2")
        path = _resolve(Path(path_text), info)
        if _context(info) is not None:
            if not path.is_file():
                raise invalid(
                    f"pipeline file {path} does not exist",
                    "give the pipeline YAML path, relative to the campaign file",
                )
            raise_invalid(checks.check_pipeline_labels(path, labels))
        return f"{path}#{','.join(labels)}" if labels else str(path)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise invalid("labels is empty", "list task labels or subsets, or leave labels out")
        pipeline = info.data.get("pipeline")
        if pipeline is None:  # invalid itself, reported there
            return value
        path_text, in_uri = checks.split_pipeline(pipeline)
        if in_uri:
            raise invalid(
                "labels are given twice: after '#' in pipeline and in labels",
                "keep one of them",
            )
        if _context(info) is not None:
            raise_invalid(checks.check_pipeline_labels(Path(path_text), value))
        return value

    @property
    def pipeline_path(self) -> Path:
        """The pipeline file."""
        return Path(checks.split_pipeline(self.pipeline)[0])

    @property
    def task_labels(self) -> list[str]:
        """The task labels or subsets to run; empty: the whole pipeline."""
        return list(self.labels) if self.labels else checks.split_pipeline(self.pipeline)[1]

    @property
    def pipeline_uri(self) -> str:
        """``PATH[#labels]`` as ``pipetask`` and :func:`skybatch.graph.expand.expand` take it."""
        labels = self.task_labels
        return f"{self.pipeline_path}#{','.join(labels)}" if labels else str(self.pipeline_path)


class Campaign(_Model):
    """A campaign file. ``include:`` and ``${VAR}`` are handled before validation."""

    schema_version: Literal[1] = Field(default=1, description="version of this file format")
    name: str = Field(description="campaign name (used in output collection names)")
    description: str = ""
    repo: Path = Field(
        description="Butler repository: its directory, its butler.yaml (path or file:// URI) "
        "or a repository index label (DAF_BUTLER_REPOSITORY_INDEX); paths are relative to "
        "the campaign file"
    )
    inputs: list[str] = Field(min_length=1, description="input collections, searched in order")
    query: DataQuery = Field(default="", description="base data query for every step")
    calibration: Calibration | None = Field(
        default=None, description="calibrations to use; unset: those the inputs provide"
    )
    refcat: RefcatSource | None = Field(default=None, description="reference catalog source")
    file_templates: dict[DatasetTypeName, FileTemplateString] = Field(
        default_factory=dict,
        description="Butler datastore file template per dataset type (overrides the repo's)",
    )
    site: SiteConfig = Field(default_factory=SiteConfig, description="compute site")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="execution engine")
    policies: Policies = Field(default_factory=Policies, description="defaults for every step")
    steps: list[Step] = Field(min_length=1, description="the steps, in order")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "campaign name")

    @field_validator("repo", mode="before")
    @classmethod
    def _repo(cls, value: Any, info: ValidationInfo) -> Any:
        """With a campaign file: resolved as the Butler names repositories
        (:mod:`skybatch.repository`) to the path it is opened by; stored campaigns
        hold that path already."""
        context = _context(info)
        if context is None or not isinstance(value, str | os.PathLike):
            return value
        from skybatch.errors import InputError
        from skybatch.repository import resolve_repository

        try:
            return resolve_repository(value, where="repo", base_dir=context.base_dir).location
        except InputError as exc:
            raise invalid(exc.message, exc.hint or "") from None

    @model_validator(mode="after")
    def _step_graph(self) -> Campaign:
        problems = step_graph_problems(
            [(s.name, s.depends_on, s.select.from_step if s.select else None) for s in self.steps]
        )
        if problems:
            raise _step_graph_error(problems[0])
        return self

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def ordered_steps(self) -> list[Step]:
        """The steps in an order that runs each after its dependencies (file order else)."""
        order = topological_order([(s.name, s.depends_on) for s in self.steps])
        by_name = {s.name: s for s in reversed(self.steps)}
        return [by_name[name] for name in order]

    def policies_for(self, step: Step | str) -> Policies:
        """The campaign's policies with ``step``'s overrides applied."""
        step = self.step(step) if isinstance(step, str) else step
        return self.policies.overridden_by(step.policies)

    def query_for(self, step: Step | str) -> str:
        """The step's data query ANDed with the campaign's base query."""
        step = self.step(step) if isinstance(step, str) else step
        parts = [q for q in (self.query.strip(), step.query.strip()) if q]
        if len(parts) < 2:
            return parts[0] if parts else ""
        return " AND ".join(f"({q})" for q in parts)

    def resources_for(self, step: Step | str, label: str) -> ResourceRequest:
        """What one quantum of task ``label`` in ``step`` asks for."""
        return self.policies_for(step).resources_for(label)


def _step_graph_error(problem: StepGraphProblem) -> PydanticCustomError:
    return PydanticCustomError(
        STEP_GRAPH_ERROR, "{message}", {"message": problem.message, "hint": problem.hint}
    )
