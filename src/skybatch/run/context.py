"""The pieces of one run (``skybatch run``, a campaign group's run): what the operator
asks for (:class:`RunOptions`), what the run needs while it is set up, executed and
finished (:class:`RunContext`), what it reports (:class:`RunSummary`), and how its
engine is built from its options.

The driver (:mod:`skybatch.run.driver`) sets a run up and executes it; the finish
(:mod:`skybatch.run.finish`) ingests its outputs; both take a :class:`RunContext`.
This module imports neither, so neither imports the other for its types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skybatch.backbone.service import Backbone, SiteRequest
from skybatch.engines.base import Engine
from skybatch.engines.registry import EngineRegistry
from skybatch.graph.workflow import ClusterRule, ResourceRequest
from skybatch.job.spec import JobReport
from skybatch.repository import ButlerRepository, resolve_repository
from skybatch.settings import Settings

from .scheduler import read_report

__all__ = [
    "DEFAULT_SITE",
    "RunContext",
    "RunEnd",
    "RunOptions",
    "RunSummary",
    "engine_settings",
    "make_engine",
    "read_reports",
    "run_workdir",
]

DEFAULT_SITE = "site:local"


@dataclass
class RunOptions:
    """What the operator asks for (the CLI flags of ``skybatch run``)."""

    #: The Butler repository (:attr:`ButlerRepository.location`: its directory, or its
    #: configuration file when that is not ``DIR/butler.yaml``).
    repo: Path
    pipeline: str
    inputs: list[str]
    query: str = ""
    output_run: str | None = None
    site: str | None = None
    engine: str = "local"
    #: The engine's settings (validated against its ``settings_model``); for the
    #: local engine ``workers`` and ``isolation`` are merged in (see ``make_engine``).
    engine_settings: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    isolation: str = "warm"
    #: Most jobs in the engine at once, on any engine (a campaign's
    #: ``concurrency.max_running_jobs``); unset: what the engine can take.
    max_running_jobs: int | None = None
    #: Whether the compute nodes see the site cache; if not, jobs fetch their inputs
    #: from the archive and push their outputs there (``stage_in``/``stage_out``
    #: ``"archive"``), and nothing is replicated to the site.
    shared_filesystem: bool = True
    #: Root of the site endpoint when the run creates it (first use of the site);
    #: default ``HOME/site-cache``. An existing endpoint must be rooted there.
    site_root: str | None = None
    max_attempts: int = 3
    memory_factor: float = 2.0
    memory_cap_mb: int = 16_384
    #: Extra attempts after preemption or node failure (see RetryPolicy).
    infrastructure_retries: int = 3
    resources: dict[str, ResourceRequest] = field(default_factory=dict)
    default_resources: ResourceRequest = field(default_factory=ResourceRequest)
    cluster: list[ClusterRule] = field(default_factory=list)
    intermediates: list[str] = field(default_factory=list)
    #: Dataset types loaded into the object catalogs if their storage class is a table
    #: (:mod:`skybatch.ingest.catalog_select`); None: every table output; []: none.
    catalog_tables: list[str] | None = None
    catalog_db_url: str | None = None
    junk_tarball: bool = False
    #: File-naming policy: dataset type -> daf_butler file template replacing the
    #: repository's for this run's outputs (checked with
    #: :func:`skybatch.campaign.naming.check_file_templates`).
    file_templates: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items()}
        data["repo"] = str(self.repo)
        data["resources"] = {k: v.model_dump() for k, v in self.resources.items()}
        data["default_resources"] = self.default_resources.model_dump()
        data["cluster"] = [c.model_dump() for c in self.cluster]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        """Options stored by :meth:`to_json`, also by older skybatch versions (fields
        added since take their defaults, so old runs still resume)."""
        data = dict(data)
        data["repo"] = Path(data["repo"])
        data["resources"] = {k: ResourceRequest(**v) for k, v in data["resources"].items()}
        data["default_resources"] = ResourceRequest(**data["default_resources"])
        data["cluster"] = [ClusterRule(**c) for c in data["cluster"]]
        return cls(**data)


@dataclass
class RunSummary:
    run: str
    state: str
    workdir: Path
    quanta: int
    jobs: dict[str, int]
    expansion_s: float
    wall_s: float
    outputs_ingested: int = 0
    catalog_rows: int = 0
    cleaned: int = 0
    #: Seconds per phase (expand, workflow, provenance, init_outputs, inputs,
    #: execute, finish): where a run's time went.
    phases: dict[str, float] = field(default_factory=dict)
    #: What the run skipped without failing (e.g. a catalog that is not a table).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunEnd:
    """A run whose jobs ended, handed to its finish (in another process, for an
    execution pool): its options and work directory, whether its jobs staged out to
    the archive, its jobs per state, its phases so far and the seconds of its wall
    time that went before the finish."""

    options: RunOptions
    run: str
    workdir: Path
    via_archive: bool
    counts: dict[str, int]
    phases: dict[str, float]
    elapsed_s: float


class RunContext:
    """What one run needs, built once: its settings and options, the backbone and
    the state database's sessions, its work directory and Butler configuration, and
    its archive and site endpoints (made on first use).

    ``repo`` is how the repository is opened and recorded (its directory or its
    configuration file); ``repository.datastore_root`` is where its files are, the
    archive's root, which datastore paths are relative to."""

    def __init__(
        self,
        settings: Settings,
        options: RunOptions,
        run: str,
        *,
        backbone: Backbone | None = None,
        workdir: Path | None = None,
    ) -> None:
        """``backbone``: one shared by the runs of a process (an execution pool's),
        which :meth:`close` leaves open; by default the run gets its own."""
        self.settings = settings
        self.options = options
        self.run = run
        self._own_backbone = backbone is None
        self.backbone = backbone or Backbone.from_settings(settings)
        self.sessions = self.backbone.catalog.sessions
        self.workdir = workdir or run_workdir(settings, run)
        self.repository: ButlerRepository = resolve_repository(options.repo, where="--repo")
        self.repo = self.repository.location
        #: The configuration outputs are named and written with: the repository's, or
        #: with the run's file templates merged in, in the run's directory.
        self.butler_config = str(
            self.workdir / "butler.yaml" if options.file_templates else self.repository.config_file
        )
        endpoints = self.backbone.bootstrap(  # checked before anything is made
            self.repo,
            subject="the run's repository",
            where="--repo",
            site=SiteRequest(
                options.site or DEFAULT_SITE,
                options.site_root,
                settings.home / "site-cache",
                where="site root (campaign site.root)" if options.site_root else "--site",
                named=options.site is not None,
                # The endpoint's own flag says what the run's option says: whether
                # the compute nodes see the directory.
                shared_filesystem=options.shared_filesystem,
            ),
        )
        assert endpoints.archive is not None and endpoints.site is not None
        self.archive: str = endpoints.archive
        self.site: str = endpoints.site
        #: The archive endpoint's root: the repository's datastore root (its URI in an
        #: object store).
        self.archive_root = self.repository.archive_root
        #: Jobs stage in from and out to the archive (no shared filesystem with the
        #: site cache); settled by the driver once the engine is known.
        self.via_archive = not options.shared_filesystem

    def close(self) -> None:
        """Release the run's own backbone (its database connections)."""
        if self._own_backbone:
            self.backbone.close()

    def make_engine(self) -> Engine:
        """The run's engine, built through the plugin registry from its settings.

        An engine that keeps files of its own (``script_dir``: Slurm's job scripts, its
        logs and its pilot queue) keeps them in the run's work directory
        (``WORKDIR/ENGINE``) unless told otherwise: a place a restarted manager finds
        again, removed with the work directory by a campaign's end cleanup.
        """
        registry = EngineRegistry.default()
        options = self.options
        model = registry.get(options.engine).settings_model
        if "script_dir" in model.model_fields and "script_dir" not in options.engine_settings:
            engine_dir = str(self.workdir / options.engine)
            options = replace(
                options, engine_settings={**options.engine_settings, "script_dir": engine_dir}
            )
        return make_engine(options, registry)


