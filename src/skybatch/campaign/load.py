"""Load and validate a campaign file, reporting every problem with its file and line.

:func:`load_campaign` reads the YAML (with ``include`` and ``${VAR}``, see
:mod:`skybatch.campaign.source`), validates it with the pydantic models of
:mod:`skybatch.campaign.config` and maps each pydantic error location back to the
line and column where the field was written. Checks that need the whole campaign
(pipelines' contents, the repository's file templates, collections and dimensions) run
once the rest is valid. Nothing is written: the repository is opened read-only and no
skybatch database is opened. Loading the pipelines imports their tasks and runs their
``config: python:`` blocks (pipe_base does), so campaign files and pipelines are code.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

from .config import STEP_GRAPH_ERROR, Campaign, CampaignContext
from .crosschecks import cross_problems
from .errors import CampaignConfigError, Problem
from .fields import CAMPAIGN_ERROR
from .source import Source, SourceError, format_path, read_source
from .steps import StepSpec, step_graph_problems

__all__ = ["load_campaign", "validate_campaign_data"]

FieldPath = tuple[str | int, ...]

#: Fields holding file paths; relative ones are relative to the file they are written in.
_PATH_FIELDS: tuple[FieldPath, ...] = (("repo",), ("refcat", "database"), ("site", "root"))
_STEP_PATH_FIELDS = ("pipeline",)

_SCHEMA_HINT = "`skybatch campaign schema` describes every field"

#: Where the engine's own settings are; their fields are those of its settings model.
_ENGINE_SETTINGS: FieldPath = ("engine", "settings")


def load_campaign(path: Path, environ: Mapping[str, str] | None = None) -> Campaign:
    """Read and validate the campaign file ``path``.

    Args:
        path: The campaign YAML file.
        environ: Variables for ``${VAR}`` (default: the process environment).

    Raises:
        CampaignConfigError: the file is invalid; every problem found is listed.
    """
    from skybatch.heap import collection_paused

    path = Path(path)
    # A campaign of thousands of steps is hundreds of thousands of objects: cyclic
    # collections while they are built would walk them again and again.
    with collection_paused(freeze=False):
        try:
            data, source = read_source(path, environ)
        except SourceError as exc:
            raise CampaignConfigError(path, _sorted(path, exc.problems)) from None
        return validate_campaign_data(data, source)


def validate_campaign_data(data: Any, source: Source) -> Campaign:
    """Validate campaign ``data`` read from ``source``; see :func:`load_campaign`."""
    data = _anchor_relative_paths(data, source)
    problems = [_graph_problem(p, source) for p in step_graph_problems(_raw_steps(data))]
    context = CampaignContext(base_dir=source.file.parent.absolute())
    try:
        campaign = Campaign.model_validate(data, context=context)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] != STEP_GRAPH_ERROR:  # found on the raw data above
                problems.append(_error_problem(error, data, source))
        raise CampaignConfigError(source.file, _sorted(source.file, problems)) from None
    if problems:  # cannot happen: the model runs the same step checks
        raise CampaignConfigError(source.file, _sorted(source.file, problems))
    for cross in cross_problems(campaign):
        mark = source.key_mark(cross.path) if cross.at_key else source.value_mark(cross.path)
        problems.append(
            Problem(
                mark.file,
                mark.line,
                mark.column,
                format_path(cross.path),
                cross.problem.message,
                cross.problem.hint,
            )
        )
    if problems:
        raise CampaignConfigError(source.file, _sorted(source.file, problems))
    return campaign


def _sorted(main: Path, problems: Sequence[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(
        unique,
        key=lambda p: (p.file != main, str(p.file), p.line or 0, p.column or 0),
    )


def _anchor_relative_paths(data: Any, source: Source) -> Any:
    """Make relative paths written in an included file relative to that file."""
    if not isinstance(data, dict):
        return data
    main_dir = source.file.parent.absolute()
    fields: list[FieldPath] = list(_PATH_FIELDS)
    steps = data.get("steps")
    if isinstance(steps, list):
        fields += [("steps", i, name) for i in range(len(steps)) for name in _STEP_PATH_FIELDS]
    for path in fields:
        container: Any = data
        for part in path[:-1]:
            container = _child(container, part)
        last = path[-1]
        if not isinstance(container, dict) or not isinstance(container.get(last), str):
            continue
        value = container[last]
        if path not in source.marks or Path(value).expanduser().is_absolute() or "://" in value:
            continue  # absolute, or a URL (file://, postgresql://)
        if path == ("repo",) and _is_index_label(value):
            continue
        written_in = source.marks[path][1].file.parent.absolute()
        if written_in != main_dir:
            container[last] = str(written_in / value)
    return data


def _is_index_label(value: str) -> bool:
    """Whether ``value`` is a label of the Butler repository index (which the Butler
    looks up before taking it as a path)."""
    from lsst.daf.butler import ButlerRepoIndex

    return value in ButlerRepoIndex.get_known_repos()


def _child(container: Any, part: str | int) -> Any:
    if isinstance(container, dict) and isinstance(part, str):
        return container.get(part)
    if isinstance(container, list) and isinstance(part, int) and part < len(container):
        return container[part]
    return None


def _raw_steps(data: Any) -> list[StepSpec]:
    """``(name, depends_on, from_step)`` of each step as written, whatever its shape."""
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        return []
    out: list[StepSpec] = []
    for step in steps:
        step = step if isinstance(step, dict) else {}
        name = step.get("name")
        depends = step.get("depends_on")
        select = step.get("select")
        from_step = select.get("from_step") if isinstance(select, dict) else None
        out.append(
            (
                name if isinstance(name, str) else None,
                [d if isinstance(d, str) else None for d in depends]
                if isinstance(depends, list)
                else [],
                from_step if isinstance(from_step, str) else None,
            )
        )
    return out


def _graph_problem(problem: Any, source: Source) -> Problem:
    mark = source.value_mark(problem.path)
    return Problem(
        mark.file, mark.line, mark.column, format_path(problem.path), problem.message, problem.hint
    )


def _error_problem(error: Mapping[str, Any], data: Any, source: Source) -> Problem:
    """Turn one pydantic error into a problem at the place it was written."""
    loc = tuple(error["loc"])
    kind = error["type"]
    matched, missing_key = _match(data, loc, kind)
    shown = (*matched, missing_key) if missing_key is not None else matched
    on_key = kind in ("missing", "extra_forbidden") or "[key]" in loc
    mark = source.key_mark(matched) if on_key else source.value_mark(matched)
    message, hint = _describe(error, loc, shown, data)
    return Problem(mark.file, mark.line, mark.column, format_path(shown), message, hint)


def _match(data: Any, loc: tuple[Any, ...], kind: str) -> tuple[FieldPath, str | None]:
    """The part of ``loc`` that exists in ``data``, and the missing key of a ``missing``.

    Segments that are not in the data are union tags (``by``, ``max_ids``) or the
    missing field itself; they are skipped.
    """
    matched: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
            matched.append(part)
        elif kind == "missing" and index == len(loc) - 1 and isinstance(part, str):
            return tuple(matched), part
    return tuple(matched), None


def _describe(
    error: Mapping[str, Any], loc: tuple[Any, ...], shown: FieldPath, data: Any
) -> tuple[str, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == CAMPAIGN_ERROR:
        return str(ctx.get("message", error["msg"])), str(ctx.get("hint", _SCHEMA_HINT))
    field_name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1], data)
        from .checks import listing, suggest

        hint = "remove it"
        if allowed:
            hint = f"{suggest(str(field_name), allowed)}fields allowed here: {listing(allowed)}"
        return f"unknown field {field_name!r}", hint
    if kind == "missing":
        description = _description(loc, data)
        what = f" ({description})" if description else ""
        return f"missing required field {field_name!r}", f"add `{field_name}:`{what}"
    message = re.sub(r" or instance of \w+", "", str(error["msg"]))
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        message += f", got {value!r}"
    description = _description(loc, data)
    if kind == "literal_error" and "expected" in ctx:
        hint = f"use {ctx['expected']}"
    elif description:
        hint = f"fix the value ({_field_name(shown)}: {description})"
    else:
        hint = f"fix the value; {_SCHEMA_HINT}"
    return message[:1].lower() + message[1:], hint


def _field_name(path: FieldPath) -> str:
    names = [part for part in path if isinstance(part, str)]
    return names[-1] if names else "value"


def _allowed_fields(loc: tuple[Any, ...], data: Any) -> list[str]:
    model = _type_at(loc, data)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _description(loc: tuple[Any, ...], data: Any) -> str | None:
    """The description of the model field at ``loc`` (or of its nearest model field)."""
    for length in range(len(loc), 0, -1):
        parent = _type_at(loc[: length - 1], data)
        name = loc[length - 1]
        if isinstance(parent, type) and issubclass(parent, BaseModel) and isinstance(name, str):
            field = parent.model_fields.get(name)
            if field is not None:
                return field.description
    return None


def _type_at(loc: tuple[Any, ...], data: Any) -> Any:
    """The type at ``loc`` in a campaign; below ``engine.settings``, in the settings
    model of the engine the campaign names."""
    if loc[: len(_ENGINE_SETTINGS)] == _ENGINE_SETTINGS:
        model = _engine_settings_model(data)
        if model is not None:
            return _annotation_at(model, loc[len(_ENGINE_SETTINGS) :])
    return _annotation_at(Campaign, loc)


def _engine_settings_model(data: Any) -> type[BaseModel] | None:
    """The settings model of the engine named in the raw campaign ``data``, if any."""
    from skybatch.engines.errors import EngineConfigError
    from skybatch.engines.registry import EngineRegistry

    engine = data.get("engine") if isinstance(data, dict) else None
    name = engine.get("name", "local") if isinstance(engine, dict) else "local"
    if not isinstance(name, str):
        return None
    try:
        return EngineRegistry.default().settings_model(name)
    except EngineConfigError:
        return None


def _annotation_at(annotation: Any, loc: Sequence[Any]) -> Any:
    """The type at ``loc`` below ``annotation`` (following models, lists, dicts, unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _annotation_at(typing.get_args(annotation)[0], loc)
    if not loc:
        return annotation
    part, rest = loc[0], loc[1:]
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        for member in members:  # a tagged union: the tag names the member
            meta = getattr(member, "__metadata__", ())
            if any(isinstance(m, Tag) and m.tag == part for m in meta):
                return _annotation_at(member, rest)
        for member in members:
            found = _annotation_at(member, loc)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else _annotation_at(field.annotation, rest)
    if origin is list and isinstance(part, int):
        return _annotation_at(typing.get_args(annotation)[0], rest)
    if origin is dict and isinstance(part, str):
        return _annotation_at(typing.get_args(annotation)[1], rest)
    return None
