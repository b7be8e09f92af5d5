"""Checks that need the whole, otherwise valid campaign: its pipelines' contents and
its repository's datastore configuration and registry.

The steps' pipelines are loaded with their tasks imported (the task connections say
which dataset types a step produces), and the file template overrides are merged into
the repository's ``butler.yaml`` configuration; the registry is read (never written) by
:mod:`skybatch.campaign.repochecks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import checks
from .config import Campaign
from .naming import check_file_templates
from .policies import Policies
from .sitecheck import site_root_problems

__all__ = ["CrossProblem", "cross_problems"]


@dataclass(frozen=True)
class CrossProblem:
    """A problem at field ``path``; ``at_key``: point at the key rather than the value."""

    path: tuple[str | int, ...]
    problem: checks.Invalid
    at_key: bool = False


def cross_problems(campaign: Campaign) -> list[CrossProblem]:
    """Every problem between the campaign's fields, its pipelines and its repository."""
    from .repochecks import repository_problems

    templates = list(_template_problems(campaign))
    return [
        *templates,
        *_select_problems(campaign),
        *site_root_problems(campaign),
        *_pipeline_problems(campaign, {p.path[-1] for p in templates}),
        *(CrossProblem(path, problem) for path, problem in repository_problems(campaign)),
        *_admission_problems(campaign),
    ]


def _admission_problems(campaign: Campaign) -> Iterator[CrossProblem]:
    from .admission import engine_admission_problems  # jobs the engine can never take

    return engine_admission_problems(campaign)


def _select_problems(campaign: Campaign) -> Iterator[CrossProblem]:
    """The manager reads ``select.where`` itself (it is not a Butler query): check it."""
    from .condition import ConditionError, parse_condition

    for index, step in enumerate(campaign.steps):
        if step.select is None:
            continue
        try:
            parse_condition(step.select.where)
        except ConditionError as exc:
            yield CrossProblem(
                ("steps", index, "select", "where"), checks.Invalid(str(exc), exc.hint)
            )


def _template_problems(campaign: Campaign) -> Iterator[CrossProblem]:
    if not campaign.file_templates:
        return
    for name, problem in check_file_templates(campaign.file_templates, campaign.repo).items():
        path: tuple[str | int, ...] = ("file_templates", name) if name else ("file_templates",)
        yield CrossProblem(path, problem)


def _pipeline_problems(campaign: Campaign, bad_templates: set[Any]) -> Iterator[CrossProblem]:
    produced: dict[str, set[str]] = {}
    labels: dict[str, set[str]] = {}
    graphs: list[Any] = []
    for index, step in enumerate(campaign.steps):
        try:
            graph = checks.load_pipeline_graph(step.pipeline_path, step.task_labels)
        except (ImportError, ValueError, LookupError, TypeError, AttributeError) as exc:
            yield CrossProblem(
                ("steps", index, "pipeline"),
                checks.Invalid(
                    f"cannot load the tasks of pipeline {step.pipeline_uri}: {exc}",
                    "make the tasks importable (install their package or set PYTHONPATH); "
                    "`pipetask build -p PIPELINE` shows the same problem",
                ),
            )
            continue
        produced[step.name] = {
            name for name in graph.dataset_types if graph.producer_of(name) is not None
        }
        labels[step.name] = set(graph.tasks)
        graphs.append(graph)

    if len(graphs) == len(campaign.steps):  # else a pipeline is reported above
        yield from _template_dimension_problems(campaign, graphs, bad_templates)
    all_produced = set().union(*produced.values()) if produced else set()
    all_labels = set().union(*labels.values()) if labels else set()
    yield from _policy_problems(("policies",), campaign.policies, all_produced, all_labels, "any")
    for index, step in enumerate(campaign.steps):
        if step.name not in produced:
            continue  # its pipeline is reported above
        yield from _policy_problems(
            ("steps", index, "policies"),
            step.policies,
            produced[step.name],
            labels[step.name],
            "this",
        )
        select = step.select
        if select is None or select.from_step not in produced:
            continue
        made = produced[select.from_step]
        if select.dataset_type not in made:
            yield CrossProblem(
                ("steps", index, "select", "dataset_type"),
                checks.Invalid(
                    f"step {select.from_step!r} does not produce {select.dataset_type!r}",
                    f"{checks.suggest(select.dataset_type, sorted(made))}use a dataset type "
                    f"that {select.from_step} writes: {checks.listing(sorted(made))}",
                ),
            )


def _template_dimension_problems(
    campaign: Campaign, graphs: list[Any], bad_templates: set[Any]
) -> Iterator[CrossProblem]:
    """Each override must name a dataset type a step writes and use all its dimensions.

    The dimensions come from the tasks' connections in the default dimension universe
    (no database is opened); expansion checks again against the repository's."""
    if not campaign.file_templates:
        return
    from lsst.daf.butler import DimensionUniverse
    from lsst.daf.butler.datastore.file_templates import (
        FileTemplate,
        FileTemplateValidationError,
    )

    universe = DimensionUniverse()
    written: dict[str, Any] = {}
    for graph in graphs:
        try:
            graph.resolve(dimensions=universe)
        except (ValueError, LookupError, TypeError):
            return  # the expansion reports what stops the graph from resolving
        for name, node in graph.dataset_types.items():
            if graph.producer_of(name) is not None:
                written[name] = node.dataset_type
    for name, template in campaign.file_templates.items():
        if name in bad_templates:
            continue
        dataset_type = written.get(name.partition(".")[0])
        if dataset_type is None:
            yield CrossProblem(
                ("file_templates", name),
                checks.Invalid(
                    f"no step writes dataset type {name!r}: this template would name nothing",
                    f"{checks.suggest(name, sorted(written))}give a dataset type a step "
                    "writes, or remove the template",
                ),
                at_key=True,
            )
            continue
        try:
            FileTemplate(template).validateTemplate(dataset_type)
        except FileTemplateValidationError as exc:
            dims = ", ".join(sorted(dataset_type.dimensions.required))
            yield CrossProblem(
                ("file_templates", name),
                checks.Invalid(
                    f"file template {template!r} cannot name every {name} uniquely: {exc}",
                    f"use every dimension of {name} in the template: {dims}",
                ),
            )


def _policy_problems(
    prefix: tuple[str | int, ...],
    policies: Policies,
    produced: set[str],
    labels: set[str],
    which: str,
) -> Iterator[CrossProblem]:
    for position, name in enumerate(policies.intermediates):
        if name not in produced:
            yield CrossProblem(
                (*prefix, "intermediates", position),
                checks.Invalid(
                    f"{which} step's pipeline does not produce {name!r}"
                    if which == "this"
                    else f"no step produces {name!r}",
                    f"{checks.suggest(name, sorted(produced))}intermediates are dataset types "
                    "the pipelines write",
                ),
            )
    for position, name in enumerate(policies.catalogs.dataset_types or ()):
        if name not in produced:
            yield CrossProblem(
                (*prefix, "catalogs", "dataset_types", position),
                checks.Invalid(
                    f"no step writes dataset type {name!r}: this catalog would load nothing",
                    f"{checks.suggest(name, sorted(produced))}name a table the pipelines write",
                ),
            )
    for label in policies.resources:
        if label not in labels:
            yield CrossProblem(
                (*prefix, "resources", label),
                checks.Invalid(
                    f"no task labelled {label!r} in "
                    + ("this step" if which == "this" else "any step"),
                    f"{checks.suggest(label, sorted(labels))}use a task label: "
                    + checks.listing(sorted(labels)),
                ),
                at_key=True,
            )
