"""Campaign list filters and pages, a campaign's groups, and its failures grouped by
error signature, on the world of real campaign runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from readworld import ReadWorld

from skybatch.errors import InputError
from skybatch.read import campaigns, failures

pytestmark = pytest.mark.slow


def test_campaign_list_filters_by_state_and_pages(world: ReadWorld) -> None:
    with world.session() as session:
        failed = campaigns.list_campaigns(session, states=["failed"])
        active = campaigns.list_campaigns(session, states=["running", "paused"])
        second = campaigns.list_campaigns(session, offset=1, limit=1)
        first = campaigns.list_campaigns(session, limit=1)
    assert [c.id for c in failed] == [world.oom_id] and failed[0].groups == {"failed": 1}
    assert active == []
    assert [c.id for c in first] == [world.demo_id] and first[0].groups == {"succeeded": 4}
    assert [c.id for c in second] == [world.oom_id]


def test_groups_in_step_order_filtered_and_paged(world: ReadWorld) -> None:
    with world.session() as session:
        groups = campaigns.list_groups(session, world.demo_id)
        step2 = campaigns.list_groups(session, world.demo_id, step="step2")
        page = campaigns.list_groups(session, world.demo_id, offset=1, limit=2)
        failed = campaigns.list_groups(session, world.oom_id, states=["failed"])
        none = campaigns.list_groups(session, world.demo_id, states=["failed"])
        report = campaigns.campaign_report(session, world.demo_id)
        with pytest.raises(InputError):
            campaigns.list_groups(session, 99)
    assert [(g.step, g.name) for g in groups] == [
        ("step1", "visit_1000"),
        ("step1", "visit_1001"),
        ("step1", "visit_1002"),
        ("step2", "all"),
    ]
    assert [g.run for g in groups] == [g.run for s in report.steps for g in s.groups]
    assert all(g.state == "succeeded" and g.attempts == 1 for g in groups)
    assert all(g.started and g.finished and g.started <= g.finished for g in groups)
    assert step2 == groups[3:] and page == groups[1:3] and none == []
    assert [(g.name, g.state) for g in failed] == [("visit_1000", "failed")]


@pytest.mark.parametrize(
    ("error", "signature"),
    [
        (
            "calibrate-visit1000-det0 reached a peak RSS of 228 MB (with its children), "
            "over its memory limit of 60 MB; killed\nmore",
            "calibrate-visit<n>-det<n> reached a peak RSS of <n> MB (with its children), "
            "over its memory limit of <n> MB; killed",
        ),
        (
            "FileNotFoundError: /data/repo/a/b_1.fits (dataset 0190d2a4-7c1e-7f4e-a438-1179e01e"
            "6384, md5 9e107d9d372bb6826bd81d3542a419d6)",
            "FileNotFoundError: <path> (dataset <id>, md<n> <hex>)",  # every digit run
        ),
        ("  \n", "(no error recorded)"),
        (None, "(no error recorded)"),
    ],
)
def test_error_signature_masks_what_differs_between_jobs(error: str | None, signature: str) -> None:
    assert failures.error_signature(error) == signature


def test_failures_of_one_cause_are_one_signature(world: ReadWorld) -> None:
    with world.session() as session:
        (oom,) = failures.failure_signatures(session, world.oom_id)
        assert failures.failure_signatures(session, world.oom_id, step="nope") == []
        assert failures.failure_signatures(session, world.demo_id) == []
        report = campaigns.campaign_report(session, world.oom_id)
    # Both detectors of the visit ran out of memory: one cause, one action.
    assert (oom.failure, oom.count, oom.tasks, oom.steps) == (
        "out_of_memory",
        2,
        ["calibrate"],
        ["step1"],
    )
    assert "memory limit of <n> MB" in oom.signature
    assert oom.examples == report.failures
