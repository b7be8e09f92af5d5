"""Datastore file templates compiled for one dataset type: paths without DatasetRefs.

:meth:`lsst.daf.butler.datastore.file_templates.FileTemplate.format` parses its
template, resolves ``|`` alternates, optional fields and dimension-record look-ups
for every dataset it names, from a :class:`~lsst.daf.butler.DatasetRef` with an
expanded data id. Everything but the values depends on the dataset type alone (the
keys of its data ids, its component, its sky pixelization), so a
:class:`CompiledTemplate` works that part out once and then only formats the values
of each dataset: its data id values (in ``DataCoordinate.full_values`` order), run,
id and the dimension-record attributes the template asks for.

The semantics reproduced are FileTemplate.format's, step by step: ``|`` alternates
(the first whose dimension is in the data id), optional fields ``:?`` (dropped with
the literal before them unless it holds a ``/``), the ``/`` flag (keep slashes in the
value), spaces and slashes replaced in string values, conversions (``!r``), record
look-ups ``dim.field`` (``skypix.field`` through the sky pixelization), the file name
with ``.`` and ``#`` replaced, ``normpath`` and no absolute paths. A template this
module cannot reproduce (or one that FileTemplate.format refuses) raises
:class:`Unsupported` at compilation; the caller then formats with FileTemplate, which
raises its own error where it has one. Callers also compare the first paths of each
dataset type with FileTemplate.format (see :class:`skybatch.graph.expand.DatastorePaths`).
"""

from __future__ import annotations

import os
import string
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsst.daf.butler import DimensionGroup

__all__ = ["CompiledTemplate", "DataIdRecords", "RecordLookup", "Unsupported"]

#: ``lookup(element, attribute, values)``: the attribute of the record of dimension
#: element ``element`` in the expanded data id whose full values are ``values``.
RecordLookup = Callable[[str, str, Sequence[Any]], Any]

_FORMATTER = string.Formatter()
_SPECIALS = frozenset({"run", "id", "datasetType", "component"})

# Kinds of value segments.
_VALUE, _RUN, _ID, _RECORD = range(4)


class Unsupported(Exception):
    """The template cannot be compiled for this dataset type (format it the slow way)."""


