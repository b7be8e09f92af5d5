"""The repository functions of skybatch.read on a state database of real campaign runs
(the demo campaign, succeeded; a campaign whose calibrate ran out of memory), on SQLite
and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from readworld import ReadWorld
from sqlalchemy import func, select

from skybatch.backbone.models import FileRow, ReplicaRow
from skybatch.campaign.models import CampaignGroupRow
from skybatch.errors import InputError
from skybatch.read import backbone, campaigns, runs
from skybatch.run.models import JobRow, RunRow

pytestmark = pytest.mark.slow


def _visits(data_ids: list[dict[str, object]]) -> list[int]:
    return [int(str(d["visit"])) for d in data_ids]


def test_campaign_list_has_both_campaigns_with_their_groups_per_state(world: ReadWorld) -> None:
    with world.session() as session:
        listed = campaigns.list_campaigns(session)
    assert [(c.id, c.name, c.state) for c in listed] == [
        (world.demo_id, "demo-drp", "succeeded"),
        (world.oom_id, "oom", "failed"),
    ]
    demo, oom = listed
    assert demo.groups == {"succeeded": 4}  # 3 visits in step 1, one coadd group in step 2
    assert oom.groups == {"failed": 1}
    assert demo.finished is not None and demo.finished >= demo.created
    assert demo.created.tzinfo is not None  # UTC on both backends


def test_status_holds_the_selection_as_data(world: ReadWorld) -> None:
    with world.session() as session:
        status = campaigns.campaign_status(session, world.demo_id)
        n_jobs = session.scalar(
            select(func.count())
            .select_from(JobRow)
            .join(RunRow, RunRow.id == JobRow.run_id)
            .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
            .where(CampaignGroupRow.campaign_id == world.demo_id)
        )
        (query,) = session.scalars(
            select(CampaignGroupRow.data_query).where(
                CampaignGroupRow.campaign_id == world.demo_id,
                CampaignGroupRow.name == "all",
            )
        )
    step1, step2 = status.steps
    assert (step1.state, step2.state) == ("succeeded", "succeeded")
    assert step1.selection is None and step1.groups == {"succeeded": 3}
    assert sum(step1.jobs.values()) + sum(step2.jobs.values()) == n_jobs
    assert set(step1.jobs) == set(step2.jobs) == {"succeeded"}
    selection = step2.selection
    assert selection is not None
    condition = selection.condition
    assert (condition.from_step, condition.dataset_type, condition.match) == (
        "step1",
        "visitSummary",
        "all",
    )
    assert condition.where.startswith("psf_fwhm_arcsec < ")
    kept, dropped = _visits(selection.kept), _visits(selection.dropped)
    assert kept and dropped and sorted(kept + dropped) == [1000, 1001, 1002]
    # The kept visits are the ones the step's group ran over.
    found = re.search(r"visit IN \(([\d, ]+)\)\)$", query)
    assert found and [int(v) for v in found.group(1).split(", ")] == kept
    assert selection.describe().endswith(
        f"(all rows): kept {', '.join(f'visit={v}' for v in kept)}; "
        f"dropped {', '.join(f'visit={v}' for v in dropped)}"
    )
    assert len(status.provenance) == 3
    cleanup = status.cleanup
    assert cleanup is not None
    assert cleanup.targets == ["site_cache", "workdirs"]
    assert (cleanup.evicted or 0) > 0 and cleanup.workdirs_removed == 4
    assert cleanup.intermediates_removed is None  # not a target of the demo campaign


def test_report_of_a_failed_campaign_names_the_held_jobs_and_what_to_do(
    world: ReadWorld,
) -> None:
    with world.session() as session:
        report = campaigns.campaign_report(session, world.oom_id)
    assert report.state == "failed" and report.failures_total == 2
    (step,) = report.steps
    (group,) = step.groups
    assert (group.name, group.state) == ("visit_1000", "failed")
    assert group.tasks is not None  # a failed group lists its tasks
    assert group.tasks["isr"].succeeded == group.tasks["isr"].expected == 2
    # An out-of-memory kill leaves no job report, so no quantum of calibrate is recorded.
    assert (group.tasks["calibrate"].expected, group.tasks["calibrate"].succeeded) == (2, 0)
    assert report.tasks["isr"].cpu_hours > 0
    for failure in report.failures:
        assert (failure.step, failure.group, failure.run) == ("step1", "visit_1000", group.run)
        assert (failure.label, failure.state, failure.failure) == (
            "calibrate",
            "held",
            "out_of_memory",
        )
        assert failure.attempts == 2 and failure.memory_mb == 60
        assert failure.error and "memory limit of 60 MB" in failure.error
    assert report.total.expected == sum(t.expected for t in report.tasks.values())


def test_report_of_a_succeeded_campaign_sums_groups_into_steps(world: ReadWorld) -> None:
    with world.session() as session:
        report = campaigns.campaign_report(session, world.demo_id)
    assert report.failures == [] and report.failures_total == 0
    for step in report.steps:
        assert all(g.tasks is None for g in step.groups)  # succeeded: counted in the step
        assert step.total.succeeded == sum(g.total.succeeded for g in step.groups) > 0
        assert step.total.expected == step.total.succeeded
    assert report.steps[1].selection is not None
    assert list(report.tasks) == ["isr", "calibrate", "visitSummary", "coadd"]


def test_history_in_order_with_limit(world: ReadWorld) -> None:
    with world.session() as session:
        events = campaigns.campaign_history(session, world.oom_id)
        newest = campaigns.campaign_history(session, world.oom_id, limit=2)
    first = events[0]
    assert (first.kind, first.what, first.from_state, first.to_state) == (
        "campaign",
        "oom",
        None,
        "waiting",
    )
    assert events[-1].kind == "campaign" and events[-1].to_state == "failed"
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert newest == events[-2:]


def test_unknown_ids_are_input_errors(world: ReadWorld) -> None:
    with world.session() as session:
        with pytest.raises(InputError, match="99"):
            campaigns.campaign_report(session, 99)
        with pytest.raises(InputError, match="no run named 'nope'") as raised:
            runs.run_report(session, "nope")
        assert "oom/" in str(raised.value.hint)  # the newest runs are named
        with pytest.raises(InputError, match="no file"):
            backbone.file_provenance(session, "no/such/file.fits")
        with pytest.raises(InputError, match="cannot group usage by 'size'"):
            backbone.endpoint_usage(session, "size")


def _oom_run(world: ReadWorld) -> str:
    with world.session() as session:
        (group,) = campaigns.campaign_report(session, world.oom_id).steps[0].groups
    return group.run


def test_run_report_and_jobs_of_the_failed_group(world: ReadWorld) -> None:
    run = _oom_run(world)
    with world.session() as session:
        listed = runs.list_runs(session)
        report = runs.run_report(session, run)
        held = runs.list_jobs(session, run, states=["held"])
        every = runs.list_jobs(session, run)
        page = runs.list_jobs(session, run, offset=1, limit=2)
        calibrate = runs.list_jobs(session, run, label="calibrate", failure="out_of_memory")
    assert listed[-1].run == run and listed[-1].state == "failed"
    assert len(listed) == 5  # four demo groups and the failed one
    assert report.state == "failed"
    assert report.tasks["calibrate"].succeeded == 0
    assert report.tasks["isr"].succeeded == report.tasks["isr"].expected == 2
    assert report.tasks["visitSummary"].blocked == 1  # never ran: calibrate is held
    assert sum(report.jobs.values()) == len(every)
    assert [f.job for f in report.failures] == [j.name for j in held]
    assert all(f.step is None and f.run == run for f in report.failures)
    assert [j.label for j in held] == ["calibrate", "calibrate"] and held == calibrate
    assert all(j.error and "memory limit" in j.error for j in held)
    assert page == every[1:3]


def test_endpoints_and_usage_count_the_catalog(world: ReadWorld) -> None:
    with world.session() as session:
        endpoints = backbone.list_endpoints(session)
        by_endpoint = backbone.endpoint_usage(session)
        by_run = backbone.endpoint_usage(session, "run")
        n_replicas = session.scalar(select(func.count()).select_from(ReplicaRow))
        total_bytes = session.scalar(
            select(func.sum(FileRow.size_bytes)).join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
        )
    assert {e.name for e in endpoints.endpoints} >= {"archive", "site:local"}
    assert sum(r.files for r in by_endpoint.rows) == n_replicas
    assert sum(r.bytes for r in by_endpoint.rows) == total_bytes
    assert all(r.key is None for r in by_endpoint.rows)
    assert sum(r.files for r in by_run.rows) == n_replicas
    assert _oom_run(world) in {r.key for r in by_run.rows}
    held = {
        (e.name, state): (count.files, count.bytes)
        for e in endpoints.endpoints
        for state, count in e.replicas.items()
    }
    assert held == {(r.endpoint, r.state): (r.files, r.bytes) for r in by_endpoint.rows}


def test_locate_lists_every_replica_of_the_selected_files(world: ReadWorld) -> None:
    run = _oom_run(world)
    with world.session() as session:
        ids = list(session.scalars(select(FileRow.id).where(FileRow.run == run)))
        n_replicas = session.scalar(
            select(func.count()).select_from(ReplicaRow).where(ReplicaRow.file_id.in_(ids))
        )
        located = backbone.locate(session, [*reversed(ids), ids[0], 10**9])
    assert ids and [f.id for f in located.files] == list(reversed(ids))  # unknown id skipped
    assert sum(len(f.replicas) for f in located.files) == n_replicas
    assert all(f.run == run for f in located.files)
    for f in located.files:
        assert [r.endpoint for r in f.replicas] == sorted(r.endpoint for r in f.replicas)
        assert all(r.state == "online" for r in f.replicas)


def test_provenance_of_a_coadd_names_its_quantum_and_the_kept_visits(world: ReadWorld) -> None:
    with world.session() as session:
        report = campaigns.campaign_report(session, world.demo_id)
        step2 = report.steps[1]
        assert step2.selection is not None
        (group,) = step2.groups
        coadd = session.scalars(
            select(FileRow).where(FileRow.run == group.run, FileRow.dataset_type == "deepCoadd")
        ).first()
        assert coadd is not None
        by_id = backbone.file_provenance(session, coadd.id)
        by_path = backbone.file_provenance(session, coadd.path)
    assert by_id == by_path
    assert by_id.file.path == coadd.path and by_id.file.data_id == coadd.data_id
    (quantum,) = by_id.generated_by
    assert quantum.kind == "quantum" and quantum.info["task_label"] == "coadd"
    calexps = [f for f in by_id.inputs if f.dataset_type == "calexp"]
    assert calexps
    visits = {int(str((f.data_id or {})["visit"])) for f in calexps}
    assert visits <= set(_visits(step2.selection.kept))
    assert not visits & set(_visits(step2.selection.dropped))
