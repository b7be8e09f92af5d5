"""Seed step 1 (campaign config): reading YAML with limits, before any object is built.

A YAML file can ask for far more than it is: aliases that expand exponentially
("billion laughs"), an alias inside the value it names (infinitely deep), or nesting
deep enough to exhaust Python's stack. :class:`GuardedLoader` composes the file into
nodes as PyYAML's ``SafeLoader`` does, but counts while it composes: the nesting
depth, the aliases and the number of values once aliases are expanded
(:mod:`skybatch.limits`). Crossing a limit raises :class:`YamlLimitError` at the
place in the file where it happens, before any Python object is built; an alias to a
value that is still being composed (a recursive alias) is refused the same way.

:func:`compose` reads the events with libyaml when PyYAML has it (several times faster
on campaigns of thousands of steps) and composes them in Python, with the limits; a
file libyaml refuses is read again by PyYAML's own parser, whose messages say more.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.resolver import Resolver

from skybatch import limits

__all__ = ["GuardedLoader", "YamlLimitError", "check_file_size", "compose"]


class YamlLimitError(Exception):
    """A YAML file crosses a limit; ``mark`` (0-based, PyYAML's) says where."""

    def __init__(self, message: str, hint: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.mark = mark


def check_file_size(path: Path, limit: int = limits.MAX_CAMPAIGN_FILE_BYTES) -> None:
    """Raise :class:`YamlLimitError` if the file ``path`` is larger than ``limit`` bytes."""
    size = path.stat().st_size
    if size > limit:
        raise YamlLimitError(
            f"the file is {size:,} bytes, more than the {limit:,} a campaign file may have",
            "split the campaign into several campaigns, or check that this is the right file",
            None,
        )


class _Guard(Composer):
    """A composer that enforces depth, alias and size limits (mixed into loaders)."""

    def _start_guard(self, max_depth: int, max_aliases: int, max_nodes: int) -> None:
        self.max_depth = max_depth
        self.max_aliases = max_aliases
        self.max_nodes = max_nodes
        self._depth = 0
        self._aliases = 0
        self._nodes = 0  # values so far, aliases expanded
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size
        self._open: set[str] = set()  # anchors whose value is being composed

    peek_event: Any  # from the parser it is mixed with

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._alias(event, parent, index)
        anchor = event.anchor if isinstance(event, ScalarEvent | CollectionStartEvent) else None
        collection = isinstance(event, CollectionStartEvent)
        if collection:
            self._depth += 1
            if self._depth > self.max_depth:
                raise YamlLimitError(
                    f"values are nested more than {self.max_depth} levels deep",
                    "a campaign needs a few levels: check the brackets and indentation",
                    event.start_mark,
                )
            if anchor is not None:
                self._open.add(anchor)
        before = self._nodes
        self._count(1, event.start_mark)
        node = Composer.compose_node(self, parent, index)
        if collection:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)
        if anchor is not None:
            self._sizes[id(node)] = self._nodes - before
        return node

    def _alias(self, event: AliasEvent, parent: Any, index: Any) -> Any:
        if event.anchor in self._open:
            raise YamlLimitError(
                f"alias *{event.anchor} is inside the value it names (a recursive alias)",
                f"an alias can only repeat a finished value: move *{event.anchor} out of "
                f"&{event.anchor}",
                event.start_mark,
            )
        self._aliases += 1
        if self._aliases > self.max_aliases:
            raise YamlLimitError(
                f"the file has more than {self.max_aliases:,} aliases",
                "write the values out, or split the campaign",
                event.start_mark,
            )
        node = Composer.compose_node(self, parent, index)
        self._count(self._sizes.get(id(node), 1), event.start_mark)
        return node

    def _count(self, added: int, mark: Any) -> None:
        self._nodes += added
        if self._nodes > self.max_nodes:
            raise YamlLimitError(
                f"the file has more than {self.max_nodes:,} values once its aliases are expanded",
                "check the aliases (*name) here: each one repeats its whole value",
                mark,
            )


class GuardedLoader(_Guard, yaml.SafeLoader):
    """``yaml.SafeLoader`` whose composer enforces depth, alias and size limits."""

    def __init__(
        self,
        stream: str,
        *,
        max_depth: int = limits.MAX_YAML_DEPTH,
        max_aliases: int = limits.MAX_YAML_ALIASES,
        max_nodes: int = limits.MAX_YAML_NODES,
    ) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_guard(max_depth, max_aliases, max_nodes)


def compose(
    text: str,
    *,
    max_depth: int = limits.MAX_YAML_DEPTH,
    max_aliases: int = limits.MAX_YAML_ALIASES,
    max_nodes: int = limits.MAX_YAML_NODES,
) -> tuple[yaml.Node | None, Any]:
    """The single document of ``text`` as nodes, and the loader that can construct them
    (a PyYAML ``SafeConstructor`` and ``Resolver``).

    Raises:
        YamlLimitError: a limit is crossed (see the module docstring).
        yaml.YAMLError: the text is not valid YAML (PyYAML's message).
    """
    limits_ = {"max_depth": max_depth, "max_aliases": max_aliases, "max_nodes": max_nodes}
    fast = _fast_loader()
    if fast is not None:
        loader = fast(text, **limits_)
        try:
            return loader.get_single_node(), loader
        except YamlLimitError:
            raise
        except yaml.YAMLError:
            pass  # read again below: PyYAML's parser explains it better
        finally:
            loader.dispose()
    slow = GuardedLoader(text, **limits_)
    try:
        return slow.get_single_node(), slow
    finally:
        slow.dispose()


@functools.cache
def _fast_loader() -> Any:
    """A guarded loader whose events come from libyaml, if PyYAML was built with it."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return None

    class _Fast(_Guard, CParser, SafeConstructor, Resolver):
        get_single_node = Composer.get_single_node
        compose_document = Composer.compose_document
        check_node = Composer.check_node
        get_node = Composer.get_node

        def __init__(self, stream: str, *, max_depth: int, max_aliases: int, max_nodes: int):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_guard(max_depth, max_aliases, max_nodes)

        def compose_scalar_node(self, anchor: Any) -> Any:
            node = Composer.compose_scalar_node(self, anchor)
            if node.style == "":  # libyaml's plain style; PyYAML's is None
                node.style = None
            return node

    return _Fast