class CompiledTemplate:
    """One file template compiled for one dataset type (or component dataset type).

    Args:
        template: The template string (``FileTemplate.template``).
        dimensions: The dataset type's dimensions; values given to :meth:`format`
            are in the order of ``dimensions.data_coordinate_keys``.
        dataset_type: The dataset type name, ``parent.component`` for a component.

    Raises:
        Unsupported: The template needs something not reproduced here, or
            FileTemplate.format would fail for every dataset of this type.
    """

    def __init__(self, template: str, dimensions: DimensionGroup, dataset_type: str) -> None:
        self.template = template
        self.dataset_type = dataset_type
        try:
            self._segments = self._compile(template, dimensions, dataset_type)
        except Unsupported:
            raise
        except Exception as exc:  # whatever FileTemplate.format would raise: let it
            raise Unsupported(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _compile(template: str, dimensions: DimensionGroup, dataset_type: str) -> list[Any]:
        keys = list(dimensions.data_coordinate_keys)
        position = {key: i for i, key in enumerate(keys)}
        name, _, component_text = dataset_type.partition(".")
        component = component_text or None
        # The keys FileTemplate.format puts in its ``fields``, and where values come from.
        sources: dict[str, tuple[int, Any]] = {k: (_VALUE, i) for k, i in position.items()}
        skypix = list(dimensions.skypix)
        skypix_alias = skypix[0] if len(skypix) == 1 else None
        if skypix_alias is not None:
            sources["skypix"] = sources[skypix_alias]
        static: dict[str, str] = {"datasetType": name}
        if component is not None:
            static["component"] = component
        sources["run"] = (_RUN, None)
        sources["id"] = (_ID, None)
        known = set(sources) | set(static)
        extras: set[str] = set()
        used_component = False
        segments: list[Any] = []
        universe = dimensions.universe

        for literal, field_name, format_spec, conversion in _FORMATTER.parse(template):
            if field_name and "|" in field_name:
                alternates = field_name.split("|")
                for alt in alternates:
                    if "." in alt:
                        primary, _ = alt.split(".")
                    else:
                        primary = alt
                    if primary in known:
                        field_name = alt
                        break
                else:
                    field_name = alternates[0]
            if field_name == "component":
                used_component = True
            if format_spec is None:
                segments.append(literal)
                continue
            if field_name is None:
                raise Unsupported("blank field name")
            optional = "?" in format_spec
            format_spec = format_spec.replace("?", "")
            if "." in field_name:
                primary, secondary = field_name.split(".")
                if primary not in extras and primary in known:
                    if primary in _SPECIALS:
                        raise Unsupported(f"record look-up on {primary!r}")
                    record_key = skypix_alias if primary == "skypix" else primary
                    if record_key is None or record_key not in position:
                        raise Unsupported(f"record look-up on {primary!r}")
                    extras.add(primary)
                    sources[primary + "."] = (_RECORD, record_key)
                if primary in extras:
                    element = sources[primary + "."][1]
                    record_class = universe[element].RecordClass
                    if secondary not in record_class.fields.names:
                        raise Unsupported(f"{element} records have no field {secondary!r}")
                    sources[field_name] = (_RECORD, (element, secondary))
                    known.add(field_name)
                elif primary in known:
                    raise Unsupported(f"no records for {field_name!r}")
            value_source: tuple[int, Any] | None = None
            if field_name in static:
                value: Any = static[field_name]
            elif field_name in known:
                value_source = sources[field_name]
            elif optional:
                format_spec = ""
                value = ""
                if "/" not in literal:
                    literal = ""
            else:
                raise Unsupported(f"{field_name!r} is not defined and not optional")
            replace_slash = True
            if "/" in format_spec:
                format_spec = format_spec.replace("/", "")
                replace_slash = False
            if value_source is None:
                text = _format_value(value, format_spec, conversion, replace_slash)
                segments.append(literal + text)
            else:
                kind, where = value_source
                segments.append(literal)
                segments.append((kind, where, format_spec, conversion, replace_slash))
        if component is not None and not used_component:
            raise Unsupported(f"component {component!r} not used by the template")
        # Merge neighbouring literals: only the values are left to format.
        merged: list[Any] = []
        for segment in segments:
            if isinstance(segment, str) and merged and isinstance(merged[-1], str):
                merged[-1] += segment
            elif segment != "":
                merged.append(segment)
        return merged

    @property
    def record_fields(self) -> list[tuple[str, str]]:
        """``(element, attribute)`` of each dimension record look-up."""
        return [s[1] for s in self._segments if isinstance(s, tuple) and s[0] == _RECORD]

    def format(
        self,
        values: Sequence[Any],
        run: str,
        dataset_id: uuid.UUID,
        lookup: RecordLookup | None = None,
    ) -> str:
        """The path FileTemplate.format gives a dataset of this type (no extension).

        Raises:
            LookupError: A record the template reads is missing (``lookup`` raises
                it, or no ``lookup`` was given): format this dataset the slow way.
        """
        out: list[str] = []
        for segment in self._segments:
            if segment.__class__ is str:
                out.append(segment)
                continue
            kind, where, format_spec, conversion, replace_slash = segment
            if kind == _VALUE:
                value = values[where]
            elif kind == _RUN:
                value = run
            elif kind == _ID:
                value = dataset_id
            else:
                if lookup is None:
                    raise LookupError(f"no dimension records for {where[0]}.{where[1]}")
                value = lookup(where[0], where[1], values)
            # _format_value, its usual cases inline
            if format_spec or conversion:
                out.append(_format_value(value, format_spec, conversion, replace_slash))
            elif not isinstance(value, str):
                out.append(format(value, ""))
            elif replace_slash:
                out.append(value.replace(" ", "_").replace("/", "_"))
            else:
                out.append(value.replace(" ", "_"))
        return _finish("".join(out))


def _finish(output: str) -> str:
    """FileTemplate.format's last steps: ``.`` and ``#`` replaced in the file name,
    ``normpath``, no absolute path.

    FileTemplate splits with ``os.path.split`` and joins with ``os.path.join``, which
    only changes the slashes between directory and file name: ``normpath`` makes
    them one slash either way.
    """
    cut = output.rfind("/") + 1
    tail = output[cut:].replace(".", "_").replace("#", "HASH")
    path = os.path.normpath(output[:cut] + tail)
    if path.startswith("/"):
        path = os.path.relpath(path, start="/")
    return path


def _format_value(value: Any, format_spec: str, conversion: str | None, replace_slash: bool) -> str:
    if isinstance(value, str):
        value = value.replace(" ", "_")
        if replace_slash:
            value = value.replace("/", "_")
    if conversion:
        value = _FORMATTER.convert_field(value, conversion)
    return format(value, format_spec)


class DataIdRecords:
    """Dimension records of a graph's data ids, for templates and slow-path refs.

    Args:
        attacher: The graph's ``dimension_data`` (a ``DimensionDataAttacher``), which
            expands data ids as ``build_execution_quanta`` does.
        universe: The dimension universe.
    """

    def __init__(self, attacher: Any, universe: Any) -> None:
        self._attacher = attacher
        self._universe = universe
        self._values: dict[tuple[str, str, tuple[Any, ...]], Any] = {}
        self._lookups: dict[Any, RecordLookup] = {}

    def expanded(self, dimensions: DimensionGroup, values: Sequence[Any]) -> Any:
        """The data id with full ``values``, its dimension records attached."""
        from lsst.daf.butler import DataCoordinate

        data_id = DataCoordinate.from_full_values(dimensions, tuple(values))
        if data_id.hasRecords():  # no dimensions
            return data_id
        (expanded,) = self._attacher.attach(dimensions, [data_id])
        return expanded

    def make_ref(
        self, dataset_type: Any, values: Sequence[Any], run: str, dataset_id: uuid.UUID
    ) -> Any:
        """The DatasetRef with an expanded data id (as a graph's execution quanta
        hold), the dataset type being the one given."""
        from lsst.daf.butler import DatasetRef

        data_id = self.expanded(dataset_type.dimensions, values)
        return DatasetRef(dataset_type, data_id, run=run, id=dataset_id, conform=False)

    def lookup(self, dimensions: DimensionGroup) -> RecordLookup:
        """The record look-up of data ids with these dimensions.

        A record is found by the values of its element's required dimensions, so
        each is attached (and its attribute read) once per build.
        """
        found = self._lookups.get(dimensions)
        if found is not None:
            return found
        keys = list(dimensions.data_coordinate_keys)
        positions: dict[str, tuple[int, ...]] = {}
        cache = self._values

        def lookup(element: str, attribute: str, values: Sequence[Any]) -> Any:
            where = positions.get(element)
            if where is None:
                required = self._universe[element].minimal_group.required
                where = positions[element] = tuple(keys.index(d) for d in required)
            key = (element, attribute, tuple([values[i] for i in where]))
            try:
                return cache[key]
            except KeyError:
                pass
            record = self.expanded(dimensions, values).records[element]
            if record is None or not hasattr(record, attribute):
                raise LookupError(f"no {element} record with {attribute!r}")
            value = cache[key] = getattr(record, attribute)
            return value

        self._lookups[dimensions] = lookup
        return lookup