def run_workdir(settings: Settings, run: str) -> Path:
    """Where run ``run`` keeps its files: ``HOME/runs/NAME`` (``/`` and other
    characters a path cannot hold become ``_``)."""
    return settings.home / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", run)


def engine_settings(options: RunOptions) -> dict[str, Any]:
    """The raw settings the run's engine is built with (not validated yet).

    For the local engine ``--workers`` (when given) overrides ``max_workers`` and
    ``--isolation`` fills ``isolation`` unless the settings set it; any other engine
    gets ``engine_settings`` as they are.
    """
    settings = dict(options.engine_settings)
    if options.engine == "local":
        settings.setdefault("isolation", options.isolation)
        if options.workers:
            settings["max_workers"] = options.workers
    return settings


def make_engine(options: RunOptions, registry: EngineRegistry | None = None) -> Engine:
    """Build the engine ``options`` name with its settings (see :func:`engine_settings`)."""
    registry = registry or EngineRegistry.default()
    return registry.create(options.engine, engine_settings(options))


def read_reports(workdir: Path, names: list[str] | None = None) -> list[JobReport]:
    """The newest report of every job (succeeded attempts win)."""
    out = []
    for job_dir in sorted((workdir / "jobs").glob("*")):
        if names is not None and job_dir.name not in names:
            continue
        attempts = sorted(
            job_dir.glob("attempt-*/report.json"),
            key=lambda p: int(p.parent.name.rpartition("-")[2] or 0),
        )
        reports = [r for path in attempts if (r := read_report(str(path))) is not None]
        good = [r for r in reports if r.status == "succeeded"]
        if good or reports:
            out.append((good or reports)[-1])
    return out
