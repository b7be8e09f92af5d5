"""Which runs' jobs get the engine's free slots (skybatch.run.pool.allocate): priority,
then fairness between shares (campaigns), then age; share limits hold."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from skybatch.run.context import RunOptions
from skybatch.run.pool import PoolRun, allocate


@dataclass
class _Ready:
    n_ready: int


@dataclass
class _Entry:
    run: PoolRun
    seq: int
    scheduler: _Ready


def _entry(
    key: str,
    seq: int,
    ready: int,
    *,
    share: Hashable = "a",
    priority: tuple[int, ...] = (0, 0),
    limit: int | None = None,
) -> _Entry:
    options = RunOptions(repo=Path("/repo"), pipeline="p.yaml", inputs=[], output_run=key)
    run = PoolRun(key, options, share=share, priority=priority, share_limit=limit)
    return _Entry(run, seq, _Ready(ready))


def test_higher_priority_takes_the_slots_first() -> None:
    low = _entry("low", 1, 5, share="a")
    high = _entry("high", 2, 3, share="b", priority=(10, 0))
    assert allocate(4, [low, high], {}) == {"high": 3, "low": 1}


def test_step_priority_before_campaign_priority() -> None:
    campaign = _entry("campaign", 1, 5, share="a", priority=(0, 9))
    step = _entry("step", 2, 5, share="b", priority=(1, 0))
    assert allocate(3, [campaign, step], {}) == {"step": 3}


def test_equal_priorities_share_the_slots_between_campaigns() -> None:
    a1 = _entry("a1", 1, 10, share="a")
    a2 = _entry("a2", 2, 10, share="a")
    b1 = _entry("b1", 3, 10, share="b")
    # Campaign a already has 2 jobs in the engine: b catches up first, then they alternate.
    given = allocate(6, [a1, a2, b1], {"a": 2})
    assert given == {"b1": 4, "a1": 2}
    # Within a campaign the oldest run goes first (it finishes, and is finished, sooner).
    assert "a2" not in given


def test_share_limit_caps_a_campaign_over_all_its_runs() -> None:
    a1 = _entry("a1", 1, 10, share="a", limit=3)
    a2 = _entry("a2", 2, 10, share="a", limit=3)
    b1 = _entry("b1", 3, 1, share="b")
    given = allocate(10, [a1, a2, b1], {"a": 1})
    assert given == {"a1": 2, "b1": 1}  # a: 1 in the engine + 2 = its limit of 3


def test_a_run_takes_no_more_than_its_ready_jobs_and_no_room_gives_nothing() -> None:
    a1 = _entry("a1", 1, 1)
    a2 = _entry("a2", 2, 0)
    assert allocate(5, [a1, a2], {}) == {"a1": 1}
    assert allocate(0, [a1, a2], {}) == {}


def _one_slot_at_a_time(
    room: int, entries: list[_Entry], share_jobs: dict[Hashable, int]
) -> dict[Hashable, int]:
    """The rule as the module states it: each slot, in turn, to the best run."""
    given: dict[Hashable, int] = {}
    jobs = dict(share_jobs)
    for _ in range(room):
        ranked = [
            ((tuple(-p for p in e.run.priority), jobs.get(e.run.share, 0), e.seq), e)
            for e in entries
            if given.get(e.run.key, 0) < e.scheduler.n_ready
            and (e.run.share_limit is None or jobs.get(e.run.share, 0) < e.run.share_limit)
        ]
        if not ranked:
            break
        best = min(ranked, key=lambda pair: pair[0])[1]
        given[best.run.key] = given.get(best.run.key, 0) + 1
        jobs[best.run.share] = jobs.get(best.run.share, 0) + 1
    return given


def test_many_runs_get_the_slots_the_rule_gives_them() -> None:
    rng = random.Random(13)
    for _ in range(300):
        limits = {share: rng.choice([None, 2, 5, 40]) for share in "abcd"}
        entries = [
            _entry(
                f"r{i}",
                i,
                rng.randint(0, 30),
                share=(share := rng.choice("abcd")),
                priority=(rng.randint(0, 2), rng.randint(0, 1)),
                limit=limits[share],
            )
            for i in rng.sample(range(1, 200), rng.randint(1, 40))
        ]
        in_engine = {share: rng.randint(0, 6) for share in "abcd" if rng.random() < 0.7}
        room = rng.randint(0, 120)
        assert allocate(room, entries, in_engine) == _one_slot_at_a_time(room, entries, in_engine)
