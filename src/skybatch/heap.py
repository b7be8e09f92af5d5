"""Keeping Python's cyclic garbage collector out of graph building and warm workers.

Building a quantum graph creates hundreds of thousands of long-lived objects (data
ids, dataset refs, graph nodes), and importing the LSST middleware as many more.
Every full collection the collector starts meanwhile walks all of them again: for a
~1,000-quantum graph that is ~0.5 s of the ~1.6 s pipe_base spends building and
assembling it, and ~0.2 s of skybatch's workflow building (measured with
``benchmarks/run_overhead.py``). So skybatch

* pauses collection while it imports the middleware and builds a graph and its
  workflow (:func:`collection_paused`), then *freezes* what exists, which moves
  those objects out of the collector's generations: they live as long as the run
  needs them and are never walked again; reference counting still frees them;
* freezes a warm worker's imports before its first job (:func:`freeze_imports`),
  so each job's collections walk only that job's objects.

A long-lived process (the campaign manager) calls :func:`release` after a run so
cyclic garbage frozen with the run's objects can be collected again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collection_paused", "freeze_imports", "release"]


@contextmanager
def collection_paused(*, freeze: bool = True) -> Iterator[None]:
    """Run the block without cyclic collections; then freeze (default) or collect.

    Nested uses are fine: only the outermost one restores the collector's state.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            else:
                gc.collect()
            gc.enable()


def freeze_imports() -> None:
    """Move every object alive now (imported modules, caches) out of collections."""
    gc.collect()
    gc.freeze()


def release() -> None:
    """Undo :func:`collection_paused`'s freeze: frozen objects are collectable again."""
    gc.unfreeze()
