"""The collector pause around graph building: off inside, back on after, no leak."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from skybatch import heap


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_paused_inside_and_frozen_after() -> None:
    before = gc.get_freeze_count()
    with heap.collection_paused():
        assert not gc.isenabled()
        kept = [_Cycle() for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(kept)


def test_nested_pause_restores_only_at_the_outermost() -> None:
    with heap.collection_paused():
        with heap.collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it disabled and left it so
    assert gc.isenabled()


def test_collect_instead_of_freeze_frees_cycles() -> None:
    before = gc.get_freeze_count()
    with heap.collection_paused(freeze=False):
        _Cycle()  # garbage at once, only a collection frees it
    assert gc.get_freeze_count() == before
    assert gc.collect() == 0  # already collected on leaving the block


def test_release_makes_frozen_garbage_collectable() -> None:
    with heap.collection_paused():
        _Cycle()
    heap.release()
    assert gc.get_freeze_count() == 0
    assert gc.collect() >= 1


def test_an_exception_still_restores_the_collector() -> None:
    with pytest.raises(RuntimeError), heap.collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
