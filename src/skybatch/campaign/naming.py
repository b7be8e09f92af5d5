"""The file-naming policy of a campaign: Butler datastore file template overrides.

A campaign may override the repository's file templates per dataset type, e.g.
``calexp: "{run:/}/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}_{detector}"``.
Outputs must never share a path, so the overrides are checked in two stages:

1. Before anything runs (:func:`check_template`, :func:`check_file_templates`): every
   override must be a valid daf_butler :class:`FileTemplate` that carries a unique
   identifier, and the repository's template configuration with the overrides merged
   in (:func:`templates_config`) must still load.
2. After a step is expanded, every predicted output path of its graph must be unique:
   the hook for that is :func:`find_path_collisions`, which the campaign manager feeds
   with the paths :class:`skybatch.graph.expand.DatastorePaths` predicts under the
   merged templates (a template can only be checked against a dataset type's
   dimensions once the expanded graph knows them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .checks import Invalid

__all__ = [
    "check_file_templates",
    "check_template",
    "find_path_collisions",
    "templates_config",
    "unwritten_templates",
    "write_templated_config",
]


def check_template(template: str) -> Invalid | None:
    """Whether ``template`` is a valid file template with a unique identifier.

    daf_butler requires ``{run}`` or ``{id}``. An override is used for one dataset
    type, but several overrides may produce the same path, so without ``{id}`` (the
    dataset's UUID) it must also contain ``{datasetType}``. Whether it uses every
    dimension of the dataset type is only known after expansion (see the module
    docstring).
    """
    from lsst.daf.butler.datastore.file_templates import (
        FileTemplate,
        FileTemplateValidationError,
    )

    hint = (
        "use {run}, {datasetType} and every dimension of the dataset type, e.g. "
        '"{run:/}/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}_{detector}"'
    )
    if template.startswith(("/", "~")) or "://" in template.split("{", 1)[0]:
        return Invalid(
            f"file template {template!r} is absolute: it would write outside the repository",
            "write the template relative to the repository's datastore root, starting "
            "with {run:/} or {run}",
        )
    try:
        parsed = FileTemplate(template)
        fields = parsed.fields(optionals=True, specials=True)
    except (FileTemplateValidationError, ValueError, KeyError, RuntimeError) as exc:
        return Invalid(f"invalid file template {template!r}: {exc}", hint)
    if "id" not in fields and not {"run", "datasetType"} <= fields:
        return Invalid(
            f"file template {template!r} does not name files uniquely: it needs {{id}}, "
            "or {run} and {datasetType} (and the dataset type's dimensions)",
            hint,
        )
    return None


def _templates_key(config: Any) -> tuple[str | int, ...]:
    """Key of the templates of the (first) file datastore, also inside a chained one."""
    datastore = config["datastore"]
    if "templates" in datastore:
        return ("datastore", "templates")
    for index, child in enumerate(datastore.get("datastores", [])):
        if "templates" in child:
            return ("datastore", "datastores", index, "templates")
    raise KeyError("the repository has no file datastore with file templates")


def templates_config(butler_config: Any, overrides: Mapping[str, str]) -> Any:
    """A copy of ``butler_config`` whose file datastore uses the ``overrides``.

    Args:
        butler_config: A :class:`~lsst.daf.butler.ButlerConfig`, or the repository
            directory or its ``butler.yaml``.
        overrides: Dataset type name → template.

    Raises:
        KeyError: the repository has no file datastore with templates.
        OSError, ValueError: the configuration cannot be read.
    """
    from lsst.daf.butler import ButlerConfig

    source = str(butler_config) if isinstance(butler_config, Path) else butler_config
    config = ButlerConfig(ButlerConfig(source).copy())
    key = _templates_key(config)
    for name, template in overrides.items():
        config[(*key, name)] = template  # a tuple key: names may contain dots
    return config


def write_templated_config(repo: Path, overrides: Mapping[str, str], target: Path) -> Path:
    """Write the repository's configuration with the ``overrides`` merged in to ``target``.

    This is the ``butler.yaml`` of a run under a campaign's file-naming policy: the
    workflow predicts output paths with it and jobs write their outputs with it. It
    still names the repository (``<butlerRoot>`` is replaced by the repository's root,
    :attr:`~skybatch.repository.ButlerRepository.butler_root`, so it works from any
    directory) and each file datastore keeps the name the repository's own
    goes by, which keys the datastore records in quantum graphs.

    Raises:
        KeyError: the repository has no file datastore with templates.
        OSError, ValueError: the configuration cannot be read or written.
    """
    from lsst.daf.butler.repo_relocation import BUTLER_ROOT_TAG, replaceRoot

    from skybatch.repository import resolve_repository

    butler_root = resolve_repository(repo, where=str(repo)).butler_root
    config = templates_config(repo, overrides)
    keys: list[tuple[str | int, ...]] = [("datastore",)]
    children = len(config.get("datastore.datastores", []))
    keys += [("datastore", "datastores", i) for i in range(children)]
    for key in keys:
        child = config[key]
        if "root" in child and "name" not in child:
            # As FileDatastore names itself, from the root before relocation.
            config[(*key, "name")] = f"{str(child['cls']).rsplit('.', 1)[-1]}@{child['root']}"
    for key in config.names():
        value = config[key]
        if isinstance(value, str) and BUTLER_ROOT_TAG in value and not key.endswith("name"):
            config[key] = replaceRoot(value, butler_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    config.dumpToUri(str(target))
    return target


def check_file_templates(overrides: Mapping[str, str], butler_config: Any) -> dict[str, Invalid]:
    """Check the overrides against a repository's configuration; problems by dataset type.

    Each override must pass :func:`check_template`, and the repository's file
    templates with all overrides merged in must load as daf_butler's
    :class:`FileTemplates` (default dimension universe). Only configuration files
    are read, never the registry. A problem with the whole set is keyed ``""``.
    """
    from lsst.daf.butler import DimensionUniverse
    from lsst.daf.butler.datastore.file_templates import FileTemplates

    problems = {name: p for name, t in overrides.items() if (p := check_template(t)) is not None}
    if problems:
        return problems
    try:
        config = templates_config(butler_config, overrides)
        FileTemplates(config[_templates_key(config)], universe=DimensionUniverse())
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        problems[""] = Invalid(
            f"the repository's file templates do not accept the overrides: {exc}",
            "give a repository with a file datastore (its butler.yaml) and valid templates",
        )
    return problems


def unwritten_templates(overrides: Mapping[str, str], pipeline: str) -> dict[str, Invalid]:
    """Overrides for dataset types the pipeline (``PATH#labels``) never writes.

    Such a template would name nothing: a misspelt dataset type, or one the pipeline
    only reads. A pipeline that cannot be loaded gives no answer here (the run reports
    it where it loads the pipeline)."""
    from .checks import listing, load_pipeline_graph, split_pipeline, suggest

    path, labels = split_pipeline(pipeline)
    try:
        graph = load_pipeline_graph(Path(path), labels)
    except Exception:  # pipe_base's errors have no common base; reported later
        return {}
    written = sorted(n for n in graph.dataset_types if graph.producer_of(n) is not None)
    return {
        name: Invalid(
            f"the pipeline writes no dataset type {name!r}: this template would name nothing",
            f"{suggest(name, written)}give a dataset type the pipeline writes: "
            + listing(written, limit=20),
        )
        for name in overrides
        if name.partition(".")[0] not in written
    }


def find_path_collisions(paths: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Paths claimed by more than one dataset: ``{path: [dataset, ...]}``.

    The campaign manager calls this with ``(dataset label, predicted path)`` for every
    output of an expanded step (and of the steps already run, for shared runs) before
    it submits anything; any result is an error naming the template to fix.
    """
    owners: dict[str, list[str]] = defaultdict(list)
    for dataset, path in paths:
        owners[path].append(dataset)
    return {path: names for path, names in owners.items() if len(names) > 1}
