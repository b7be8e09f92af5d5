"""Checks of campaign values against the LSST middleware, without any database.

Data queries are parsed with daf_butler's query expression parser, dimension names
are looked up in the default :class:`~lsst.daf.butler.DimensionUniverse`, pipelines
are read with pipe_base's :class:`~lsst.pipe.base.Pipeline` (labels and subsets as
``pipetask`` resolves them). These need no registry; what the repository's registry
can tell (collections, its dimensions in queries) is checked by
:mod:`skybatch.campaign.repochecks`.

Each check returns ``None`` when the value is fine, else :class:`Invalid` (what is
wrong, what to do), so callers can report it at the right place in the file. The LSST
packages are imported on first use, keeping ``import skybatch.campaign`` light.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skybatch import limits

__all__ = [
    "Invalid",
    "check_dataset_type_name",
    "check_dimension",
    "check_pipeline_labels",
    "check_query",
    "dimension_names",
    "load_pipeline_graph",
]

#: What pipe_base raises for a pipeline file it cannot read (bad YAML, unknown labels,
#: missing keys, bad overrides).
_PIPELINE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    LookupError,
    OSError,
    TypeError,
    RuntimeError,
    yaml.YAMLError,
)

_DATASET_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Invalid:
    """Why a value is invalid and what to do."""

    message: str
    hint: str


def listing(names: Iterable[object], limit: int = limits.MAX_HINT_NAMES, sep: str = ", ") -> str:
    """``names`` joined by ``sep``, the first ``limit`` of them and a count of the rest.

    Hints list what is allowed; a campaign of 50,000 steps must not make that a line of
    hundreds of kilobytes."""
    items = [str(n) for n in names]
    if len(items) <= limit:
        return sep.join(items)
    return f"{sep.join(items[:limit])} … and {len(items) - limit:,} more"


def suggest(name: str, choices: Sequence[str]) -> str:
    """``"did you mean 'x'? "`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def check_query(query: str, *, what: str = "data query") -> Invalid | None:
    """Whether ``query`` is a syntactically valid Butler query expression."""
    from lsst.daf.butler.queries.expressions.parser import ParserYaccError, parse_expression

    if not query.strip():
        return None
    try:
        parse_expression(query)
    except ParserYaccError as exc:
        return Invalid(
            f"invalid {what} {query!r}: {exc}",
            "write a Butler query expression, e.g. \"instrument='DemoCam' AND visit IN (1..5)\"",
        )
    return None


@functools.cache
def dimension_names() -> tuple[str, ...]:
    """Names of every dimension in the default dimension universe, sorted."""
    from lsst.daf.butler import DimensionUniverse

    return tuple(sorted(DimensionUniverse().getStaticDimensions().names))


def check_dimension(name: str) -> Invalid | None:
    """Whether ``name`` is a dimension of the default universe."""
    names = dimension_names()
    if name in names:
        return None
    common = [n for n in ("visit", "exposure", "detector", "tract", "patch", "band") if n in names]
    return Invalid(
        f"unknown dimension {name!r}",
        f"{suggest(name, names)}use a dimension of the Butler's default universe, e.g. "
        + ", ".join(common),
    )


def check_dataset_type_name(name: str) -> Invalid | None:
    """Whether ``name`` can name a Butler dataset type (or a component, ``calexp.wcs``)."""
    if _DATASET_TYPE.match(name):
        return None
    return Invalid(
        f"{name!r} is not a dataset type name",
        "dataset type names are identifiers such as calexp or visitSummary",
    )


def split_pipeline(pipeline: str) -> tuple[str, list[str]]:
    """``"path#a,b"`` → ``("path", ["a", "b"])`` as ``pipetask`` splits it."""
    path, _, labels = pipeline.partition("#")
    return path, [label.strip() for label in labels.split(",") if label.strip()]


def _stamp(path: Path) -> tuple[int, int] | None:
    """What changes when the file changes (the key of the per-file caches below)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def check_pipeline_labels(path: Path, labels: Sequence[str]) -> Invalid | None:
    """Whether the pipeline file ``path`` reads and defines every label or subset.

    The answer is cached per file version: a campaign of many steps on one pipeline
    reads it once."""
    return _check_pipeline_labels(Path(path), tuple(labels), _stamp(Path(path)))


@functools.lru_cache(maxsize=64)
def _check_pipeline_labels(
    path: Path, labels: tuple[str, ...], stamp: tuple[int, int] | None
) -> Invalid | None:
    from lsst.pipe.base import Pipeline

    beyond = pipeline_limit_problem(path)
    if beyond is not None:
        return beyond
    uri = f"{path}#{','.join(labels)}" if labels else str(path)
    try:
        Pipeline.from_uri(uri)
    except _PIPELINE_ERRORS as exc:
        if labels:
            known = _labels_and_subsets(path)
            unknown = [label for label in labels if known is not None and label not in known]
            if unknown:
                return Invalid(
                    f"pipeline {path.name} has no task or subset "
                    + listing(repr(label) for label in unknown),
                    f"{suggest(unknown[0], sorted(known or ()))}use one of: "
                    + listing(sorted(known or ())),
                )
        return Invalid(
            f"cannot read pipeline {path}: {exc}",
            "fix the pipeline file; `pipetask build -p FILE` shows the same problem",
        )
    return None


def pipeline_limit_problem(path: Path) -> Invalid | None:
    """Whether the pipeline file ``path`` crosses the YAML limits campaign files have.

    pipe_base reads pipelines with PyYAML's full loader: an alias bomb in a pipeline
    would hang validation as one in a campaign file would, so the file is composed
    with :mod:`skybatch.campaign.yamlguard` first (syntax errors are left to pipe_base,
    whose messages name them)."""
    from .yamlguard import YamlLimitError, check_file_size, compose

    try:
        check_file_size(path)
        compose(path.read_text(encoding="utf-8"))
    except YamlLimitError as exc:
        at = f", line {exc.mark.line + 1}, column {exc.mark.column + 1}" if exc.mark else ""
        return Invalid(f"pipeline {path}{at}: {exc.message}", exc.hint)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return None


def _labels_and_subsets(path: Path) -> set[str] | None:
    from lsst.pipe.base import Pipeline

    try:
        pipeline = Pipeline.from_uri(str(path))
    except _PIPELINE_ERRORS:
        return None
    return set(pipeline.task_labels) | set(pipeline.subsets)


def load_pipeline_graph(path: Path, labels: Sequence[str]) -> Any:
    """The :class:`~lsst.pipe.base.pipeline_graph.PipelineGraph` of a step's pipeline.

    This imports the tasks (their connections define the dataset types). Raises
    ``ImportError`` or ``ValueError`` as pipe_base does. Cached per file version and
    labels (callers must not change the graph, except resolving it).
    """
    return _load_pipeline_graph(Path(path), tuple(labels), _stamp(Path(path)))


@functools.lru_cache(maxsize=16)
def _load_pipeline_graph(path: Path, labels: tuple[str, ...], stamp: tuple[int, int] | None) -> Any:
    from lsst.pipe.base import Pipeline

    uri = f"{path}#{','.join(labels)}" if labels else str(path)
    return Pipeline.from_uri(uri).to_graph()
