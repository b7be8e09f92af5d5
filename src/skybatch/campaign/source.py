"""Reading campaign YAML: line numbers, ``${VAR}`` substitution and ``include``.

:func:`read_source` turns a campaign file into plain data (dicts, lists, scalars) plus
a :class:`Source` that knows, for every field path, in which file, line and column its
key and its value were written, so validation errors can point at them.

- **Line numbers**: the file is composed into YAML nodes (which carry marks) and
  converted by hand; duplicate keys, which YAML would silently resolve to the last
  one, are reported.
- **${VAR}** and **${VAR:-default}** are replaced by environment variables in every
  scalar *value* (not in keys or comments) before the value is typed, so
  ``workers: ${WORKERS:-4}`` is the integer 4. Substituting per scalar instead of in
  the raw text keeps every line number right and cannot inject YAML structure.
  ``$${`` writes a literal ``${``. A variable that is unset and has no default is an
  error naming the file and line.
- **include**: a top-level ``include: [site.yaml, ...]`` lists files (relative to the
  including file) that are merged first, in order; the including file wins. Mappings
  merge key by key, recursively; lists and scalars are replaced as a whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem
from .yamlguard import YamlLimitError, check_file_size, compose

__all__ = ["INCLUDE_KEY", "Mark", "Source", "SourceError", "format_path", "read_source"]

INCLUDE_KEY = "include"

FieldPath = tuple[str | int, ...]

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Mark:
    """A place in a file; line and column are 1-based."""

    file: Path
    line: int
    column: int

    @classmethod
    def of(cls, file: Path, mark: yaml.Mark) -> Mark:
        return cls(file, mark.line + 1, mark.column + 1)


@dataclass
class Source:
    """Where each field of the merged campaign data was written.

    ``marks[path] = (key mark, value mark)``; the key mark is ``None`` for list items
    and the document itself.
    """

    file: Path
    marks: dict[FieldPath, tuple[Mark | None, Mark]] = field(default_factory=dict)

    def key_mark(self, path: FieldPath) -> Mark:
        """Where the key of ``path`` was written (its value's place for list items)."""
        key, value = self._nearest(path)
        return key or value

    def value_mark(self, path: FieldPath) -> Mark:
        """Where the value of ``path`` (or of its nearest written parent) starts."""
        return self._nearest(path)[1]

    def _nearest(self, path: FieldPath) -> tuple[Mark | None, Mark]:
        for length in range(len(path), -1, -1):
            found = self.marks.get(path[:length])
            if found is not None:
                return found
        return None, Mark(self.file, 1, 1)


class SourceError(Exception):
    """Reading a campaign file failed; :attr:`problems` says where and why."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def format_path(path: FieldPath) -> str:
    """``("steps", 1, "split", "by")`` → ``steps[1].split.by``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def read_source(path: Path, environ: Mapping[str, str] | None = None) -> tuple[Any, Source]:
    """Read the campaign file ``path`` with its includes; return its data and marks.

    Raises:
        SourceError: unreadable files, YAML syntax errors, duplicate keys, unset
            variables, bad or cyclic includes. Every problem found is listed.
    """
    reader = _Reader(dict(os.environ) if environ is None else dict(environ))
    data, marks = reader.read(Path(path), (), None)
    if reader.problems:
        raise SourceError(reader.problems)
    return data, Source(Path(path), marks)


Marks = dict[FieldPath, tuple[Mark | None, Mark]]


class _Reader:
    def __init__(self, environ: dict[str, str]):
        self.environ = environ
        self.problems: list[Problem] = []

    def problem(self, mark: Mark, path: FieldPath, message: str, hint: str) -> None:
        self.problems.append(
            Problem(mark.file, mark.line, mark.column, format_path(path), message, hint)
        )

    def read(self, file: Path, stack: tuple[Path, ...], at: Mark | None) -> tuple[Any, Marks]:
        try:
            check_file_size(file)
            text = file.read_text(encoding="utf-8")
        except YamlLimitError as exc:
            self.problems.append(Problem(file, None, None, "", exc.message, exc.hint))
            return {}, {}
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if at is None:
                hint = "give the path of a readable campaign YAML file"
                self.problems.append(Problem(file, None, None, "", f"cannot read: {reason}", hint))
            else:
                hint = "check the file (includes are relative to the including file)"
                self.problem(at, (INCLUDE_KEY,), f"cannot read {file}: {reason}", hint)
            return {}, {}
        try:
            node, loader = compose(text)
        except YamlLimitError as exc:
            place = exc.mark
            line, column = (place.line + 1, place.column + 1) if place else (None, None)
            self.problems.append(Problem(file, line, column, "", exc.message, exc.hint))
            return {}, {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            detail = exc.problem or exc.context or "syntax error"
            if exc.context and exc.problem:
                started = exc.context_mark
                since = (
                    f" (from line {started.line + 1}, column {started.column + 1})"
                    if started
                    else ""
                )
                detail = f"{exc.context}{since}: {exc.problem}"
            self.problems.append(
                Problem(
                    file,
                    mark.line + 1 if mark else None,
                    mark.column + 1 if mark else None,
                    "",
                    f"invalid YAML: {detail}",
                    "fix the YAML syntax (indentation, quotes, colons) at this place",
                )
            )
            return {}, {}
        except yaml.YAMLError as exc:
            self.problems.append(
                Problem(file, None, None, "", f"invalid YAML: {exc}", "fix the YAML syntax")
            )
            return {}, {}
        if node is None:
            self.problems.append(
                Problem(file, 1, 1, "", "the file is empty", "write the campaign as a mapping")
            )
            return {}, {}
        marks: Marks = {}
        data = self.convert(file, loader, node, (), None, marks)
        if not isinstance(data, dict):
            self.problem(
                Mark.of(file, node.start_mark),
                (),
                f"the file holds a {type(data).__name__}, not a mapping",
                "write the campaign as `key: value` lines (name:, repo:, steps:, ...)",
            )
            return {}, {}
        return self.includes(file, data, marks, (*stack, file.resolve()))

    def includes(
        self, file: Path, data: dict[str, Any], marks: Marks, stack: tuple[Path, ...]
    ) -> tuple[Any, Marks]:
        if INCLUDE_KEY not in data:
            return data, marks
        names = data.pop(INCLUDE_KEY)
        include_marks = {p: m for p, m in marks.items() if p[:1] == (INCLUDE_KEY,)}
        for p in include_marks:
            del marks[p]
        here = include_marks[(INCLUDE_KEY,)]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            self.problem(
                here[1],
                (INCLUDE_KEY,),
                "include must be a list of file names",
                "write e.g. `include: [site.yaml]`",
            )
            return data, marks
        merged: Any = {}
        merged_marks: Marks = {}
        for index, name in enumerate(names):
            mark = include_marks[(INCLUDE_KEY, index)][1]
            target = (file.parent / name) if not Path(name).is_absolute() else Path(name)
            if target.resolve() in stack:
                chain = " -> ".join(str(p) for p in (*stack, target.resolve()))
                self.problem(
                    mark,
                    (INCLUDE_KEY, index),
                    f"include cycle: {chain}",
                    "remove one of the includes",
                )
                continue
            if not target.is_file():
                self.problem(
                    mark,
                    (INCLUDE_KEY, index),
                    f"included file {name} does not exist (looked for {target})",
                    "fix the name; includes are relative to the including file",
                )
                continue
            included, included_marks = self.read(target, stack, mark)
            merged, merged_marks = merge(merged, merged_marks, included, included_marks)
        return merge(merged, merged_marks, data, marks)

    def convert(
        self,
        file: Path,
        loader: Any,
        node: yaml.Node,
        path: FieldPath,
        key_mark: Mark | None,
        marks: Marks,
    ) -> Any:
        marks[path] = (key_mark, Mark.of(file, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            own = {id(key_node) for key_node, _ in node.value}
            loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor) come first
            result: dict[str, Any] = {}
            merged: set[str] = set()
            for key_node, value_node in node.value:
                key_at = Mark.of(file, key_node.start_mark)
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(key_at, path, "a key must be a plain name", "write `name: value`")
                    continue
                key = str(key_node.value)
                if id(key_node) not in own:
                    merged.add(key)
                elif key in result and key not in merged:
                    first = marks[(*path, key)][1]
                    self.problem(
                        key_at,
                        (*path, key),
                        f"duplicate key {key!r} (also on line {first.line})",
                        "keep one of them",
                    )
                    continue
                else:
                    merged.discard(key)  # written here: it overrides a merged value
                result[key] = self.convert(file, loader, value_node, (*path, key), key_at, marks)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [
                self.convert(file, loader, item, (*path, i), None, marks)
                for i, item in enumerate(node.value)
            ]
        assert isinstance(node, yaml.ScalarNode)
        return self.scalar(file, loader, node, path)

    def scalar(self, file: Path, loader: Any, node: yaml.ScalarNode, path: FieldPath) -> Any:
        text = str(node.value)
        if "$" in text:
            text = self.substitute(file, node, path, text)
            if node.style is None:  # plain scalars are typed by their (new) text
                tag = loader.resolve(yaml.ScalarNode, text, (True, False))
            else:
                tag = node.tag
            node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
        try:
            return loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            return text  # e.g. an impossible date like 2026-13-45: validation reports it

    def substitute(self, file: Path, node: yaml.ScalarNode, path: FieldPath, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            if value is not None:
                return value
            if default is not None:
                return default
            mark = _mark_in_scalar(file, node, match.start())
            self.problem(
                mark,
                path,
                f"environment variable {name} is not set",
                f"set {name}, or give a default as ${{{name}:-value}}",
            )
            return ""

        return _VAR.sub(replace, text)


def _mark_in_scalar(file: Path, node: yaml.ScalarNode, offset: int) -> Mark:
    """Best estimate of where character ``offset`` of a scalar's value was written."""
    start = node.start_mark
    before = str(node.value)[:offset]
    if node.style in ("|", ">"):  # block scalars start on the next line
        return Mark(file, start.line + 2 + before.count("\n"), start.column + 1)
    if "\n" in before:
        return Mark(file, start.line + 1 + before.count("\n"), 1)
    quote = 1 if node.style in ("'", '"') else 0
    return Mark(file, start.line + 1, start.column + 1 + quote + offset)


def merge(base: Any, base_marks: Marks, over: Any, over_marks: Marks) -> tuple[Any, Marks]:
    """Deep-merge ``over`` onto ``base``: mappings key by key, anything else replaced."""
    data = _merge_data(base, over)
    marks: Marks = {p: m for p, m in base_marks.items() if _survives(p, over)}
    marks.update(over_marks)
    return data, marks


def _merge_data(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for key, value in over.items():
            result[key] = _merge_data(base[key], value) if key in base else value
        return result
    return over


def _survives(path: FieldPath, over: Any) -> bool:
    """Whether ``base``'s field ``path`` is still in the merge with ``over``."""
    current = over
    for part in path:
        if not isinstance(current, dict):
            return False  # replaced as a whole
        if part not in current:
            return True
        current = current[part]
    return not path  # the path itself is overwritten (its mark comes from over)
