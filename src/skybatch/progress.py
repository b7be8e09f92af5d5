"""Progress display shared by long-running commands (rich progress bars on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: ``bar(description, total)`` opens a bar and yields ``advance()``.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[], None]]]


def make_progress(
    console: Console | None = None, transient: bool = False, disable: bool = False
) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=transient,
        disable=disable,
    )


def rich_bars(console: Console | None = None) -> ProgressFactory:
    """A factory of rich progress bars, one per call, each closed when its block ends."""

    @contextmanager
    def bar(description: str, total: int) -> Iterator[Callable[[], None]]:
        with make_progress(console) as progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task)

    return bar


@contextmanager
def no_bars(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress factory that shows nothing (library use, tests)."""
    yield lambda: None
