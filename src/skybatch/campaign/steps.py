"""The step dependency graph: unique names, known dependencies, no cycles.

These checks run on the validated model and, by the loader, on the raw file data as
well, so a cycle is reported together with every other problem of the file.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from .checks import listing

__all__ = ["StepGraphProblem", "StepSpec", "step_graph_problems", "topological_order"]

StepSpec = tuple[str | None, Sequence[str | None], str | None]
"""``(name, depends_on, select.from_step)`` of one step; ``None`` where not a string."""


@dataclass(frozen=True)
class StepGraphProblem:
    """A problem at ``path`` (``("steps", 2, "depends_on", 0)``)."""

    path: tuple[str | int, ...]
    message: str
    hint: str


def step_graph_problems(steps: Sequence[StepSpec]) -> list[StepGraphProblem]:
    """Every problem of the steps' names and dependencies, in file order."""
    problems: list[StepGraphProblem] = []
    first: dict[str, int] = {}
    for index, (name, _, _) in enumerate(steps):
        if name is None:
            continue
        if name in first:
            problems.append(
                StepGraphProblem(
                    ("steps", index, "name"),
                    f"duplicate step name {name!r} (also steps[{first[name]}])",
                    "give every step its own name",
                )
            )
        else:
            first[name] = index
    edges: dict[str, list[str]] = {}
    for index, (name, depends_on, _) in enumerate(steps):
        known: list[str] = []
        for position, dependency in enumerate(depends_on):
            if dependency is None:
                continue
            where: tuple[str | int, ...] = ("steps", index, "depends_on", position)
            if dependency == name:
                problems.append(
                    StepGraphProblem(where, f"step {name!r} depends on itself", "remove it")
                )
            elif dependency not in first:
                problems.append(
                    StepGraphProblem(
                        where,
                        f"unknown step {dependency!r}",
                        _choose(dependency, [n for n in first if n != name]),
                    )
                )
            else:
                known.append(dependency)
        if name is not None and first.get(name) == index:
            edges[name] = known
    for cycle in _cycles(edges):
        index = first[cycle[0]]
        problems.append(
            StepGraphProblem(
                ("steps", index, "depends_on"),
                "steps depend on each other in a cycle: " + listing([*cycle, cycle[0]], sep=" -> "),
                "remove one of these dependencies",
            )
        )
    reach = _Reach(edges)
    for index, (name, _, from_step) in enumerate(steps):
        if from_step is None or name is None or first.get(name) != index:
            continue
        at: tuple[str | int, ...] = ("steps", index, "select", "from_step")
        if from_step not in first:
            problems.append(
                StepGraphProblem(at, f"unknown step {from_step!r}", _choose(from_step, list(first)))
            )
        elif not reach.depends_on(name, from_step):
            problems.append(
                StepGraphProblem(
                    at,
                    f"step {name!r} selects on the output of {from_step!r} but does not "
                    "depend on it",
                    f"add {from_step} to depends_on (its output must exist first)",
                )
            )
    problems.sort(key=lambda p: p.path[:2])
    return problems


def _choose(name: str, choices: list[str]) -> str:
    from .checks import suggest

    if not choices:
        return "define that step first"
    return f"{suggest(name, choices)}use one of: {listing(choices)}"


class _Reach:
    """Whether one step depends on another, directly or not.

    A direct dependency is one look; otherwise the steps depending on the target are
    found once per target (a walk of the reversed graph), so many steps selecting on
    the output of one step cost one walk, not one each."""

    def __init__(self, edges: dict[str, list[str]]) -> None:
        self.edges = edges
        self.dependants: dict[str, list[str]] = {}
        for step, depends in edges.items():
            for dependency in depends:
                self.dependants.setdefault(dependency, []).append(step)
        self.below: dict[str, set[str]] = {}

    def depends_on(self, name: str, target: str) -> bool:
        if target in self.edges.get(name, ()):
            return True
        if target not in self.below:
            seen: set[str] = set()
            todo = list(self.dependants.get(target, ()))
            while todo:
                current = todo.pop()
                if current not in seen:
                    seen.add(current)
                    todo.extend(self.dependants.get(current, ()))
            self.below[target] = seen
        return name in self.below[target]


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of steps, each starting at its first step.

    A depth-first walk with its own stack (not Python's): a chain of any length is
    fine."""
    order = {name: i for i, name in enumerate(edges)}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []
    seen_members: set[frozenset[str]] = set()
    for root in edges:
        if root in state:
            continue
        path = [root]
        position = {root: 0}
        state[root] = 1
        pending = [iter(edges.get(root, ()))]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                pending.pop()
                done = path.pop()
                del position[done]
                state[done] = 2
            elif state.get(dependency) == 1:
                cycle = path[position[dependency] :]
                members = frozenset(cycle)
                if members not in seen_members:
                    seen_members.add(members)
                    start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                    cycles.append(cycle[start:] + cycle[:start])
            elif dependency not in state:
                state[dependency] = 1
                position[dependency] = len(path)
                path.append(dependency)
                pending.append(iter(edges.get(dependency, ())))
    return cycles


def topological_order(steps: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Step names so that each comes after its dependencies; file order otherwise.

    Of the steps whose dependencies are done, the first in the file comes next (Kahn's
    algorithm with a heap: linear in the number of steps and dependencies)."""
    index = {name: i for i, (name, _) in enumerate(steps)}
    waiting = [len(set(depends_on)) for _, depends_on in steps]
    dependants: dict[str, list[int]] = {}
    for i, (_, depends_on) in enumerate(steps):
        for dependency in set(depends_on):
            if dependency not in index:
                raise ValueError(f"unknown step {dependency!r}")
            dependants.setdefault(dependency, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    done: list[str] = []
    while ready:
        i = heapq.heappop(ready)
        name = steps[i][0]
        done.append(name)
        for j in dependants.get(name, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(done) != len(steps):
        raise ValueError("the steps' dependencies have a cycle")
    return done
